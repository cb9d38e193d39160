"""Line protocol: escaping, refusals, and the schema each payload kind becomes."""

from __future__ import annotations

import re

import pytest

from agent.bridge.lineproto import (
    LineProtocolError,
    escape_string_field,
    escape_tag_value,
    format_field,
    line,
    to_lines,
)
from agent.contract import Carrier, MessageKind, TopicRef, energy_payload, window_values
from agent.contract.models import (
    DeviceStatusModel,
    EnergyModel,
    GatewayStatusModel,
    IntensityModel,
    MeasurementsModel,
)

# An unescaped separator: a , = or space not preceded by a backslash.
_UNESCAPED = re.compile(r"(?<!\\)[,= ]")


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plant-a", "plant-a"),
        ("a,b=c", r"a\,b\=c"),
        ("x 1", r"x\ 1"),
        ("site,device=evil value=1", r"site\,device\=evil\ value\=1"),
        ("中文", "中文"),
        ('quote"d', 'quote"d'),
    ],
)
def test_tag_values_are_escaped(value: str, escaped: str) -> None:
    out = escape_tag_value(value)
    assert out == escaped
    assert not _UNESCAPED.search(out)


@pytest.mark.parametrize("value", ["a\nenergy x=1 1", "a\rb", "trailing\\", "back\\,slash", ""])
def test_tag_values_that_cannot_be_escaped_are_refused(value: str) -> None:
    with pytest.raises(LineProtocolError):
        escape_tag_value(value)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("measured", '"measured"'),
        ('a" x=1', r'"a\" x=1"'),
        ("back\\slash", r'"back\\slash"'),
        ('\\"', r'"\\\""'),
    ],
)
def test_string_fields_are_quoted_and_escaped(value: str, escaped: str) -> None:
    assert escape_string_field(value) == escaped


def test_string_field_with_a_newline_is_refused() -> None:
    with pytest.raises(LineProtocolError):
        escape_string_field("a\nb")


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.5, "1.5"), (1.0, "1.0"), (3, "3i"), (True, "true"), (1e-5, "1e-05"), (-0.0, "-0.0")],
)
def test_field_formatting(value: float | int | bool, text: str) -> None:
    assert format_field(value) == text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_fields_are_refused(value: float) -> None:
    with pytest.raises(LineProtocolError):
        format_field(value)


@pytest.mark.parametrize("key", ["a b", "a,b", "a=b", "", "1abc", "a\nb", "é", "a\n"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(LineProtocolError):
        line("m", {key: "v"}, {"f": 1.0}, 1)
    with pytest.raises(LineProtocolError):
        line("m", {"t": "v"}, {key: 1.0}, 1)
    with pytest.raises(LineProtocolError):
        line(key, {"t": "v"}, {"f": 1.0}, 1)


def test_line_shape_and_sorted_tags() -> None:
    assert (
        line("energy", {"site": "s", "device": "d"}, {"energy_kwh": 1.5, "n": 2}, 1700000000000)
        == "energy,device=d,site=s energy_kwh=1.5,n=2i 1700000000000"
    )


def test_a_point_needs_a_field_and_an_integer_time() -> None:
    with pytest.raises(LineProtocolError):
        line("m", {}, {}, 1)
    with pytest.raises(LineProtocolError):
        line("m", {}, {"f": 1.0}, True)


@pytest.mark.parametrize("ts", [0, -1, 2**63])
def test_a_time_the_database_would_misfile_or_drop_is_refused(ts: int) -> None:
    """0 is "no timestamp" to VictoriaMetrics (it stamps its own clock); beyond int64
    nothing can store it."""
    with pytest.raises(LineProtocolError):
        line("m", {}, {"f": 1.0}, ts)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64])
def test_an_integer_beyond_int64_is_refused(value: int) -> None:
    """VictoriaMetrics answers 204 and drops such a line, every field of it (checked)."""
    with pytest.raises(LineProtocolError, match="int64"):
        format_field(value)
    assert format_field(2**63 - 1) == "9223372036854775807i"
    assert format_field(-(2**63)) == "-9223372036854775808i"


def test_injection_through_a_tag_stays_one_point_with_one_field() -> None:
    out = line("m", {"site": "a,evil=1 hacked=1"}, {"v": 1.0}, 5)
    assert "\n" not in out
    head, fields, ts = _split(out)
    assert head == r"m,site=a\,evil\=1\ hacked\=1"
    assert fields == "v=1.0"
    assert ts == "5"


def _split(point: str) -> list[str]:
    """Split a line on its unescaped spaces: measurement+tags, fields, time."""
    return re.split(r"(?<!\\) ", point)


REF = TopicRef(MessageKind.ENERGY, "plant-a", "gw-01", "press-1")


