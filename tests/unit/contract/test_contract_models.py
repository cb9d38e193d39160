"""The bridge's models against the record tables, field for field.

The models are made from the rows (agent/contract/models.py); these tests hold
each model to what its rows say, one row property at a time, with a payload
that differs from a valid one in that one field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agent.contract import KINDS, MessageKind
from agent.contract.models import MODELS, MeasurementsModel
from agent.contract.records import ENERGY, WINDOW_RANGES, energy_ranges
from agent.contract.schema import Field, JsonType

TS = 1_750_000_000_000
VALID: dict[MessageKind, dict[str, Any]] = {
    MessageKind.GATEWAY_STATUS: {"state": "online", "ts": TS, "version": "1.0"},
    MessageKind.DEVICE_STATUS: {"state": "error", "error": "timeout", "ts": TS},
    MessageKind.MEASUREMENTS: {"ts": TS, "seq": 3, "values": {"active_power_kw": 1.5}},
    MessageKind.ENERGY: {
        "ts": TS,
        "interval_s": 900,
        "carrier": "natural_gas",
        "energy_kwh": 10.0,
        "co2_kg": 2.0,
        "avg_power_kw": 40.0,
        "ef_kg_per_kwh": 0.2,
        "quality": "measured",
        "volume_m3": 1.0,
    },
    MessageKind.INTENSITY: {
        "ts": TS,
        "windows": {
            "1h": {
                "energy_kwh": 1.0,
                "co2_kg": 0.5,
                "output_units": 0.0,
                "kwh_per_unit": None,
                "kgco2_per_unit": None,
                "intensity_g_per_kwh": 500.0,
                "tce": 0.0001,
            }
        },
    },
    MessageKind.LEDGER: {
        "version": 1,
        "site": "plant-a",
        "gateway": "gw-01",
        "seq": 1,
        "period_start": TS - 3_600_000,
        "period_end": TS,
        "covers": [
            {
                "start": TS - 3_600_000,
                "end": TS,
                "energy": {"records": 2, "hash": "d" * 64},
                "site": {"records": 0, "hash": "e" * 64},
            }
        ],
        "prev": "0" * 64,
        "key": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
        "key_id": "56475aa75463474c",
        "certs": [],
        "sealed_ms": TS + 150_000,
        "sig": "s" * 86 + "==",
    },
    MessageKind.ALARM: {
        "ts": TS,
        "rule": "line-1-high",
        "condition": "power_above",
        "subject": "line-1-high",
        "state": "raised",
        "value": 52.5,
        "limit": 50.0,
        "since_ms": TS - 300_000,
        "text": "line-1-high: power 52.5 kW above 50 kW for 5 min",
        "active": [
            {
                "rule": "line-1-high",
                "condition": "power_above",
                "subject": "line-1-high",
                "value": 52.5,
                "limit": 50.0,
                "since_ms": TS - 300_000,
            }
        ],
    },
    MessageKind.EVENTS: {
        "ts": TS,
        "event": "glitch",
        "quantity": "energy_import_kwh",
        "value": 0.0,
        "limit_per_h": 110.4,
    },
}
ROWS = [(k, f) for k, spec in KINDS.items() for f in spec.record.fields]


def check(kind: MessageKind, doc: dict[str, Any]) -> BaseModel:
    return MODELS[kind].model_validate_json(json.dumps(doc), strict=True)


def error_types(kind: MessageKind, doc: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as e:
        check(kind, doc)
    return {err["type"] for err in e.value.errors()}


@pytest.mark.parametrize("kind", list(MessageKind))
def test_a_valid_payload_passes_and_the_model_has_the_rows_fields(kind: MessageKind) -> None:
    check(kind, VALID[kind])
    assert list(MODELS[kind].model_fields) == list(KINDS[kind].record.names)
    assert error_types(kind, {**VALID[kind], "extra": 1}) == {"extra_forbidden"}


@pytest.mark.parametrize(("kind", "f"), ROWS, ids=lambda x: getattr(x, "name", str(x)))
def test_presence_and_null_are_the_rows(kind: MessageKind, f: Field) -> None:
    absent = {k: v for k, v in VALID[kind].items() if k != f.name}
    if f.required:
        assert error_types(kind, absent) == {"missing"}
    else:
        check(kind, absent)
    if f.nullable or not f.required:
        check(kind, {**VALID[kind], f.name: None})
    else:
        assert error_types(kind, {**VALID[kind], f.name: None})


@pytest.mark.parametrize(("kind", "f"), ROWS, ids=lambda x: getattr(x, "name", str(x)))
def test_types_are_strict(kind: MessageKind, f: Field) -> None:
    wrong: Any = {JsonType.STRING: 1, JsonType.OBJECT: [], JsonType.ARRAY: {}}.get(f.type, "1")
    assert error_types(kind, {**VALID[kind], f.name: wrong})
    if f.choices:
        assert error_types(kind, {**VALID[kind], f.name: f.choices[0].upper()})
        for choice in f.choices:
            check(kind, {**VALID[kind], f.name: choice})


@pytest.mark.parametrize(
    ("kind", "f"),
    [(k, f) for k, f in ROWS if f.limits is not None],
    ids=lambda x: getattr(x, "name", str(x)),
)
def test_integer_bounds_are_the_rows_both_ends_included(kind: MessageKind, f: Field) -> None:
    assert f.limits is not None and f.limits.le is not None
    lo = f.limits.ge if f.limits.ge is not None else f.limits.gt + 1  # type: ignore[operator]
    if f.name != "ts":  # ts has its own window after the model (TS_MIN_MS)
        check(kind, {**VALID[kind], f.name: lo})
        check(kind, {**VALID[kind], f.name: f.limits.le})
    assert error_types(kind, {**VALID[kind], f.name: lo - 1})
    assert error_types(kind, {**VALID[kind], f.name: f.limits.le + 1})  # type: ignore[operator]


@pytest.mark.parametrize("name", [f.name for f in ENERGY.stored(JsonType.NUMBER)])
def test_energy_numbers_are_plausible_up_to_their_interval_range(name: str) -> None:
    lo, hi = energy_ranges(900)[name]
    doc = {**VALID[MessageKind.ENERGY], "ef_kg_per_kwh": 0.2}
    check(MessageKind.ENERGY, {**doc, name: hi})
    check(MessageKind.ENERGY, {**doc, name: lo})
    with pytest.raises(ValidationError) as e:
        check(MessageKind.ENERGY, {**doc, name: hi * 2 + 1})
    (err,) = e.value.errors()
    assert err["type"] == "implausible"
    assert err["msg"].endswith(
        f"is outside the plausible range [{lo:g}, {hi:g}] for a 900 s interval"
    )


def test_window_numbers_are_plausible_up_to_their_windows_range() -> None:
    hi = WINDOW_RANGES["1h"]["energy_kwh"][1]
    doc = VALID[MessageKind.INTENSITY]
    window = doc["windows"]["1h"]
    check(MessageKind.INTENSITY, {**doc, "windows": {"1h": {**window, "energy_kwh": hi}}})
    with pytest.raises(
        ValidationError, match=r"windows\.1h\.energy_kwh = 1000000000\.0 is outside"
    ):
        check(MessageKind.INTENSITY, {**doc, "windows": {"1h": {**window, "energy_kwh": 1e9}}})
    assert error_types(MessageKind.INTENSITY, {**doc, "windows": {"2h": window}})


def test_values_are_canonical_quantities_each_named_implausible_once_and_null() -> None:
    doc = VALID[MessageKind.MEASUREMENTS]
    with pytest.raises(ValidationError, match="'q0' is not a canonical quantity"):
        check(MessageKind.MEASUREMENTS, {**doc, "values": {"q0": 1.0}})
    with pytest.raises(ValidationError, match=r"values\.voltage_l1_v = 3000000\.0 is outside"):
        check(MessageKind.MEASUREMENTS, {**doc, "values": {"voltage_l1_v": 3e6}})
    nulled = {**doc, "values": {"voltage_l1_v": None}}
    MeasurementsModel.model_validate({**nulled, "implausible": ["voltage_l1_v"]})
    for named in (["voltage_l1_v", "voltage_l1_v"], ["active_power_kw"]):
        with pytest.raises(ValidationError, match="implausible: "):
            check(MessageKind.MEASUREMENTS, {**doc, "implausible": named})
