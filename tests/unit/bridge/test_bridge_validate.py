"""The bridge's verdict on hostile and malformed messages: each rejected, with its reason."""

from __future__ import annotations

import json

import pytest

from agent.bridge.validate import Accepted, Limits, Reason, Rejected, check
from agent.contract import (
    WINDOW_RANGES,
    WINDOWS,
    Correction,
    MessageKind,
    TopicError,
    TopicRef,
    alarm_payload,
    encode,
    event_payload,
    measurements_payload,
    parse_topic,
    subscription_filters,
)
from agent.contract.plausible import TS_MIN_MS, VALUE_RANGES
from drivers.quantities import PLAUSIBLE, Quantity

NOW = 1_750_000_000_000
PREFIX = "energy/v1"
LIMITS = Limits(max_payload_bytes=256 * 1024, max_past_s=31 * 86400, max_future_s=300)
T = "energy/v1/plant-a/gw-01"
ENERGY = {
    "ts": NOW,
    "interval_s": 60,
    "carrier": "electricity",
    "energy_kwh": 1.0,
    "co2_kg": 0.57,
    "avg_power_kw": 60.0,
    "ef_kg_per_kwh": 0.57,
    "quality": "measured",
}


def energy(**changes: object) -> bytes:
    return json.dumps({**ENERGY, **changes}).encode()


def literal(field: str, text: str) -> bytes:
    return json.dumps({**ENERGY, field: 0}).replace(f'"{field}": 0', f'"{field}": {text}').encode()


MEAS = {"ts": NOW, "seq": 1, "values": {"active_power_kw": 1.0}}

HOSTILE = [
    ("tag injection via site", "energy/v1/plant,x=1/gw-01/intensity", b"{}", Reason.BAD_TOPIC),
    ("line injection via device", f"{T}/press\nenergy x=1/energy", energy(), Reason.BAD_TOPIC),
    ("space in device", f"{T}/press 1/energy", energy(), Reason.BAD_TOPIC),
    ("upper case id", f"{T}/Press-1/energy", energy(), Reason.BAD_TOPIC),
    ("id too long", f"{T}/{'a' * 65}/energy", energy(), Reason.BAD_TOPIC),
    ("empty id", "energy/v1//gw-01/intensity", b"{}", Reason.BAD_TOPIC),
    ("unknown leaf", f"{T}/press-1/voltage", b"1", Reason.BAD_TOPIC),
    ("too deep", f"{T}/press-1/x/energy", energy(), Reason.BAD_TOPIC),
    ("other prefix", "energy/v2/plant-a/gw-01/intensity", b"{}", Reason.BAD_TOPIC),
    (
        "field injection via quantity",
        f"{T}/press-1/measurements",
        json.dumps({**MEAS, "values": {"a=1,b": 1.0}}).encode(),
        Reason.INVALID,
    ),
    (
        "newline in quantity",
        f"{T}/press-1/measurements",
        json.dumps({**MEAS, "values": {"a\nb": 1.0}}).encode(),
        Reason.INVALID,
    ),
    (
        "string injection via quality",
        f"{T}/d/energy",
        energy(quality='measured" x=1'),
        Reason.INVALID,
    ),
    ("unknown carrier", f"{T}/d/energy", energy(carrier="coal,x=1"), Reason.INVALID),
    ("extra key", f"{T}/d/energy", energy(**{"energy_kwh 1": 2.0}), Reason.INVALID),
    ("NaN", f"{T}/d/energy", literal("energy_kwh", "NaN"), Reason.NOT_FINITE),
    ("Infinity", f"{T}/d/energy", literal("co2_kg", "Infinity"), Reason.NOT_FINITE),
    ("-Infinity", f"{T}/d/energy", literal("co2_kg", "-Infinity"), Reason.NOT_FINITE),
    ("1e999", f"{T}/d/energy", literal("avg_power_kw", "1e999"), Reason.NOT_FINITE),
    (
        "NaN in a measurement",
        f"{T}/d/measurements",
        b'{"ts":%d,"seq":1,"values":{"active_power_kw":NaN}}' % NOW,
        Reason.NOT_FINITE,
    ),
    ("number as string", f"{T}/d/energy", energy(energy_kwh="1.5"), Reason.INVALID),
    ("ts as string", f"{T}/d/energy", energy(ts=str(NOW)), Reason.INVALID),
    ("ts as float", f"{T}/d/energy", energy(ts=NOW + 0.5), Reason.INVALID),
    ("bool as ts", f"{T}/d/energy", energy(ts=True), Reason.INVALID),
    ("bool as number", f"{T}/d/energy", energy(energy_kwh=True), Reason.INVALID),
    ("negative ts", f"{T}/d/energy", energy(ts=-1), Reason.INVALID),
    ("null where required", f"{T}/d/energy", energy(energy_kwh=None), Reason.INVALID),
    ("missing key", f"{T}/d/energy", json.dumps({"ts": NOW}).encode(), Reason.INVALID),
    ("array payload", f"{T}/d/energy", b"[1,2]", Reason.INVALID),
    ("10 MB payload", f"{T}/d/measurements", encode(MEAS) + b" " * 10_000_000, Reason.TOO_LARGE),
    ("not JSON", f"{T}/d/measurements", b"hello", Reason.NOT_JSON),
    ("empty payload", f"{T}/d/measurements", b"", Reason.NOT_JSON),
    ("truncated JSON", f"{T}/d/measurements", encode(MEAS)[:20], Reason.NOT_JSON),
    ("two documents", f"{T}/d/measurements", encode(MEAS) * 2, Reason.NOT_JSON),
    ("not UTF-8", f"{T}/d/measurements", b"\xff\xfe\x00", Reason.NOT_JSON),
    ("future ts", f"{T}/d/energy", energy(ts=NOW + 301_000), Reason.TS_OUT_OF_WINDOW),
    ("ancient ts", f"{T}/d/energy", energy(ts=978_307_200_000), Reason.TS_OUT_OF_WINDOW),
    ("ts 0", f"{T}/d/energy", energy(ts=0), Reason.TS_OUT_OF_WINDOW),
    (
        "status shape on measurements",
        f"{T}/d/measurements",
        b'{"state":"ok","error":null,"ts":%d}' % NOW,
        Reason.INVALID,
    ),
    (
        "unknown window",
        f"{T}/intensity",
        json.dumps({"ts": NOW, "windows": {"2h": {}}}).encode(),
        Reason.INVALID,
    ),
    (
        "gateway state injection",
        f"{T}/status",
        json.dumps({"state": "online\nx", "ts": NOW, "version": "1"}).encode(),
        Reason.INVALID,
    ),
]


