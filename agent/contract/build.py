"""Payloads built from the record tables: key order, rounding and presence as listed.

:func:`build` is the one builder: it takes the values a producer computed and
lays them out as the record's rows say (numbers rounded to :data:`DIGITS`,
enums as their values, optional keys only when given). The functions below it
add the few rules a record has beyond its rows: an energy record's average
power, the ratios of a window, the nulling of an implausible reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Literal

from agent.contract.plausible import VALUE_RANGES
from agent.contract.records import (
    ACTIVE_ALARM,
    ALARM,
    DEVICE_STATUS,
    ENERGY,
    EVENTS,
    GATEWAY_STATUS,
    INTENSITY,
    WINDOW,
)
from agent.contract.schema import JsonType, Record
from agent.contract.vocab import Correction

#: Published numbers are rounded to 1e-9 of their unit (a micro-watt-hour of energy):
#: far below any meter's resolution, and no 0.5999999999999943 in a report.
DIGITS = 9


def num(x: float) -> float:
    return round(x, DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def opt(x: float | None) -> float | None:
    return None if x is None else num(x)


def ratio(num_: float, den: float, scale: float = 1.0) -> float | None:
    """``num/den * scale``, or None (JSON null) when the denominator is zero."""
    if den == 0 or not math.isfinite(den):
        return None
    return num_ / den * scale


#: How a field's value is written: as given, a number rounded, a number or null, a string.
_AS_GIVEN, _NUMBER, _NUMBER_OR_NULL, _TEXT = range(4)
_MISSING = object()


_Plan = tuple[tuple[str, int, bool], ...]
#: Each record's plan, made at its first payload (a plain dict: the fastest lookup).
_PLANS: dict[Record, _Plan] = {}


def _plan(record: Record) -> _Plan:
    """Per field: its name, how its value is written, whether the key is required."""
    out = []
    for f in record.fields:
        if f.type is JsonType.NUMBER:
            how = _NUMBER_OR_NULL if f.nullable else _NUMBER
        else:
            how = _TEXT if f.type is JsonType.STRING else _AS_GIVEN
        out.append((f.name, how, f.required))
    plan = _PLANS[record] = tuple(out)
    return plan


def build(record: Record, given: Mapping[str, Any]) -> dict[str, Any]:
    """The payload of ``record`` from ``given`` (every required field, optional ones
    when present); a key the record does not have is a programming error.

    On every published record's way (a replay builds millions): one pass over the
    rows, :func:`num` inlined.
    """
    out: dict[str, Any] = {}
    for name, how, required in _PLANS.get(record) or _plan(record):
        v = given.get(name, _MISSING)
        if v is _MISSING:
            if required:
                raise KeyError(f"{record.name}: {name} is required")
        elif how == _NUMBER:
            out[name] = round(v, DIGITS) + 0.0
        elif how == _NUMBER_OR_NULL:
            out[name] = None if v is None else round(v, DIGITS) + 0.0
        elif how == _TEXT and isinstance(v, Enum):
            out[name] = v.value
        else:
            out[name] = v
    if len(out) != len(given):
        raise KeyError(f"{record.name} has no field {sorted(set(given) - set(out))}")
    return out


def encode(payload: dict[str, Any]) -> bytes:
    """The bytes on the wire: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


# --- the records' own rules ---------------------------------------------------------------


def gateway_status_payload(
    state: Literal["online", "offline"], ts: int, version: str
) -> dict[str, Any]:
    return build(GATEWAY_STATUS, {"state": state, "ts": ts, "version": version})


def device_status_payload(
    state: Literal["ok", "error"], error: str | None, ts: int
) -> dict[str, Any]:
    return build(DEVICE_STATUS, {"state": state, "error": error, "ts": ts})


