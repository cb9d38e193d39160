"""Plausible ranges: the numbers no meter and no plant can produce. Part of the contract.

The bridge refuses a message holding a number outside its range (reason
``implausible``): such a number is a broken meter, a unit mistake or a hostile
publisher, and once written it poisons every sum over it. The ranges are
generous on purpose, "impossible" rather than "unusual" (the gateway's profiles
null the unusual), and docs/influxdb.md gives each one with its reason. The
payload models (:mod:`agent.payloads`) and the bridge's fast path read these
same tables, so there is one definition.

Pure data: the bridge imports it, so it imports nothing but the vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

from drivers.quantities import Quantity

#: 100 GW: four times the largest power station on earth (Three Gorges, 22.5 GW).
POWER_MAX_KW = 1e8
#: 2 MV: nearly twice the highest transmission voltage in service (1.1 MV UHV DC).
VOLTAGE_MAX_V = 2e6
#: 1 MA: twice the current of an aluminium smelter's potline (about 500 kA). Signed:
#: some meters give the current the sign of the power flow.
CURRENT_MAX_A = 1e6
#: ``|P/S|`` is at most 1; meters that fold the quadrant into the sign and an offset of 1
#: (Schneider's -2..2 encoding) stay within 2.
POWER_FACTOR_MAX = 2.0
#: Grids run at 50/60 Hz, aircraft and ship systems at 400 Hz.
FREQUENCY_MAX_HZ = 1000.0
#: A cumulative register (kWh, kvarh, m3): a century at POWER_MAX_KW is 8.8e13 kWh.
COUNTER_MAX = 1e14
#: Production counters count whatever the plant counts (pieces, kg, grams).
UNITS_COUNTER_MAX = 1e18
#: 80 times the dirtiest grid (about 1.2 kg CO2/kWh, lignite); factors are >= 0.
EF_MAX_KG_PER_KWH = 100.0
#: Twice every gas pipeline into Europe together (about 4.6e7 m3/h).
GAS_FLOW_MAX_M3_H = 1e8
#: Units per hour, in the smallest unit a plant might count (grams of cement: 5e8/h).
UNITS_MAX_PER_H = 1e12
#: Tonnes of standard coal per kWh: 8,000 times the electricity coefficient (0.1229 kg).
TCE_MAX_T_PER_KWH = 1.0
#: g CO2/kWh: a window's intensity is an average of the factors it used.
INTENSITY_MAX_G_PER_KWH = 1000 * EF_MAX_KG_PER_KWH
#: kWh or kg CO2 per unit: a month's ceiling over a billionth of a unit.
PER_UNIT_MAX = 1e22
#: Polls counted by a gateway: every integer up to 2^53 is exact in a float64 database
#: (VictoriaMetrics stores one), and a poll a millisecond takes 285,000 years to get there.
SEQ_MAX = 2**53
#: 2000-01-01T00:00Z. Earlier is a gateway clock that was never set; and ts 0 is "no
#: timestamp" to VictoriaMetrics, which would file the point under its own clock.
TS_MIN_MS = 946_684_800_000
#: The longest span each intensity window covers: 25 h on a DST day, 31 days + 1 h.
WINDOW_HOURS = {"1m": 1 / 60, "15m": 0.25, "1h": 1.0, "24h": 24.0, "today": 25.0, "month": 745.0}

Range = tuple[float, float]

_V: Range = (0.0, VOLTAGE_MAX_V)
_A: Range = (-CURRENT_MAX_A, CURRENT_MAX_A)
_P: Range = (-POWER_MAX_KW, POWER_MAX_KW)
_RANGE_OF_UNIT: dict[str, Range] = {
    "_v": _V,
    "_a": _A,
    "_kw": _P,
    "_kvar": _P,
    "_kva": _P,  # sign conventions for kvar and kVA differ between meters: magnitude only
    "_kwh": (0.0, COUNTER_MAX),
    "_kvarh": (0.0, COUNTER_MAX),
    "_m3": (0.0, COUNTER_MAX),
    "_hz": (0.0, FREQUENCY_MAX_HZ),
}
_RANGE_OF_NAME: dict[str, Range] = {
    Quantity.POWER_FACTOR.value: (-POWER_FACTOR_MAX, POWER_FACTOR_MAX),
    Quantity.OUTPUT_UNITS.value: (0.0, UNITS_COUNTER_MAX),
}


def _value_range(q: Quantity) -> Range:
    """By name, else by the unit the name ends with (the vocabulary names every unit)."""
    if q.value in _RANGE_OF_NAME:
        return _RANGE_OF_NAME[q.value]
    return _RANGE_OF_UNIT["_" + q.value.rsplit("_", 1)[1]]


#: Every canonical quantity and its plausible range: the only keys ``values`` may have.
VALUE_RANGES: Mapping[str, Range] = MappingProxyType({q.value: _value_range(q) for q in Quantity})


@functools.lru_cache(maxsize=64)
def energy_ranges(interval_s: int) -> Mapping[str, Range]:
    """An energy record's ranges scale with its interval (an average power, not a total)."""
    h = interval_s / 3600
    e = POWER_MAX_KW * h
    return MappingProxyType(
        {
            "energy_kwh": (0.0, e),
            "co2_kg": (0.0, e * EF_MAX_KG_PER_KWH),
            "avg_power_kw": (0.0, POWER_MAX_KW),
            "ef_kg_per_kwh": (0.0, EF_MAX_KG_PER_KWH),
            "volume_m3": (0.0, GAS_FLOW_MAX_M3_H * h),
            "units": (0.0, UNITS_MAX_PER_H * h),
            # own minus children: negative when children over-read, never beyond the ceiling
            "unmetered_kwh": (-e, e),
        }
    )


def _window_ranges(h: float) -> Mapping[str, Range]:
    e = POWER_MAX_KW * h
    return MappingProxyType(
        {
            "energy_kwh": (0.0, e),
            "co2_kg": (0.0, e * EF_MAX_KG_PER_KWH),
            "output_units": (0.0, UNITS_MAX_PER_H * h),
            "kwh_per_unit": (0.0, PER_UNIT_MAX),
            "kgco2_per_unit": (0.0, PER_UNIT_MAX),
            "intensity_g_per_kwh": (0.0, INTENSITY_MAX_G_PER_KWH),
            "tce": (0.0, e * TCE_MAX_T_PER_KWH),
        }
    )


WINDOW_RANGES: Mapping[str, Mapping[str, Range]] = MappingProxyType(
    {w: _window_ranges(h) for w, h in WINDOW_HOURS.items()}
)


def outside(where: str, value: float, bounds: Range) -> str | None:
    """Why ``value`` is implausible, or None when it lies within ``bounds`` (inclusive)."""
    if bounds[0] <= value <= bounds[1]:
        return None
    return f"{where} = {value!r} is outside the plausible range [{bounds[0]:g}, {bounds[1]:g}]"
