"""The sealer and offline verification on a real history: periods, late records, crashes,
key rotation, and every kind of tampering found with its reason.

The History and Sealer are the ones `run` uses (tests/support/ledger_gateway.py),
on a clock the test sets; verification is :func:`agent.ledger.verify.verify`,
what `energy-agent verify` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")

from agent.ledger import entry as le
from agent.ledger import keys
from agent.ledger.entry import Keyring, Reason
from agent.ledger.sealer import MAX_PER_CALL
from agent.ledger.verify import RecordIn, Result, verify
from tests.support.ledger_gateway import LedgerGateway, energy, entry_of, intensity

MIN = 60_000
T0 = 1_750_000_000_000 // (60 * MIN) * (60 * MIN)  # a whole hour
DELAY = 10_000


def records(gw: LedgerGateway, *, pending_after: int | None = None) -> list[RecordIn]:
    last = gw.history.reader.last_entry()
    upto = last.upto if last is not None else 0
    return [
        RecordIn(r.topic, json.loads(r.payload), r.id > upto)
        for r in gw.history.reader.iter_records(0, 2**62)
    ]


def check(gw: LedgerGateway, *, entries: list[dict[str, Any]] | None = None) -> Result:
    trusted = keys.known(gw.state_dir)
    return verify(
        gw.entries() if entries is None else entries,
        records(gw),
        Keyring(trusted),
        prefix="energy/v1",
    )


def run_periods(
    gw: LedgerGateway, first_end: int, n: int, devices: tuple[str, ...] = ("m1", "m2")
) -> None:
    """``n`` one-minute periods ending at first_end, first_end + 1 min, ...: a record per
    device and an intensity record each, sealed after the delay."""
    for k in range(n):
        end = first_end + k * MIN
        gw.publish(
            *(energy(gw.topics, d, end, 0.1 + k / 1000 + i / 100) for i, d in enumerate(devices))
        )
        gw.publish(intensity(gw.topics, end, 0.2))
        gw.seal(end + DELAY)


@pytest.fixture
def gw(tmp_path: Path) -> LedgerGateway:
    g = LedgerGateway(tmp_path / "state")
    g.start(T0 + 5_000)
    yield g  # type: ignore[misc]
    g.close()


def test_the_chain_begins_with_a_genesis_carrying_the_key(gw: LedgerGateway) -> None:
    (genesis,) = gw.entries()
    assert genesis["seq"] == 0 and genesis["prev"] == "0" * 64 and genesis["covers"] == []
    assert genesis["period_start"] == genesis["period_end"] == T0
    assert genesis["key"] == keys.known(gw.state_dir)[0].b64


def test_one_entry_per_period_covering_its_records(gw: LedgerGateway) -> None:
    assert not gw.sealer.due(T0 + MIN + DELAY - 1)
    run_periods(gw, T0 + MIN, 3)
    entries = gw.entries()
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    for k, e in enumerate(entries[1:]):
        assert (e["period_start"], e["period_end"]) == (T0 + k * MIN, T0 + (k + 1) * MIN)
        (cover,) = e["covers"]
        assert cover["energy"]["records"] == 2  # m1 and m2
        assert cover["site"]["records"] == 2  # the intensity record's two windows
        assert e["prev"] == le.entry_hash(entries[k])
    result = check(gw)
    assert result.ok, result.broken
    assert (result.entries, result.periods, result.records) == (4, 3, 12)


def test_a_late_record_makes_the_next_entry_cover_its_period_again(gw: LedgerGateway) -> None:
    run_periods(gw, T0 + MIN, 2, devices=("m1",))
    # m2 comes back from an outage and closes its interval of the first period late.
    gw.publish(energy(gw.topics, "m2", T0 + MIN, 0.5))
    gw.publish(energy(gw.topics, "m1", T0 + 3 * MIN, 0.3))
    (sealed,) = gw.seal(T0 + 3 * MIN + DELAY)
    e = entry_of(sealed)
    assert [(c["start"], c["energy"]["records"]) for c in e["covers"]] == [
        (T0, 2),  # the first period again, with m2's record
        (T0 + 2 * MIN, 1),  # the entry's own period
    ]
    assert check(gw).ok
    # The old cover (1 record) no longer describes the period: only the newest counts.
    entries = gw.entries()
    assert entries[1]["covers"][0]["energy"]["records"] == 1


def test_a_record_the_core_emitted_again_replaces_the_old_and_is_covered_again(
    gw: LedgerGateway,
) -> None:
    run_periods(gw, T0 + MIN, 2)
    gw.publish(energy(gw.topics, "m1", T0 + MIN, 0.777, quality="interpolated"))
    assert gw.history.replaced == 1
    gw.seal(T0 + 3 * MIN + DELAY)
    assert [c["start"] for c in gw.entries()[-1]["covers"]] == [T0, T0 + 2 * MIN]
    assert check(gw).ok


def test_records_published_after_the_last_entry_are_pending_not_broken(
    gw: LedgerGateway,
) -> None:
    run_periods(gw, T0 + MIN, 2)
    gw.publish(energy(gw.topics, "m2", T0 + MIN, 0.5, quality="interpolated"))  # late, unsealed
    gw.publish(energy(gw.topics, "m1", T0 + 3 * MIN, 0.5))  # the open period
    result = check(gw)
    assert result.ok, result.broken
    assert result.pending == 2 and result.periods == 1  # the first period waits for its cover


def test_an_entry_stored_but_not_queued_is_queued_again_with_the_same_bytes(
    tmp_path: Path,
) -> None:
    """A crash between the history's commit and the outbox: the next start queues the
    stored entry again; it is never sealed a second time with other content."""
    g = LedgerGateway(tmp_path / "state")
    g.start(T0 + 5_000)
    g.history.mark_queued([0])
    g.publish(energy(g.topics, "m1", T0 + MIN, 0.1))
    (sealed,) = g.seal(T0 + MIN + DELAY)  # stored, then "killed" before it was queued
    g.close()
    again = LedgerGateway(tmp_path / "state")
    requeued = again.start(T0 + MIN + DELAY + 3_000)
    assert [s.payload for s in requeued] == [sealed.payload]
    again.history.mark_queued([s.seq for s in requeued])
    assert again.sealer.next_end() == T0 + 2 * MIN
    again.close()
    third = LedgerGateway(tmp_path / "state")
    assert third.start(T0 + MIN + DELAY + 6_000) == []
    third.close()


def test_after_a_start_sealing_waits_the_delay_then_catches_up(tmp_path: Path) -> None:
    g = LedgerGateway(tmp_path / "state")
    g.start(T0 + 5_000)
    g.close()
    g = LedgerGateway(tmp_path / "state")
    now = T0 + 300 * MIN
    g.start(now)
    assert not g.sealer.due(now + DELAY - 1)  # the core re-derives the downtime first
    calls = []
    while sealed := g.seal(now + DELAY):
        calls.append(len(sealed))
    assert calls == [MAX_PER_CALL, MAX_PER_CALL, 300 - 2 * MAX_PER_CALL]
    assert [e["seq"] for e in g.entries()] == list(range(301))
    g.close()


def test_a_changed_period_length_gives_one_shorter_entry_then_the_new_length(
    tmp_path: Path,
) -> None:
    g = LedgerGateway(tmp_path / "state")
    g.start(T0 + 5_000)
    run_periods(g, T0 + MIN, 2)
    g.close()
    g = LedgerGateway(tmp_path / "state", period_s=300)
    g.start(T0 + 2 * MIN + DELAY)
    g.publish(energy(g.topics, "m1", T0 + 5 * MIN, 0.5))
    g.seal(T0 + 10 * MIN + DELAY)
    spans = [(e["period_start"], e["period_end"]) for e in g.entries()[3:]]
    assert spans == [(T0 + 2 * MIN, T0 + 5 * MIN), (T0 + 5 * MIN, T0 + 10 * MIN)]
    assert check(g).ok
    g.close()


# --- keys --------------------------------------------------------------------------------


def test_a_rotated_key_is_announced_by_the_old_one_and_followed(gw: LedgerGateway) -> None:
    old = keys.known(gw.state_dir)[0]
    run_periods(gw, T0 + MIN, 1)
    new = keys.rotate(gw.state_dir)
    run_periods(gw, T0 + 2 * MIN, 3)
    e = gw.entries()
    assert e[2]["next_key"]["key_id"] == new.public.key_id
    assert e[2]["key_id"] == old.key_id  # announced with the old key
    assert e[3]["key_id"] == new.public.key_id and e[4]["key_id"] == new.public.key_id
    assert [c["key_id"] for c in e[4]["certs"]] == [new.public.key_id]
    assert not (gw.state_dir / keys.NEXT_FILE).exists()
    # verify follows the rotation from the old key alone...
    assert verify(e, records(gw), Keyring([old]), prefix="energy/v1").ok
    # ...and a verifier that sees one later entry only (a bridge in a group) too.
    assert Keyring([old]).check(e[4]) is None


def test_the_old_key_signing_after_its_rotation_is_refused(gw: LedgerGateway) -> None:
    old_key = keys.load(gw.state_dir / keys.KEY_FILE)
    keys.rotate(gw.state_dir)
    run_periods(gw, T0 + MIN, 2)
    e = gw.entries()
    forged = {k: v for k, v in e[2].items() if k not in ("sig",)}
    forged |= {"key": old_key.public.b64, "key_id": old_key.public.key_id}
    forged["sig"] = old_key.sign(le.signed_bytes(forged))
    result = verify([*e[:2], forged], records(gw), Keyring([old_key.public]), prefix="energy/v1")
    assert result.first().failure.reason is Reason.KEY_ROTATION_INVALID


def test_a_key_replaced_without_rotation_must_be_trusted_explicitly(gw: LedgerGateway) -> None:
    old = keys.known(gw.state_dir)[0]
    run_periods(gw, T0 + MIN, 1)
    gw.close()
    keys.init(gw.state_dir, force=True)
    g = LedgerGateway(gw.state_dir)
    g.start(T0 + MIN + DELAY + 1000)
    run_periods(g, T0 + 2 * MIN, 1)
    e = g.entries()
    assert e[2]["prev"] == le.entry_hash(e[1])  # the chain continues, seq without gap
    result = verify(e, records(g), Keyring([old]), prefix="energy/v1")
    broken = result.first()
    assert broken.seq == 2 and broken.failure.reason is Reason.SIGNATURE_WRONG
    assert check(g).ok  # with both keys of ledger-keys.pub
    g.close()


# --- tampering ---------------------------------------------------------------------------


@pytest.fixture
def sealed(gw: LedgerGateway) -> LedgerGateway:
    run_periods(gw, T0 + MIN, 5)
    assert check(gw).ok
    return gw


def reason_of(result: Result) -> Reason:
    assert not result.ok
    return result.first().failure.reason


def test_a_record_changed_by_a_thousandth_is_found(sealed: LedgerGateway) -> None:
    recs = records(sealed)
    i = next(
        i
        for i, r in enumerate(recs)
        if r.topic.endswith("/m2/energy") and r.payload["ts"] == T0 + 3 * MIN
    )
    p = dict(recs[i].payload, energy_kwh=round(recs[i].payload["energy_kwh"] + 0.001, 9))
    recs[i] = RecordIn(recs[i].topic, p)
    result = verify(
        sealed.entries(), recs, Keyring(keys.known(sealed.state_dir)), prefix="energy/v1"
    )
    assert reason_of(result) is Reason.RECORD_CHANGED
    assert result.first().start == T0 + 2 * MIN and result.first().seq == 3


def test_a_record_deleted_or_added_is_found(sealed: LedgerGateway) -> None:
    recs = records(sealed)
    trust = Keyring(keys.known(sealed.state_dir))
    fewer = [
        r for r in recs if not (r.topic.endswith("/m1/energy") and r.payload["ts"] == T0 + 2 * MIN)
    ]
    assert (
        reason_of(verify(sealed.entries(), fewer, trust, prefix="energy/v1"))
        is Reason.RECORD_MISSING
    )
    stray = energy(sealed.topics, "m9", T0 + 2 * MIN, 1.0)
    extra = [*recs, RecordIn(stray.topic, stray.payload)]
    trust = Keyring(keys.known(sealed.state_dir))
    assert (
        reason_of(verify(sealed.entries(), extra, trust, prefix="energy/v1")) is Reason.EXTRA_RECORD
    )


def test_an_intensity_revision_changed_is_found_in_the_site_hash(sealed: LedgerGateway) -> None:
    recs = records(sealed)
    i = next(i for i, r in enumerate(recs) if r.topic.endswith("/intensity"))
    p = json.loads(json.dumps(recs[i].payload))
    p["windows"]["1m"]["co2_kg"] += 0.001
    recs[i] = RecordIn(recs[i].topic, p)
    result = verify(
        sealed.entries(), recs, Keyring(keys.known(sealed.state_dir)), prefix="energy/v1"
    )
    assert reason_of(result) is Reason.RECORD_CHANGED
    assert "site records" in str(result.first())


def test_entries_removed_swapped_resigned_or_changed_are_found(sealed: LedgerGateway) -> None:
    e = sealed.entries()
    recs = records(sealed)

    def first(entries: list[dict[str, Any]]) -> Reason:
        trust = Keyring(keys.known(sealed.state_dir))
        return reason_of(verify(entries, recs, trust, prefix="energy/v1"))

    assert first([*e[:2], *e[3:]]) is Reason.ENTRY_MISSING
    assert first([*e[:2], e[3], e[2], *e[4:]]) is Reason.CHAIN_BROKEN
    other = keys.SigningKey.generate()
    body = {k: v for k, v in e[2].items() if k != "sig"}
    body |= {"key": other.public.b64, "key_id": other.public.key_id}
    assert first([*e[:2], {**body, "sig": other.sign(le.signed_bytes(body))}, *e[3:]]) is (
        Reason.SIGNATURE_WRONG
    )
    changed = json.loads(json.dumps(e[2]))
    changed["covers"][0]["energy"]["records"] = 3  # the signature no longer holds
    assert first([*e[:2], changed, *e[3:]]) is Reason.SIGNATURE_WRONG
    # Re-signed with the gateway's own key (a thief of the key) but out of the chain:
    key = keys.load(sealed.state_dir / keys.KEY_FILE)
    body = {k: v for k, v in e[3].items() if k != "sig"} | {"prev": "f" * 64}
    assert first([*e[:3], {**body, "sig": key.sign(le.signed_bytes(body))}, *e[4:]]) is (
        Reason.CHAIN_BROKEN
    )
    mangled = {k: v for k, v in e[2].items() if k != "covers"}
    assert first([*e[:2], mangled, *e[3:]]) is Reason.SIGNATURE_WRONG


def test_records_are_read_once_in_time_order_and_one_out_of_order_is_named(
    sealed: LedgerGateway,
) -> None:
    """verify reads records as a stream (an export of months is never held whole): each
    period is compared when the next begins, so a record moved after a later period is
    a record the period it belongs to did not have when it was compared."""
    recs = records(sealed)
    trust = Keyring(keys.known(sealed.state_dir))
    assert verify(sealed.entries(), iter(recs), trust, prefix="energy/v1").ok
    one = next(
        r for r in recs if r.topic.endswith("/m1/energy") and r.payload["ts"] == T0 + 2 * MIN
    )
    moved = [r for r in recs if r is not one] + [one]
    result = verify(sealed.entries(), iter(moved), trust, prefix="energy/v1")
    first = result.first()
    assert first.start == T0 + MIN and first.failure.reason is Reason.RECORD_MISSING
    assert any("out of time order" in str(b) for b in result.broken)


@pytest.mark.parametrize(
    "change",
    [
        {"energy_kwh": 0.1001},  # any stored number (m1 has 0.1, 0.101, ...)
        {"co2_kg": 0.0},
        {"avg_power_kw": -1.0},
        {"ef_kg_per_kwh": 0.57},
        {"interval_s": 61},
        {"quality": "estimated"},  # a tag
        {"carrier": "gas"},
        {"export_kwh": 0.0},  # a field the record did not have
        {"energy_kwh": None},  # a field taken away
        {"ts": "later"},  # no longer a record at all
        {"ts": float("inf")},
        {"interval_s": float("inf")},  # no integer: reported, not a crash
        {"energy_kwh": 10**400},  # no double: reported, not a crash
    ],
)
def test_every_hashed_field_of_an_energy_record_is_covered(
    sealed: LedgerGateway, change: dict[str, Any]
) -> None:
    recs = records(sealed)
    i = next(i for i, r in enumerate(recs) if r.topic.endswith("/m1/energy"))
    p = {**recs[i].payload, **change}
    recs[i] = RecordIn(recs[i].topic, p)
    result = verify(
        sealed.entries(), recs, Keyring(keys.known(sealed.state_dir)), prefix="energy/v1"
    )
    assert reason_of(result) is Reason.RECORD_CHANGED
