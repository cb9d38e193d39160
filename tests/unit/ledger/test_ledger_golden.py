"""The ledger's golden vector (docs/ledger.md, "Golden vector"): records -> canonical
lines -> hashes, and an entry -> its signature with a fixed key.

The expected bytes are written out here and in the docs, not computed by the code
under test: another implementation checks itself against the same text. The
test runs in the no-numba subprocess too (tests/integration/test_without_numba.py),
so the canonical form is the same whichever way the core runs.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from agent.contract import MessageKind, parse_topic
from agent.ledger import entry as le
from agent.ledger import jcs
from agent.ledger.canonical import Group, digest, group_of, lines_of
from agent.runtime.ledger import HISTORY_KINDS

END = 1_750_003_200_000

#: (topic, payload as published)
RECORDS = [
    (
        "energy/v1/plant-a/gw-01/press-1/energy",
        '{"ts": 1750003140000, "interval_s": 60, "carrier": "electricity", "energy_kwh": 0.321,'
        ' "co2_kg": 0.1830663, "avg_power_kw": 19.26, "ef_kg_per_kwh": 0.5703,'
        ' "quality": "measured", "unmetered_kwh": 0.01}',
    ),
    (
        "energy/v1/plant-a/gw-01/boiler/energy",
        '{"ts": 1750003200000, "interval_s": 60, "carrier": "natural_gas", "energy_kwh": 1.081,'
        ' "co2_kg": 0.2162, "avg_power_kw": 64.86, "ef_kg_per_kwh": 0.2,'
        ' "quality": "interpolated", "volume_m3": 0.1}',
    ),
    (
        "energy/v1/plant-a/gw-01/intensity",
        '{"ts": 1750003200000, "windows": {"1m": {"energy_kwh": 1.402, "co2_kg": 0.399,'
        ' "output_units": 0.0, "kwh_per_unit": null, "kgco2_per_unit": null,'
        ' "intensity_g_per_kwh": 284.593437946, "tce": 0.00017}, "15m": {"energy_kwh": 20.0,'
        ' "co2_kg": 11.406, "output_units": 30.0, "kwh_per_unit": 0.666666667,'
        ' "kgco2_per_unit": 0.3802, "intensity_g_per_kwh": 570.3, "tce": 0.002458}}}',
    ),
]

ENERGY_LINES = [
    '{"avg_power_kw":64.86,"carrier":"natural_gas","co2_kg":0.2162,"device":"boiler",'
    '"ef_kg_per_kwh":0.2,"energy_kwh":1.081,"gateway":"gw-01","interval_s":60,"kind":"energy",'
    '"quality":"interpolated","site":"plant-a","ts":1750003200000,"volume_m3":0.1}',
    '{"avg_power_kw":19.26,"carrier":"electricity","co2_kg":0.1830663,"device":"press-1",'
    '"ef_kg_per_kwh":0.5703,"energy_kwh":0.321,"gateway":"gw-01","interval_s":60,'
    '"kind":"energy","quality":"measured","site":"plant-a","ts":1750003140000,'
    '"unmetered_kwh":0.01}',
]
SITE_LINES = [
    '{"co2_kg":0.399,"energy_kwh":1.402,"gateway":"gw-01","intensity_g_per_kwh":284.593437946,'
    '"kind":"intensity","output_units":0,"site":"plant-a","tce":0.00017,"ts":1750003200000,'
    '"window":"1m"}',
    '{"co2_kg":11.406,"energy_kwh":20,"gateway":"gw-01","intensity_g_per_kwh":570.3,'
    '"kgco2_per_unit":0.3802,"kind":"intensity","kwh_per_unit":0.666666667,"output_units":30,'
    '"site":"plant-a","tce":0.002458,"ts":1750003200000,"window":"15m"}',
]
ENERGY_HASH = "d799dbe713354b4c94ab49a60bd32af786804e063652bdb926e8241b687c2709"
SITE_HASH = "d2e3ef999353dc19e4d46b739c34bde5b93bb3f747a8956fcfdab3471dc101e5"

#: The test key: Ed25519 seed bytes 0x00, 0x01, ..., 0x1f.
SEED = bytes(range(32))
PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
KEY_ID = "56475aa75463474c"
ENTRY = (
    '{"certs":[],"covers":[{"end":1750003200000,"energy":{"hash":"' + ENERGY_HASH + '",'
    '"records":2},"site":{"hash":"' + SITE_HASH + '","records":2},"start":1749999600000}],'
    '"gateway":"gw-01","key":"' + PUBLIC + '","key_id":"' + KEY_ID + '",'
    '"period_end":1750003200000,"period_start":1749999600000,"prev":"' + "0" * 64 + '",'
    '"sealed_ms":1750003350000,"seq":1,'
    '"sig":"shQ3pnlM149Fp2i6Bosr1S/T36c0P4LvcY5p+eederHIwFbtn/YZoYvucM9dGq7kDuPp/ZU9oqh3DfVLBAhUAg==",'
    '"site":"plant-a","version":1}'
)
ENTRY_HASH = "c64b9b00fc5efd0cad808d6950e12d84012e03a0d14ea68d5264850b904c9a20"


def test_records_become_these_lines_and_hashes() -> None:
    lines = {g: [] for g in Group}  # type: ignore[var-annotated]
    for topic, payload in RECORDS:
        group = Group.ENERGY if topic.endswith("/energy") else Group.SITE
        lines[group] += lines_of(parse_topic(topic), json.loads(payload))
    assert [line.text for line in sorted(lines[Group.ENERGY])] == ENERGY_LINES
    assert [line.text for line in sorted(lines[Group.SITE])] == SITE_LINES
    assert digest(lines[Group.ENERGY]).hash == ENERGY_HASH
    assert digest(lines[Group.SITE]).hash == SITE_HASH
    # The definition, by hand: each line and "\n", SHA-256, lowercase hex.
    by_hand = hashlib.sha256("".join(t + "\n" for t in ENERGY_LINES).encode()).hexdigest()
    assert by_hand == ENERGY_HASH
    assert digest([]).hash == hashlib.sha256(b"").hexdigest()


def test_the_entry_is_these_bytes_signed_by_the_test_key() -> None:
    pytest.importorskip("cryptography")
    from agent.ledger.keys import PublicKey, SigningKey

    key = SigningKey.from_seed(SEED)
    assert key.public.b64 == PUBLIC and key.public.key_id == KEY_ID
    cover = {
        "start": END - 3_600_000,
        "end": END,
        "energy": {"records": 2, "hash": ENERGY_HASH},
        "site": {"records": 2, "hash": SITE_HASH},
    }
    entry = le.build(
        site="plant-a",
        gateway="gw-01",
        seq=1,
        period_start=END - 3_600_000,
        period_end=END,
        covers=[cover],
        prev=le.GENESIS_PREV,
        key=key,
        certs=[],
        sealed_ms=END + 150_000,
    )
    assert jcs.canonical(entry).decode() == ENTRY
    assert le.entry_hash(entry) == ENTRY_HASH
    parsed = json.loads(ENTRY)
    assert PublicKey.from_b64(PUBLIC).verify(parsed["sig"], le.signed_bytes(parsed))
    parsed["covers"][0]["energy"]["records"] = 3
    assert not PublicKey.from_b64(PUBLIC).verify(parsed["sig"], le.signed_bytes(parsed))


def test_what_is_sealed_energy_apart_site_records_and_never_alarms_or_statuses() -> None:
    """docs/ledger.md, "records": an alarm is what the gateway noticed, not a record."""
    assert {k: group_of(k) for k in MessageKind} == {
        MessageKind.GATEWAY_STATUS: None,
        MessageKind.DEVICE_STATUS: None,
        MessageKind.MEASUREMENTS: None,
        MessageKind.ENERGY: Group.ENERGY,
        MessageKind.INTENSITY: Group.SITE,
        MessageKind.EVENTS: Group.SITE,
        MessageKind.LEDGER: None,
        MessageKind.ALARM: None,
    }
    assert MessageKind.ALARM not in HISTORY_KINDS
