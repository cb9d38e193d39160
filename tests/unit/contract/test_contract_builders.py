"""The payload builders against the record tables: key order, presence, rounding."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from agent.contract import (
    Carrier,
    build,
    device_status_payload,
    energy_payload,
    gateway_status_payload,
    intensity_payload,
    measurements_payload,
    window_values,
)
from agent.contract.records import (
    DEVICE_STATUS,
    ENERGY,
    GATEWAY_STATUS,
    INTENSITY,
    MEASUREMENTS,
    WINDOW,
)
from agent.contract.schema import Record


def assert_follows(record: Record, payload: dict[str, Any]) -> None:
    """Keys in the rows' order, every required one present, nothing else."""
    assert [k for k in record.names if k in payload] == list(payload), record.name
    assert {f.name for f in record.fields if f.required} <= payload.keys(), record.name


@pytest.mark.parametrize("implausible", [(), ("voltage_l1_v",), ("power_factor", "voltage_l1_v")])
def test_measurements_are_written_in_the_rows_order(implausible: tuple[str, ...]) -> None:
    """measurements_payload writes its dict by hand (the most frequent payload): held
    to the MEASUREMENTS rows here, with and without its optional key."""
    values = {"active_power_kw": 1.5, **dict.fromkeys(implausible)}
    payload = measurements_payload(5, 2, values, implausible)
    assert_follows(MEASUREMENTS, payload)
    assert ("implausible" in payload) is bool(implausible)
    assert payload == build(MEASUREMENTS, payload)


def test_a_measurement_outside_the_contract_is_nulled_and_named() -> None:
    payload = measurements_payload(5, 2, {"voltage_l1_v": 3e6, "frequency_hz": 50.0})
    assert payload == {
        "ts": 5,
        "seq": 2,
        "values": {"voltage_l1_v": None, "frequency_hz": 50.0},
        "implausible": ["voltage_l1_v"],
    }


@pytest.mark.parametrize(("carrier", "parent"), list(itertools.product(Carrier, (False, True))))
def test_energy_follows_the_rows_with_each_carriers_keys(carrier: Carrier, parent: bool) -> None:
    extra: dict[str, Any] = {
        Carrier.NATURAL_GAS: {"volume_m3": 0.1},
        Carrier.PRODUCTION: {"units": 12.0},
        Carrier.ELECTRICITY: {},
    }[carrier]
    if parent:
        extra["unmetered_kwh"] = None
    payload = energy_payload(
        ts=60_000,
        interval_s=60,
        carrier=carrier,
        energy_kwh=0.1 + 0.2,
        co2_kg=-0.0,
        ef_kg_per_kwh=None,
        quality="measured",
        **extra,
    )
    assert_follows(ENERGY, payload)
    assert payload["carrier"] == carrier.value and type(payload["carrier"]) is str
    assert payload["energy_kwh"] == 0.3  # rounded to 1e-9: 0.30000000000000004 no more
    assert payload["avg_power_kw"] == 18.0  # 0.3 kWh in 60 s, worked out by the builder
    assert str(payload["co2_kg"]) == "0.0"  # -0.0 is written as 0.0
    assert ("unmetered_kwh" in payload) is parent


def test_a_field_the_record_does_not_have_or_lacks_is_a_programming_error() -> None:
    good = {"ts": 1, "interval_s": 60, "carrier": "electricity", "energy_kwh": 1.0}
    good |= {"co2_kg": 0.5, "ef_kg_per_kwh": 0.5, "quality": "measured"}
    with pytest.raises(KeyError, match=r"energy has no field \['export_kwhh'\]"):
        energy_payload(**good, export_kwhh=1.0)
    with pytest.raises(KeyError, match="energy: co2_kg is required"):
        energy_payload(**{k: v for k, v in good.items() if k != "co2_kg"})


def test_statuses_and_intensity_follow_their_rows() -> None:
    assert_follows(GATEWAY_STATUS, gateway_status_payload("online", 1, "1.0"))
    assert_follows(DEVICE_STATUS, device_status_payload("error", "timeout", 1))
    # half of the window measured, a quarter interpolated, a quarter missing (m2's)
    window = window_values(2.0, 1.0, 0.0, 0.2458, (0.5, 0.25, 0.25), (1, ["m2"]))
    assert_follows(WINDOW, window)
    assert window == {
        "energy_kwh": 2.0,
        "co2_kg": 1.0,
        "output_units": 0.0,
        "kwh_per_unit": None,  # no output: no ratio
        "kgco2_per_unit": None,
        "intensity_g_per_kwh": 500.0,  # 1 kg / 2 kWh
        "tce": 0.0002458,  # kgce / 1000
        "measured_share": 0.5,
        "interpolated_share": 0.25,
        "missing_share": 0.25,
        "missing_count": 1,
        "missing_devices": ["m2"],
    }
    assert_follows(INTENSITY, intensity_payload(1, {"1m": window}, rev=2))
    assert intensity_payload(1, {"1m": window}, rev=2)["rev"] == 2
