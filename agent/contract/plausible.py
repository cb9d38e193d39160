"""Plausible ranges: the numbers no meter and no plant can produce. Part of the contract.

The bridge refuses a message holding a number outside its range (reason
``implausible``): such a number is a broken meter, a unit mistake or a hostile
publisher, and once written it poisons every sum over it. The ranges are
generous on purpose, "impossible" rather than "unusual" (the gateway's profiles
null the unusual), and docs/influxdb.md gives each one with its reason. The
record tables (:mod:`agent.contract.records`) give each number its range from
these constants; the models and the bridge's fast path read those tables.

Pure data: the bridge imports it, so it imports nothing but the vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agent.contract.vocab import Window
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
WINDOW_HOURS: Mapping[str, float] = MappingProxyType(
    {
        Window.MIN_1: 1 / 60,
        Window.MIN_15: 0.25,
        Window.HOUR_1: 1.0,
        Window.HOUR_24: 24.0,
        Window.TODAY: 25.0,
        Window.MONTH: 745.0,
    }
)

Range = tuple[float, float]


@dataclass(frozen=True)
class PerHour:
    """A bound that grows with the time a record covers: ``sign * (rate * hours) * factor``.

    In that order, so each bound is the same float it always was (``e = POWER_MAX_KW * h``,
    then ``e * EF_MAX_KG_PER_KWH``): a value on the edge is accepted as before.
    """

    rate: float
    factor: float = 1.0
    sign: float = 1.0

    def at(self, hours: float) -> float:
        return self.sign * (self.rate * hours * self.factor)

    def __neg__(self) -> PerHour:
        return PerHour(self.rate, self.factor, -self.sign)


#: A number's plausible range: fixed ends, or ends that scale with the record's span.
Bounds = tuple[float | PerHour, float | PerHour]


def resolve(bounds: Bounds, hours: float | None) -> Range:
    """The range of a record covering ``hours`` (None: a record without a span)."""
    return _end(bounds[0], hours), _end(bounds[1], hours)


def _end(bound: float | PerHour, hours: float | None) -> float:
    if not isinstance(bound, PerHour):
        return bound
    if hours is None:
        raise ValueError("a per-hour bound needs the record's span")
    return bound.at(hours)


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


def outside(where: str, value: float, bounds: Range) -> str | None:
    """Why ``value`` is implausible, or None when it lies within ``bounds`` (inclusive)."""
    if bounds[0] <= value <= bounds[1]:
        return None
    return f"{where} = {value!r} is outside the plausible range [{bounds[0]:g}, {bounds[1]:g}]"