def measurements_payload(
    ts: int,
    seq: int,
    values: dict[str, float | None],
    implausible: Sequence[str] = (),
) -> dict[str, Any]:
    """One poll. ``implausible`` names the quantities the meter returned outside their
    plausible range (a 3.4e38 V voltage, a power factor of 230): their ``values`` are
    null, and this says why, so a missing value is never mistaken for a meter that
    did not answer. The key is present only when the list is not empty.

    A value outside the contract's own range (:data:`VALUE_RANGES`) is nulled and
    named here too, whatever the profile's limits: the bridge would refuse the whole
    poll for it, losing the good values with the bad one."""
    flagged = set(implausible)
    checked = dict(values)
    for key, value in values.items():
        bounds = VALUE_RANGES.get(key)
        # (NaN and inf are left to encode(), which refuses them: not numbers at all.)
        if value is None or bounds is None or not math.isfinite(value):
            continue
        if not bounds[0] <= value <= bounds[1]:
            checked[key] = None
            flagged.add(key)
    # Written out rather than through build(): one per poll, the most frequent payload.
    # tests/unit/contract/test_builders.py holds it to the MEASUREMENTS rows.
    out: dict[str, Any] = {"ts": ts, "seq": seq, "values": checked}
    if flagged:
        out["implausible"] = sorted(flagged)
    return out


def energy_payload(**given: Any) -> dict[str, Any]:
    """An interval's record from its fields by name (agent/contract/records.py
    ``ENERGY``); ``avg_power_kw`` is worked out from the energy and the interval."""
    given["avg_power_kw"] = given["energy_kwh"] * 3600.0 / given["interval_s"]
    return build(ENERGY, given)


def event_payload(
    ts: int, event: Correction, quantity: str, value: float, limit_per_h: float
) -> dict[str, Any]:
    """One correction of a device's readings, with the glitch limit it was judged by. A
    value outside its quantity's range (a garbage 3.4e38 in a replayed log) is null, as
    in a measurements payload: the bridge would refuse the whole message for it, and
    the event is the evidence (the limit, always there, keeps it a point)."""
    lo, hi = VALUE_RANGES[quantity]
    shown = value if lo <= value <= hi else None
    given = {"ts": ts, "event": event, "quantity": quantity, "value": shown}
    return build(EVENTS, {**given, "limit_per_h": limit_per_h})


def window_values(
    energy_kwh: float,
    co2_kg: float,
    units: float,
    kgce: float,
    coverage: tuple[float, float, float] = (1.0, 0.0, 0.0),
    missing: tuple[int, list[str]] = (0, []),
    net_import_kwh: float | None = None,
) -> dict[str, Any]:
    """One window of an intensity record from its sums, and its coverage: the shares
    measured, interpolated and missing; how many counted meters miss some of it, and
    the first of them by name. ``net_import_kwh`` (None: left out) where the site can
    export."""
    measured, interpolated, absent = coverage
    net = {} if net_import_kwh is None else {"net_import_kwh": net_import_kwh}
    return build(
        WINDOW,
        {
            "energy_kwh": energy_kwh,
            **net,
            "co2_kg": co2_kg,
            "output_units": units,
            "kwh_per_unit": ratio(energy_kwh, units),
            "kgco2_per_unit": ratio(co2_kg, units),
            "intensity_g_per_kwh": ratio(co2_kg, energy_kwh, 1000.0),
            "tce": kgce / 1000.0,
            "measured_share": measured,
            "interpolated_share": interpolated,
            "missing_share": absent,
            "missing_count": missing[0],
            "missing_devices": missing[1],
        },
    )


def intensity_payload(ts: int, windows: dict[str, dict[str, Any]], rev: int = 0) -> dict[str, Any]:
    return build(INTENSITY, {"ts": ts, "rev": rev, "windows": windows})


def alarm_payload(
    ts: int,
    change: Mapping[str, Any],
    state: Literal["raised", "cleared"],
    text: str,
    active: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One raise or clear: ``change`` and each of ``active`` hold the active-alarm rows
    (rule, condition, subject, value, limit, since_ms)."""
    rows = [build(ACTIVE_ALARM, a) for a in active]
    return build(ALARM, {"ts": ts, **change, "state": state, "text": text, "active": rows})