@pytest.mark.parametrize(
    ("case", "topic", "payload", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_messages_are_rejected_with_their_reason(
    case: str, topic: str, payload: bytes, reason: Reason
) -> None:
    verdict = check(topic, payload, LIMITS, now_ms=NOW)
    assert isinstance(verdict, Rejected), case
    assert verdict.reason is reason, verdict
    assert verdict.detail


def test_the_reason_says_what_and_where() -> None:
    v = check(f"{T}/d/energy", energy(energy_kwh="1.5"), LIMITS, now_ms=NOW)
    assert isinstance(v, Rejected)
    assert "energy_kwh" in v.detail
    v = check(f"{T}/d/energy", energy(ts=NOW + 86_400_000), LIMITS, now_ms=NOW)
    assert isinstance(v, Rejected)
    assert "86400 s in the future" in v.detail
    v = check(f"{T}/Bad/energy", energy(), LIMITS, now_ms=NOW)
    assert isinstance(v, Rejected)
    assert "device id 'Bad'" in v.detail


def test_window_edges_are_inclusive() -> None:
    assert isinstance(
        check(f"{T}/d/energy", energy(ts=NOW + 300_000), LIMITS, now_ms=NOW), Accepted
    )
    old = NOW - LIMITS.max_past_s * 1000
    assert isinstance(check(f"{T}/d/energy", energy(ts=old), LIMITS, now_ms=NOW), Accepted)


def test_a_size_limit_applies_before_anything_is_parsed() -> None:
    small = Limits(max_payload_bytes=1024)
    v = check("not/even/a/topic", b"x" * 1025, small, now_ms=NOW)
    assert isinstance(v, Rejected)
    assert v.reason is Reason.TOO_LARGE


def test_ints_are_accepted_where_floats_belong() -> None:
    v = check(f"{T}/d/energy", energy(energy_kwh=2), LIMITS, now_ms=NOW)
    assert isinstance(v, Accepted)
    assert "energy_kwh=2.0," in v.lines[0]


def test_a_good_message_of_every_kind_is_accepted() -> None:
    cases = {
        f"{T}/status": {"state": "online", "ts": NOW, "version": "1.2"},
        f"{T}/d/status": {"state": "error", "error": "timeout, unit 3", "ts": NOW},
        f"{T}/d/measurements": MEAS,
        f"{T}/d/energy": ENERGY,
        f"{T}/intensity": {"ts": NOW, "windows": {}},
        f"{T}/d/events": {
            "ts": NOW,
            "event": "reset",
            "quantity": "gas_volume_m3",
            "value": 0.0,
            "limit_per_h": 2e5,
        },
    }
    for topic, payload in cases.items():
        v = check(topic, encode(payload), LIMITS, now_ms=NOW)
        assert isinstance(v, Accepted), (topic, v)
        assert v.ts_ms == NOW


@pytest.mark.parametrize(
    ("topic", "ref"),
    [
        ("energy/v1/s/g/status", TopicRef(MessageKind.GATEWAY_STATUS, "s", "g")),
        ("energy/v1/s/g/intensity", TopicRef(MessageKind.INTENSITY, "s", "g")),
        ("energy/v1/s/g/ledger", TopicRef(MessageKind.LEDGER, "s", "g")),
        ("energy/v1/s/g/alarms", TopicRef(MessageKind.ALARM, "s", "g")),
        ("energy/v1/s/g/d/status", TopicRef(MessageKind.DEVICE_STATUS, "s", "g", "d")),
        ("energy/v1/s/g/d/measurements", TopicRef(MessageKind.MEASUREMENTS, "s", "g", "d")),
        ("energy/v1/s/g/d/energy", TopicRef(MessageKind.ENERGY, "s", "g", "d")),
        ("energy/v1/s/g/d/events", TopicRef(MessageKind.EVENTS, "s", "g", "d")),
        # A device may be called like a leaf; the depth tells them apart.
        ("energy/v1/s/g/intensity/energy", TopicRef(MessageKind.ENERGY, "s", "g", "intensity")),
    ],
)
def test_parse_topic(topic: str, ref: TopicRef) -> None:
    assert parse_topic(topic) == ref


def test_parse_topic_with_another_prefix() -> None:
    assert parse_topic("plant/x/s/g/status", "plant/x").kind is MessageKind.GATEWAY_STATUS
    with pytest.raises(TopicError):
        parse_topic("energy/v1/s/g/status", "plant/x")


def test_subscription_filters_cover_exactly_the_contract() -> None:
    filters = subscription_filters("energy/v1")
    assert len(filters) == len(set(filters)) == 8
    assert all(f.startswith("energy/v1/+/+/") for f in filters)


def test_implausible_values_are_accepted_as_nulls_with_their_names() -> None:
    """A poll whose meter returned a 3.4e38 V voltage arrives with that value null and
    named in ``implausible``: written without it, never dead-lettered."""
    payload = encode(
        measurements_payload(
            NOW, 7, {"voltage_l1_v": None, "active_power_kw": 2.5}, ["voltage_l1_v"]
        )
    )
    assert json.loads(payload)["implausible"] == ["voltage_l1_v"]
    verdict = check(f"{T}/press-1/measurements", payload, LIMITS, NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.lines == [
        f"measurements,device=press-1,gateway=gw-01,site=plant-a seq=7i,active_power_kw=2.5 {NOW}"
    ]
    bad = json.loads(payload) | {"implausible": ["Voltage L1"]}
    verdict = check(f"{T}/press-1/measurements", json.dumps(bad).encode(), LIMITS, NOW)
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.INVALID


def test_a_poll_without_implausible_values_has_no_such_key() -> None:
    assert "implausible" not in measurements_payload(NOW, 1, {"active_power_kw": 1.0})


# --- plausible ranges (issue 11, item 4) ------------------------------------------------------

M = f"{T}/press-1/measurements"
E = f"{T}/press-1/energy"


def meas(values: dict[str, object], **changes: object) -> bytes:
    return json.dumps({**MEAS, "values": values, **changes}).encode()


def intensity(window: str, **changes: object) -> bytes:
    w = {"energy_kwh": 1.0, "co2_kg": 0.5, "output_units": 10.0, "kwh_per_unit": 0.1}
    w |= {"kgco2_per_unit": 0.05, "intensity_g_per_kwh": 500.0, "tce": 0.0001229}
    return json.dumps({"ts": NOW, "windows": {window: {**w, **changes}}}).encode()


IMPOSSIBLE = [
    ("negative energy", E, energy(energy_kwh=-1e6), Reason.IMPLAUSIBLE, "energy_kwh"),
    ("1e300 kWh", E, energy(energy_kwh=1e300), Reason.IMPLAUSIBLE, "energy_kwh"),
    ("101 GW average", E, energy(avg_power_kw=1.01e8), Reason.IMPLAUSIBLE, "avg_power_kw"),
    ("negative CO2", E, energy(co2_kg=-0.1), Reason.IMPLAUSIBLE, "co2_kg"),
    ("ef of 1000 kg/kWh", E, energy(ef_kg_per_kwh=1000.0), Reason.IMPLAUSIBLE, "ef_kg_per_kwh"),
    ("negative ef", E, energy(ef_kg_per_kwh=-0.5), Reason.IMPLAUSIBLE, "ef_kg_per_kwh"),
    ("unmetered 1e9 kWh in 60 s", E, energy(unmetered_kwh=-1e9), Reason.IMPLAUSIBLE, "unmetered"),
    ("gas volume 1e9 m3 in 60 s", E, energy(volume_m3=1e9), Reason.IMPLAUSIBLE, "volume_m3"),
    ("3.4e38 V", M, meas({"voltage_l1_v": 3.4e38}), Reason.IMPLAUSIBLE, "values.voltage_l1_v"),
    ("-5000 V", M, meas({"voltage_l1_v": -5000.0}), Reason.IMPLAUSIBLE, "values.voltage_l1_v"),
    ("power factor 230", M, meas({"power_factor": 230}), Reason.IMPLAUSIBLE, "power_factor"),
    ("counter 1e15 kWh", M, meas({"energy_import_kwh": 1e15}), Reason.IMPLAUSIBLE, "import"),
    (
        "a 1-minute window of 1e9 kWh",
        f"{T}/intensity",
        intensity("1m", energy_kwh=1e9),
        Reason.IMPLAUSIBLE,
        "windows.1m.energy_kwh",
    ),
    ("negative tce", f"{T}/intensity", intensity("month", tce=-1.0), Reason.IMPLAUSIBLE, "tce"),
    ("seq 2^64", M, meas({}, seq=2**64), Reason.INVALID, "seq"),
    ("seq 2^63", M, meas({}, seq=2**63), Reason.INVALID, "seq"),
    ("seq 2^53 + 1", M, meas({}, seq=2**53 + 1), Reason.INVALID, "seq"),
    (
        "10,000 value keys",
        M,
        meas({f"q{i}": 1.0 for i in range(10_000)}),
        Reason.INVALID,
        "'q0' is not a canonical quantity",
    ),
    ("a made-up quantity", M, meas({"temperature_c": 21.0}), Reason.INVALID, "temperature_c"),
    ("seq as a quantity", M, meas({"seq": 2.0}), Reason.INVALID, "'seq'"),
    (
        "implausible names a made-up quantity",
        M,
        meas({}, implausible=["temperature_c"]),
        Reason.INVALID,
        "temperature_c",
    ),
    (
        "implausible names a quantity twice",
        M,
        meas({}, implausible=["voltage_l1_v", "voltage_l1_v"]),
        Reason.INVALID,
        "named twice",
    ),
    (
        "implausible names a quantity that has a value",
        M,
        meas({"voltage_l1_v": 230.0}, implausible=["voltage_l1_v"]),
        Reason.INVALID,
        "voltage_l1_v is named but has a value",
    ),
    (
        "site id with a trailing newline",
        f"{PREFIX}/plant-a\n/gw-01/intensity",
        intensity("1m"),
        Reason.BAD_TOPIC,
        "site id",
    ),
    (
        "device id with a trailing newline",
        f"{T}/press-1\n/energy",
        energy(),
        Reason.BAD_TOPIC,
        "device id",
    ),
]


@pytest.mark.parametrize(
    ("case", "topic", "payload", "reason", "where"), IMPOSSIBLE, ids=[i[0] for i in IMPOSSIBLE]
)
def test_impossible_numbers_and_names_are_refused_saying_which(
    case: str, topic: str, payload: bytes, reason: Reason, where: str
) -> None:
    verdict = check(topic, payload, LIMITS, now_ms=NOW)
    assert isinstance(verdict, Rejected), case
    assert verdict.reason is reason, verdict
    assert where in verdict.detail, verdict.detail


def test_the_energy_ceiling_is_100_gw_over_the_interval() -> None:
    """Hand arithmetic: 1e8 kW x 60 s / 3600 s/h = 1,666,666.67 kWh; x 900 s = 25,000,000."""
    assert isinstance(check(E, energy(energy_kwh=1_666_666.0), LIMITS, NOW), Accepted)
    assert isinstance(check(E, energy(energy_kwh=1_666_667.0), LIMITS, NOW), Rejected)
    quarter = {"interval_s": 900, "avg_power_kw": 1e8}
    assert isinstance(check(E, energy(energy_kwh=25_000_000, **quarter), LIMITS, NOW), Accepted)
    v = check(E, energy(energy_kwh=25_000_001, **quarter), LIMITS, NOW)
    assert isinstance(v, Rejected)
    assert v.detail == (
        "energy_kwh: energy_kwh = 25000001.0 is outside the plausible range [0, 2.5e+07] "
        "for a 900 s interval"
    )
    # CO2: at most 100 kg/kWh of that: 1.6667e8 kg in a minute.
    assert isinstance(check(E, energy(co2_kg=1.6e8), LIMITS, NOW), Accepted)
    assert isinstance(check(E, energy(co2_kg=1.7e8), LIMITS, NOW), Rejected)
    # A month window: 1e8 kW x 745 h = 7.45e10 kWh.
    assert isinstance(
        check(f"{T}/intensity", intensity("month", energy_kwh=7.45e10), LIMITS, NOW), Accepted
    )
    assert isinstance(
        check(f"{T}/intensity", intensity("month", energy_kwh=7.46e10), LIMITS, NOW), Rejected
    )


def test_unmetered_energy_may_be_negative() -> None:
    """Children that over-read their parent: a negative remainder is a measurement, not an error."""
    assert isinstance(check(E, energy(unmetered_kwh=-0.4), LIMITS, NOW), Accepted)


def test_every_quantity_and_window_has_a_range() -> None:
    assert set(VALUE_RANGES) == {q.value for q in Quantity}
    assert tuple(WINDOW_RANGES) == WINDOWS
    for lo, hi in VALUE_RANGES.values():
        assert lo <= 0 < hi


def test_what_a_meter_profile_calls_plausible_the_bridge_accepts() -> None:
    """The gateway's default plausible ranges (a reading) lie inside the contract's (not
    impossible): a reading the gateway keeps is never nulled again nor refused."""
    for q, (lo, hi) in PLAUSIBLE.items():
        c_lo, c_hi = VALUE_RANGES[q.value]
        assert c_lo <= lo and hi <= c_hi, (q, (lo, hi), (c_lo, c_hi))


def test_ts_before_2000_is_refused_whatever_the_window() -> None:
    """ts 0 is "no timestamp" to VictoriaMetrics: it would store the point at its own clock."""
    forever = Limits(max_past_s=100 * 365 * 86400)
    v = check(E, energy(ts=0), forever, now_ms=NOW)
    assert isinstance(v, Rejected) and v.reason is Reason.TS_OUT_OF_WINDOW
    assert "before 2000-01-01" in v.detail
    assert isinstance(check(E, energy(ts=TS_MIN_MS), forever, now_ms=NOW), Accepted)


def test_the_gateway_nulls_and_names_what_the_bridge_would_refuse() -> None:
    """measurements_payload applies the contract's ranges itself: one impossible value
    never costs the poll's good ones."""
    payload = measurements_payload(
        NOW, 3, {"voltage_l1_v": 3.4e38, "power_factor": 230.0, "active_power_kw": 5.0}
    )
    assert payload["values"] == {"voltage_l1_v": None, "power_factor": None, "active_power_kw": 5.0}
    assert payload["implausible"] == ["power_factor", "voltage_l1_v"]
    verdict = check(M, encode(payload), LIMITS, NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.lines == [
        f"measurements,device=press-1,gateway=gw-01,site=plant-a seq=3i,active_power_kw=5.0 {NOW}"
    ]
    # The profile's own list is kept and merged, once each.
    merged = measurements_payload(
        NOW, 4, {"voltage_l1_v": None, "frequency_hz": 5e3}, ["voltage_l1_v"]
    )
    assert merged["implausible"] == ["frequency_hz", "voltage_l1_v"]


def test_an_event_is_one_point_tagged_with_what_happened() -> None:
    """Measurement ``events``: tags event and quantity, fields value and limit_per_h, at
    the event's ts; a null value (a reading beyond any range, nulled by the gateway) is
    left out, and the limit keeps the point."""
    glitch = event_payload(NOW, Correction.GLITCH, "energy_import_kwh", 1000104.5, 2e6)
    v = check(f"{T}/press-1/events", encode(glitch), LIMITS, now_ms=NOW)
    assert isinstance(v, Accepted), v
    tags = "events,device=press-1,event=glitch,gateway=gw-01,quantity=energy_import_kwh"
    assert v.lines == [f"{tags},site=plant-a value=1000104.5,limit_per_h=2000000.0 {NOW}"]
    garbage = event_payload(NOW, Correction.GLITCH, "energy_import_kwh", 3.4e38, 2e6)
    assert garbage["value"] is None
    v = check(f"{T}/press-1/events", encode(garbage), LIMITS, now_ms=NOW)
    assert isinstance(v, Accepted), v
    assert v.lines == [f"{tags},site=plant-a limit_per_h=2000000.0 {NOW}"]
    # a hostile publisher's values and names are refused, saying which
    for doc, reason in [
        ({**glitch, "value": 1e300}, Reason.IMPLAUSIBLE),
        ({**glitch, "event": "explosion"}, Reason.INVALID),
        ({**glitch, "quantity": "voltage_l1_v"}, Reason.INVALID),
        ({**glitch, "limit_per_h": -1.0}, Reason.IMPLAUSIBLE),
    ]:
        v = check(f"{T}/press-1/events", json.dumps(doc).encode(), LIMITS, now_ms=NOW)
        assert isinstance(v, Rejected) and v.reason is reason, (doc, v)


def test_an_alarm_change_is_one_point_tagged_with_its_rule_and_subject() -> None:
    """Measurement ``alarm``: tags rule, condition, subject; ``raised`` 1 or 0, value,
    limit, since_ms, at the change's ts; the text and the active list stay in MQTT."""
    row = {
        "rule": "meter-off",
        "condition": "offline",
        "subject": "press-1",
        "value": 61.5,
        "limit": 60.0,
        "since_ms": NOW - 3_690_000,
    }
    raised = alarm_payload(NOW, row, "raised", "press-1 has not answered", [row])
    v = check(f"{T}/alarms", encode(raised), LIMITS, now_ms=NOW)
    assert isinstance(v, Accepted), v
    tags = "alarm,condition=offline,gateway=gw-01,rule=meter-off,site=plant-a,subject=press-1"
    fields = f"raised=1i,value=61.5,limit=60.0,since_ms={NOW - 3_690_000}i"
    assert v.lines == [f"{tags} {fields} {NOW}"]
    cleared = alarm_payload(NOW, {**row, "value": None}, "cleared", "answered", [])
    v = check(f"{T}/alarms", encode(cleared), LIMITS, now_ms=NOW)
    assert isinstance(v, Accepted), v
    assert v.lines == [f"{tags} raised=0i,limit=60.0,since_ms={NOW - 3_690_000}i {NOW}"]
    for doc in ({**raised, "state": "on"}, {**raised, "subject": "Press 1"}):
        v = check(f"{T}/alarms", json.dumps(doc).encode(), LIMITS, now_ms=NOW)
        assert isinstance(v, Rejected) and v.reason is Reason.INVALID, (doc, v)
