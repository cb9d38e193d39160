"""The contract's tables: what every record must say, ranges by hand, and who is tied to them.

The tables in agent/contract/ are the one definition; these tests check that
each row says enough for everything derived from it (a number without a range
would be written unchecked, a tag needing escapes would break the fast path),
and that the runtime's outbox and the core's qualities and windows are the
contract's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.contract import KINDS, WINDOWS, MessageKind, OutboxClass, Quality, Topics
from agent.contract.plausible import VALUE_RANGES, WINDOW_HOURS, PerHour
from agent.contract.records import ENERGY, LEDGER, WINDOW, WINDOW_RANGES, energy_ranges
from agent.contract.schema import JsonType, Record, Store
from agent.contract.vocab import ID, QUANTITY_VOCAB
from agent.core import channels
from agent.core.channels import ChannelKind, Flag, quality_of
from agent.runtime.outbox import OF_KIND, Kind, item_of
from drivers.quantities import Quantity

ROOT = Path(__file__).resolve().parents[3]
RECORDS = list(dict.fromkeys(spec.record for spec in KINDS.values()))


def nested(record: Record) -> list[Record]:
    return [record] + [
        r for f in record.fields if isinstance(f.items, Record) for r in nested(f.items)
    ]


ALL = [r for top in RECORDS for r in nested(top)]


# --- what every row must say ----------------------------------------------------------------


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_every_record_has_one_time_ts(record: Record) -> None:
    """The bridge reads ts of every payload (the timestamp window) and writes it as time;
    a ledger entry's is the end of the period it seals."""
    times = [f for f in record.fields if f.store is Store.TIME]
    assert [f.name for f in times] == ["period_end" if record is LEDGER else "ts"]
    assert record.time is times[0]
    assert times[0].type is JsonType.INTEGER and times[0].required and not times[0].nullable


@pytest.mark.parametrize("record", ALL, ids=lambda r: r.name)
def test_every_number_has_a_range_and_every_integer_bounds(record: Record) -> None:
    for f in record.fields:
        if f.type is JsonType.NUMBER and f.store is Store.FIELD:
            assert f.plausible is not None, f"{record.name}.{f.name}: a number without a range"
        if f.type is JsonType.INTEGER:
            assert f.limits is not None and f.limits.le is not None, f"{record.name}.{f.name}"
            assert f.limits.le < 2**63, "line protocol's integers are int64"


@pytest.mark.parametrize("record", ALL, ids=lambda r: r.name)
def test_per_hour_bounds_have_a_span(record: Record) -> None:
    """A per-hour range scales with the record's span: its own field, or its parent's key."""
    per_hour = [f for f in record.fields for b in f.plausible or () if isinstance(b, PerHour)]
    if not per_hour:
        return
    if record.span is not None:
        span = record.field(record.span)
        assert span.type is JsonType.INTEGER and span.unit == "s"
        return
    parents = [f for r in ALL for f in r.fields if f.items is record]
    assert parents and all(f.key_hours is not None for f in parents), record.name
    for f in parents:
        assert f.keys is not None and set(f.keys.names) == set(f.key_hours or {})


_TAG_SAFE = re.compile(r"[a-z0-9_]+")


@pytest.mark.parametrize("record", ALL, ids=lambda r: r.name)
def test_strings_written_as_tags_need_no_escaping(record: Record) -> None:
    """Tag values from a payload are written as they are (the fast path, Telegraf)."""
    for f in record.fields:
        if f.store is Store.TAG:
            # Choices that need no escaping, or an id (the topic's ids are tags too).
            assert f.choices or f.pattern == ID, f.name
            assert all(_TAG_SAFE.fullmatch(c) for c in f.choices), f.choices
        if f.store is Store.KEYS_AS_POINTS:
            assert f.keys is not None and f.column
            assert all(_TAG_SAFE.fullmatch(k) for k in f.keys.names), f.keys.names
        if f.codes is not None:
            assert set(f.codes) == set(f.choices), f.name


def test_values_keys_are_the_canonical_quantities_each_with_its_range() -> None:
    values = KINDS[MessageKind.MEASUREMENTS].record.field("values")
    assert values.keys is QUANTITY_VOCAB
    assert set(QUANTITY_VOCAB.names) == {q.value for q in Quantity} == set(VALUE_RANGES)
    assert values.key_ranges is VALUE_RANGES


def test_windows_are_one_list() -> None:
    windows = KINDS[MessageKind.INTENSITY].record.field("windows")
    assert windows.keys is not None and windows.keys.names == WINDOWS
    assert tuple(WINDOW_HOURS) == WINDOWS == tuple(WINDOW_RANGES)


# --- ranges, by hand ------------------------------------------------------------------------


