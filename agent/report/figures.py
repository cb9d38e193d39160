"""The report's figures from a stream of energy rows: plain arithmetic, no I/O.

No double counting: totals are the tree's roots (a device without a parent),
per carrier; the breakdowns are the children and each parent's unmetered rest
(``unmetered_kwh``: its own energy minus its children's). Every interval is
placed in local time by its start (the site's zone), so days, hours and tariff
bands are the plant's own.

Scope 1 is the CO2 of gas burned on site, scope 2 that of purchased electricity,
location-based: each record carries the factor it was computed with, and the
hourly table shows the factor of every hour (kWh-weighted when it changed within
one). Standard coal (GB/T 2589, equivalent value) uses the config's coefficients.

The arithmetic runs on each device's quarter-hour sums (:class:`Quarter`), read
from the history's rollup or made from records one by one with the rollup's own
additions (:func:`agent.report.sources.quarters_of`): the same figures to the bit
from either, and from every source. A quarter is placed by the quarter hour its
intervals start in; only intervals of at most 15 minutes make the peak demand
(the block of their start, kWh x 4).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from agent.history import rollup as R
from agent.history.rollup import QUARTER_MS, Quarter
from agent.report.period import Period
from agent.report.sources import EnergyRow, quarters_of
from agent.report.tariff import Band, Tariff

__all__ = ["QUARTER_MS"]
ELECTRICITY, GAS, PRODUCTION = "electricity", "natural_gas", "production"


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    name: str | None
    carrier: str
    parent: str | None
    #: 0 for a root, 1 for its children, ...
    level: int


@dataclass(frozen=True)
class Factors:
    """Standard-coal coefficients, kgce per kWh of electricity and per m3 of gas."""

    kgce_per_kwh: float
    kgce_per_m3: float


@dataclass(frozen=True)
class Group:
    """A line or a product of the config: its meters and its production counters."""

    id: str
    name: str | None
    devices: frozenset[str]
    counters: frozenset[str]


@dataclass
class DeviceSums:
    kwh: float = 0.0
    m3: float = 0.0
    units: float = 0.0
    co2_kg: float = 0.0
    unmetered_kwh: float = 0.0
    has_unmetered: bool = False
    records: int = 0
    covered_s: float = 0.0
    interpolated_s: float = 0.0
    interpolated_kwh: float = 0.0


@dataclass
class DaySums:
    electricity_kwh: float = 0.0
    gas_m3: float = 0.0
    gas_kwh: float = 0.0
    scope1_kg: float = 0.0
    scope2_kg: float = 0.0
    units: float = 0.0
    cost: float = 0.0


@dataclass
class GroupSums:
    #: The group lists meters (a product counted by counters only has no energy).
    metered: bool = True
    kwh: float = 0.0
    co2_kg: float = 0.0
    units: float = 0.0


@dataclass
class Figures:
    period: Period
    devices: Mapping[str, DeviceInfo]
    factors: Factors
    per_device: dict[str, DeviceSums]
    days: dict[dt.date, DaySums]
    #: (local day, local hour) -> [kWh, kg CO2] of root electricity.
    hours: dict[tuple[dt.date, int], list[float]]
    #: Root electricity kWh by 15-minute interval (index: ts // QUARTER_MS of its start).
    quarters: dict[int, float]
    #: (device, local day) -> seconds covered by readings / interpolated.
    coverage: dict[tuple[str, dt.date], list[float]]
    groups: dict[str, GroupSums]
    bands: dict[Band, float]
    #: Devices found in the records but not in the config (counted as roots).
    unknown: set[str] = field(default_factory=set)
    #: Intervals longer than 15 minutes: no peak demand from them.
    long_intervals: bool = False

    # --- totals --------------------------------------------------------------------

    def _roots(self, carrier: str) -> list[DeviceSums]:
        return [
            s
            for d, s in self.per_device.items()
            if self.info(d).parent is None and self.info(d).carrier == carrier
        ]

    def info(self, device: str) -> DeviceInfo:
        known = self.devices.get(device)
        return known if known is not None else DeviceInfo(device, None, "", None, 0)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.per_device.values())

    def totals(self) -> dict[str, float | None]:
        """The headline figures, by name; None where they cannot be worked out."""
        el = self._roots(ELECTRICITY)
        gas = self._roots(GAS)
        prod = self._roots(PRODUCTION)
        kwh = sum((s.kwh for s in el), 0.0)
        m3 = sum((s.m3 for s in gas), 0.0)
        gas_kwh = sum((s.kwh for s in gas), 0.0)
        scope1 = sum((s.co2_kg for s in gas), 0.0)
        scope2 = sum((s.co2_kg for s in el), 0.0)
        units = sum((s.units for s in prod), 0.0)
        kgce = kwh * self.factors.kgce_per_kwh + m3 * self.factors.kgce_per_m3
        energy = kwh + gas_kwh
        co2 = scope1 + scope2
        peak = self.peak()

        def per_unit(x: float) -> float | None:
            return x / units if units > 0 else None

        avg_kw = kwh / self.period.hours if self.period.hours else 0.0
        return {
            "electricity_import_kwh": kwh,
            "electricity_net_kwh": kwh,
            "gas_m3": m3,
            "gas_kwh": gas_kwh,
            "energy_kwh": energy,
            "kgce": kgce,
            "tce": kgce / 1000.0,
            "scope1_kg": scope1,
            "scope2_kg": scope2,
            "co2_kg": co2,
            "output_units": units,
            "kwh_per_unit": per_unit(energy),
            "kgce_per_unit": per_unit(kgce),
            "kgco2_per_unit": per_unit(co2),
            "average_kw": avg_kw,
            "peak_kw": None if peak is None else peak[0],
            "load_factor": None if peak is None or peak[0] <= 0 else avg_kw / peak[0],
            "coverage": self.coverage_share(),
            "interpolated_share": self.interpolated_share(),
            "missing_share": self.missing_share(),
        }

    def peak(self, month: tuple[int, int] | None = None) -> tuple[float, int] | None:
        """The highest 15-minute demand (kW) and its start (Unix ms), in a calendar month
        if given; None when no interval of at most 15 minutes was recorded."""
        best: tuple[float, int] | None = None
        for q, kwh in self.quarters.items():
            start = q * QUARTER_MS
            if month is not None:
                t = dt.datetime.fromtimestamp(start / 1000, self.period.zone)
                if (t.year, t.month) != month:
                    continue
            kw = kwh * 4.0
            if best is None or kw > best[0] or (kw == best[0] and start < best[1]):
                best = (kw, start)
        return best

    def coverage_share(self) -> float:
        """Seconds covered by readings (measured, not interpolated) over the seconds of the
        period, all devices of the config that have records."""
        span_s = self.period.hours * 3600
        devices = [d for d in self.devices if d in self.per_device] or list(self.devices)
        if not devices or span_s <= 0:
            return 0.0
        covered = sum(
            min(self.per_device[d].covered_s, span_s) for d in devices if d in self.per_device
        )
        return covered / (span_s * len(devices))

    def missing_share(self) -> float:
        """Time neither measured nor interpolated (no record, a gap, a reset) over the
        period's time, the config's devices that have records."""
        span_s = self.period.hours * 3600
        sums = [s for d, s in self.per_device.items() if d in self.devices]
        if not sums or span_s <= 0:
            return 0.0
        seen = sum(min(s.covered_s + s.interpolated_s, span_s) for s in sums)
        return 1 - seen / (span_s * len(sums))

    def interpolated_share(self) -> float:
        """The share of the roots' energy that was interpolated over a polling gap."""
        roots = self._roots(ELECTRICITY) + self._roots(GAS)
        total = sum(s.kwh for s in roots)
        return sum(s.interpolated_kwh for s in roots) / total if total > 0 else 0.0

    def levels(self) -> list[tuple[int, float, float]]:
        """Per tree level: electricity metered by that level's meters, and the
        unmetered rest of the level above (its meters' own minus their children's)."""
        metered: dict[int, float] = defaultdict(float)
        unmetered: dict[int, float] = defaultdict(float)
        for d, s in self.per_device.items():
            info = self.info(d)
            if info.carrier != ELECTRICITY:
                continue
            metered[info.level] += s.kwh
            if s.has_unmetered:
                unmetered[info.level + 1] += s.unmetered_kwh
        top = max([*metered, *unmetered], default=-1)
        return [(lv, metered[lv], unmetered[lv]) for lv in range(top + 1)]