def test_measurements_leave_nulls_out_and_keep_seq_as_integer() -> None:
    model = MeasurementsModel.model_validate(
        {"ts": 5, "seq": 9, "values": {"active_power_kw": 1.25, "power_factor": None}}
    )
    ref = TopicRef(MessageKind.MEASUREMENTS, "plant-a", "gw-01", "press-1")
    assert to_lines(ref, model) == [
        "measurements,device=press-1,gateway=gw-01,site=plant-a seq=9i,active_power_kw=1.25 5"
    ]


def test_energy_has_carrier_and_quality_tags_and_only_numbers_as_fields() -> None:
    payload = energy_payload(
        ts=60_000,
        interval_s=60,
        carrier=Carrier.NATURAL_GAS,
        energy_kwh=1.081,
        co2_kg=0.2162,
        ef_kg_per_kwh=None,
        quality="interpolated",
        volume_m3=0.1,
    )
    (out,) = to_lines(REF, EnergyModel.model_validate(payload))
    assert out == (
        "energy,carrier=natural_gas,device=press-1,gateway=gw-01,quality=interpolated,"
        "site=plant-a interval_s=60i,energy_kwh=1.081,co2_kg=0.2162,avg_power_kw=64.86,"
        "volume_m3=0.1 60000"
    )


def test_intensity_is_one_point_per_window_with_null_ratios_left_out() -> None:
    model = IntensityModel.model_validate(
        {
            "ts": 7,
            "windows": {"1m": window_values(1.0, 0.5, 0.0, 0.1), "1h": window_values(2, 1, 4, 0.2)},
        }
    )
    ref = TopicRef(MessageKind.INTENSITY, "plant-a", "gw-01")
    first, second = to_lines(ref, model)
    assert first.startswith("intensity,gateway=gw-01,site=plant-a,window=1m ")
    assert "kwh_per_unit" not in first
    assert "intensity_g_per_kwh=500.0" in first
    assert "kwh_per_unit=0.5" in second


def test_an_intensity_windows_coverage_is_fields_its_names_and_revision_stay_in_mqtt() -> None:
    """A window 60 % measured, 10 % interpolated, 30 % missing (two meters, m2 and m3):
    the shares and the count are fields; the names and ``rev`` are not stored (the
    revision overwrites the point of the same series and time)."""
    window = window_values(6.0, 3.0, 0.0, 0.6, (0.6, 0.1, 0.3), (2, ["m2", "m3"]))
    model = IntensityModel.model_validate({"ts": 9, "rev": 1, "windows": {"1h": window}})
    (line,) = to_lines(TopicRef(MessageKind.INTENSITY, "plant-a", "gw-01"), model)
    assert line == (
        "intensity,gateway=gw-01,site=plant-a,window=1h energy_kwh=6.0,co2_kg=3.0,"
        "output_units=0.0,intensity_g_per_kwh=500.0,tce=0.0006,measured_share=0.6,"
        "interpolated_share=0.1,missing_share=0.3,missing_count=2i 9"
    )


def test_status_is_a_number() -> None:
    gw = GatewayStatusModel.model_validate({"state": "offline", "ts": 3, "version": "1"})
    dev = DeviceStatusModel.model_validate({"state": "ok", "error": None, "ts": 4})
    assert to_lines(TopicRef(MessageKind.GATEWAY_STATUS, "s", "g"), gw) == [
        "status,gateway=g,site=s up=0i 3"
    ]
    assert to_lines(TopicRef(MessageKind.DEVICE_STATUS, "s", "g", "d"), dev) == [
        "status,device=d,gateway=g,site=s up=1i 4"
    ]


def test_a_payload_of_the_wrong_kind_is_refused() -> None:
    gw = GatewayStatusModel.model_validate({"state": "online", "ts": 3, "version": "1"})
    with pytest.raises(LineProtocolError):
        to_lines(REF, gw)


def test_a_windows_net_import_is_a_field_negative_when_the_site_exported_more() -> None:
    """tests/cases/replay-net-import's 1m window at 00:10: 0.5 kWh imported, 1.0 exported:
    net_import_kwh -0.5 beside the import-only energy and CO2 (a window without it, one
    begun before an upgrade, has no such field: unknown, not 0)."""
    window = window_values(0.5, 0.25, 0.0, 0.06145, net_import_kwh=-0.5)
    unknown = window_values(6.1, 3.05, 0.0, 0.7497)
    model = IntensityModel.model_validate({"ts": 9, "windows": {"1m": window, "today": unknown}})
    one_minute, today = to_lines(TopicRef(MessageKind.INTENSITY, "plant-a", "gw-01"), model)
    assert one_minute.startswith(
        "intensity,gateway=gw-01,site=plant-a,window=1m energy_kwh=0.5,net_import_kwh=-0.5,"
        "co2_kg=0.25,"
    )
    assert "net_import_kwh" not in today