def test_energy_ranges_for_a_quarter_hour() -> None:
    """900 s = 0.25 h at the 100 GW ceiling: 2.5e7 kWh; CO2 at 100 kg/kWh; gas 1e8 m3/h."""
    assert dict(energy_ranges(900)) == {
        "energy_kwh": (0.0, 2.5e7),
        "export_kwh": (0.0, 2.5e7),
        "co2_kg": (0.0, 2.5e9),
        "avg_power_kw": (0.0, 1e8),
        "ef_kg_per_kwh": (0.0, 100.0),
        "measured_share": (0.0, 1.0),  # shares of the interval, at any length
        "interpolated_share": (0.0, 1.0),
        "missing_share": (0.0, 1.0),
        "volume_m3": (0.0, 2.5e7),
        "units": (0.0, 2.5e11),
        "unmetered_kwh": (-2.5e7, 2.5e7),
    }


def test_the_energy_bounds_are_the_floats_they_always_were() -> None:
    """(ceiling * hours) * factor, in that order: a value on the edge keeps its verdict."""
    h = 60 / 3600
    assert energy_ranges(60)["co2_kg"][1] == 1e8 * h * 100.0
    assert energy_ranges(60)["unmetered_kwh"][0] == -(1e8 * h)


def test_window_ranges_by_hand() -> None:
    assert WINDOW_RANGES["1h"]["energy_kwh"] == (0.0, 1e8)
    assert WINDOW_RANGES["today"]["tce"] == (0.0, 25 * 1e8 * 1.0)  # a 25-hour local day
    assert WINDOW_RANGES["month"]["output_units"] == (0.0, 745 * 1e12)
    assert WINDOW_RANGES["1m"]["intensity_g_per_kwh"] == (0.0, 1e5)
    # every number has a range; the missing devices' count and names are no reading
    assert set(WINDOW_RANGES["15m"]) == {f.name for f in WINDOW.fields if f.type == "number"}
    assert WINDOW_RANGES["month"]["missing_share"] == (0.0, 1.0)  # a share, at any length


def test_energy_numbers_all_have_ranges_in_the_table_order() -> None:
    numbers = [f.name for f in ENERGY.stored(JsonType.NUMBER)]
    assert list(energy_ranges(60)) == numbers


# --- tied to the contract -------------------------------------------------------------------


def test_each_outbox_class_is_an_outbox_kind_by_name() -> None:
    assert {c.name for c in OutboxClass} == {k.name for k in Kind}
    assert OF_KIND[MessageKind.ENERGY] is Kind.ENERGY
    assert OF_KIND[MessageKind.MEASUREMENTS] is Kind.MEASUREMENT
    assert OF_KIND[MessageKind.GATEWAY_STATUS] is OF_KIND[MessageKind.DEVICE_STATUS] is Kind.STATUS


def test_a_message_is_stored_as_its_kind_says() -> None:
    topics = Topics("energy/v1", "plant-a", "gw-01")
    status = topics.message(
        MessageKind.DEVICE_STATUS, {"state": "ok", "error": None, "ts": 7}, "d1"
    )
    poll = topics.message(MessageKind.MEASUREMENTS, {"ts": 8, "seq": 1, "values": {}}, "d1")
    s, p = item_of(status), item_of(poll)
    assert (s.kind, s.retain, s.created_ms, s.topic) == (
        Kind.STATUS,
        True,
        7,
        "energy/v1/plant-a/gw-01/d1/status",
    )
    assert (p.kind, p.retain, p.created_ms) == (Kind.MEASUREMENT, False, 8)
    assert p.payload == b'{"ts":8,"seq":1,"values":{}}'


def test_every_kind_is_published_at_qos_1_and_only_statuses_and_alarms_are_retained() -> None:
    """The gateway's link publishes everything at QoS 1 (agent/runtime/mqtt.py)."""
    assert {spec.qos for spec in KINDS.values()} == {1}
    retained = {k for k, spec in KINDS.items() if spec.retained}
    assert retained == {MessageKind.GATEWAY_STATUS, MessageKind.DEVICE_STATUS, MessageKind.ALARM}
    assert [k for k, spec in KINDS.items() if spec.will] == [MessageKind.GATEWAY_STATUS]


def test_the_cores_quality_is_the_contracts() -> None:
    assert channels.Quality is Quality
    assert quality_of(0, ChannelKind.POWER) is Quality.INTEGRATED
    assert quality_of(Flag.RESET | Flag.GAP, ChannelKind.COUNTER) is Quality.RESET
    assert ENERGY.field("quality").choices == tuple(q.value for q in Quality)


# Taking a topic apart to learn what it is: the kind travels with the Message instead.
_REPARSE = re.compile(r"\btopic\w*(\[[^]]*\])?\.(r?split|r?partition|endswith)\(")


def test_nobody_takes_a_topic_apart_to_learn_its_kind() -> None:
    """Only the contract reads topics back (the bridge, through parse_topic); the demo
    broker matches subscription filters, which is its job."""
    allowed = {ROOT / "agent/contract/kinds.py", ROOT / "agent/demo/mqttcodec.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "agent").rglob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _REPARSE.search(line)
    ]
    assert offenders == [], "use Message.kind:\n" + "\n".join(offenders)


def test_the_reparse_check_sees_an_offender() -> None:
    for line in ('kind = m.topic.rsplit("/", 1)[-1]', 'm.topic.endswith("/energy")'):
        assert _REPARSE.search(line), line
    assert not _REPARSE.search("spec = m.kind.spec")