def tree(devices: Sequence[tuple[str, str | None, str, str | None]]) -> dict[str, DeviceInfo]:
    """DeviceInfo by id from (id, name, carrier, parent), with each device's level."""
    parents = {d[0]: d[3] for d in devices}

    def level(did: str) -> int:
        n, cur = 0, parents.get(did)
        while cur is not None and n < len(parents):
            n, cur = n + 1, parents.get(cur)
        return n

    return {
        d: DeviceInfo(d, name, carrier, parent, level(d)) for d, name, carrier, parent in devices
    }


class _Clock:
    """Local (day, hour, month) of an instant, cached by 15 minutes: every zone's offset
    is a whole number of quarter hours, so one lookup serves a quarter's records."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.cache: dict[int, tuple[dt.date, int, int]] = {}

    def local(self, ms: int) -> tuple[dt.date, int, int]:
        q = ms // QUARTER_MS
        hit = self.cache.get(q)
        if hit is None:
            t = dt.datetime.fromtimestamp(q * 900, self.zone)
            hit = self.cache[q] = (t.date(), t.hour, t.month)
        return hit


def compute(
    rows: Iterable[EnergyRow],
    period: Period,
    devices: Mapping[str, DeviceInfo],
    factors: Factors,
    *,
    groups: Sequence[Group] = (),
    tariff: Tariff | None = None,
    ordered: bool = False,
) -> Figures:
    """The figures of ``rows`` (the period's, each (device, ts) once), summed by quarter
    hour first as the history's rollup is (:func:`quarters_of`); ``ordered``: the rows
    come in ts order (else they are sorted first)."""
    return compute_quarters(
        quarters_of(rows, ordered=ordered), period, devices, factors, groups=groups, tariff=tariff
    )


def compute_quarters(
    quarters: Iterable[Quarter],
    period: Period,
    devices: Mapping[str, DeviceInfo],
    factors: Factors,
    *,
    groups: Sequence[Group] = (),
    tariff: Tariff | None = None,
) -> Figures:
    """The figures of the period's quarter-hour sums, in (bq, sq, device, carrier) order."""
    fig = Figures(
        period, devices, factors, defaultdict(DeviceSums), defaultdict(DaySums),
        defaultdict(lambda: [0.0, 0.0]), defaultdict(float), defaultdict(lambda: [0.0, 0.0]),
        {g.id: GroupSums(metered=bool(g.devices)) for g in groups}, defaultdict(float),
    )  # fmt: skip
    clock = _Clock(period.zone)
    for q in quarters:
        _add(fig, q, clock, groups, tariff)
    return fig


def _add(
    fig: Figures, q: Quarter, clock: _Clock, groups: Sequence[Group], tariff: Tariff | None
) -> None:
    """One device's quarter hour, placed by the quarter its intervals start in."""
    info = fig.devices.get(q.device)
    if info is None:
        fig.unknown.add(q.device)
        info = DeviceInfo(q.device, None, q.carrier, None, 0)
        fig.devices = {**fig.devices, q.device: info}
    v = q.sums
    kwh, co2, units = v[R.KWH], v[R.CO2], v[R.UNITS]
    day, hour, month = clock.local(q.sq * QUARTER_MS)
    s = fig.per_device[q.device]
    s.records += int(v[R.RECORDS])
    s.kwh += kwh
    s.co2_kg += co2
    s.m3 += v[R.M3]
    s.units += units
    if v[R.N_UNMETERED]:
        s.unmetered_kwh += v[R.UNMETERED]
        s.has_unmetered = True
    cov = fig.coverage[(q.device, day)]
    s.covered_s += v[R.COVERED_S]
    cov[0] += v[R.COVERED_S]
    s.interpolated_s += v[R.INTERP_S]
    s.interpolated_kwh += v[R.INTERP_KWH]
    cov[1] += v[R.INTERP_S]
    for g in groups:
        gs = fig.groups[g.id]
        if q.device in g.devices:
            gs.kwh += kwh
            gs.co2_kg += co2
        if q.device in g.counters:
            gs.units += units
    if info.parent is not None:
        return
    d = fig.days[day]
    if info.carrier == ELECTRICITY:
        d.electricity_kwh += kwh
        d.scope2_kg += co2
        h = fig.hours[(day, hour)]
        h[0] += kwh
        h[1] += co2
        if v[R.N_SHORT]:
            fig.quarters[q.sq] += v[R.SHORT_KWH]
        if v[R.N_LONG]:
            fig.long_intervals = True
        if tariff is not None:
            band = tariff.band(month, hour)
            fig.bands[band] += kwh
            d.cost += kwh * tariff.price(band)
    elif info.carrier == GAS:
        d.gas_m3 += v[R.M3]
        d.gas_kwh += kwh
        d.scope1_kg += co2
    elif info.carrier == PRODUCTION:
        d.units += units


@dataclass(frozen=True)
class Cost:
    #: band -> (kWh, price per kWh, cost)
    energy: dict[Band, tuple[float, float, float]]
    #: (year, month) -> (peak kW, charge per kW·month, share of the month, cost)
    demand: dict[tuple[int, int], tuple[float, float, float, float]]
    currency: str

    @property
    def total(self) -> float:
        return sum(c for _, _, c in self.energy.values()) + sum(c for *_, c in self.demand.values())


def costs(fig: Figures, tariff: Tariff) -> Cost:
    """Energy charges by band, and the demand charge of every calendar month the period
    touches: that month's own 15-minute peak in the period, times the charge, times the
    share of the month's days inside the period (a week pays a quarter of a month)."""
    energy = {
        band: (kwh, tariff.price(band), kwh * tariff.price(band))
        for band, kwh in sorted(fig.bands.items(), key=lambda kv: list(Band).index(kv[0]))
    }
    demand: dict[tuple[int, int], tuple[float, float, float, float]] = {}
    rate = tariff.model.demand_charge_per_kw_month
    if rate is not None:
        days = fig.period.days()
        for ym in fig.period.months():
            peak = fig.peak(ym)
            if peak is None:
                continue
            inside = sum(1 for d in days if (d.year, d.month) == ym)
            first = dt.date(ym[0], ym[1], 1)
            length = ((first + dt.timedelta(days=32)).replace(day=1) - first).days
            share = inside / length
            demand[ym] = (peak[0], rate, share, peak[0] * rate * share)
    return Cost(energy, demand, tariff.model.currency)
