"""The site's own series: every closed one-minute slot of the counted meters, summed.

The engine's ring holds the last 1,536 slots of each channel, which is enough for
the live numbers but not for a window computed late: an outage that ends 30 hours
after it began closes its slots all at once, and by then the ring has moved past
the start of the day they belong to. So the site keeps what it needs itself, from
the slot rows the engine returns (never from the ring):

* per slot, the site's sums (kWh, kg CO2, units, kgce, net electricity import)
  and coverage (ms measured and interpolated, summed over the counted channels;
  ms covered per channel),
  kept from :meth:`SiteSeries.keep_from` on: the earliest slot a window may still
  need (a day and a margin before the oldest slot a channel may still close);
* per local day, the same sums, kept for the month (and a margin).

A slot row is added where it belongs, whenever it comes: a late one lands in
its own slot and its own day, so every window that covers it is exact when it
is computed again. The arrays grow with an outage and shrink once it is over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from itertools import pairwise
from typing import Any

import numpy as np

from agent.contract.vocab import Carrier
from agent.core.calendar import SiteCalendar
from agent.core.channels import SLOT_MS
from agent.core.devices import SiteWeights
from agent.core.engine import Slots
from agent.core.factors import EmissionFactors
from agent.core.snapshot import Snapshot, SnapshotError

#: Columns of a slot's (and a day's) sums, then one column per counted channel: ms covered.
ENERGY, CO2, UNITS, KGCE, MEASURED, INTERPOLATED, NET = range(7)
SUMS = 7
#: The sums the first series format saved (without NET: it is saved on its own, so an
#: agent rolled back still reads the ``series`` it knows).
SUMS_V1 = 6
#: Slots a window may reach back from its end: a 25-hour local day (DST), and a margin.
REACH_SLOTS = 26 * 60
#: Finished days kept before the month of the oldest slot still needed.
DAY_MARGIN = 1


class SlotFactors:
    """Each slot's emission factor, that of the interval holding it: kept per interval
    start (a batch asks for the same interval's factor for each of its slots)."""

    def __init__(
        self,
        factors: EmissionFactors,
        interval_start: Callable[[np.ndarray], np.ndarray],
        interval_ms: int,
    ) -> None:
        self.factors = factors
        self._interval_start = interval_start
        self._interval_ms = interval_ms
        self._cache: dict[int, tuple[float, float]] = {}  # interval start slot: (el, gas)

    def of(self, s: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Each slot's emission factor for its channel's carrier (0 for production)."""
        out = np.zeros(s.size)
        static = self.factors.static(Carrier.ELECTRICITY)
        if static is not None:  # the same for every interval: none looked up
            out[group == 0] = static
            out[group == 1] = self.factors.static(Carrier.NATURAL_GAS)
            return out
        starts, at = np.unique(self._interval_start(s), return_inverse=True)
        f = np.array([self._interval(a) for a in starts.tolist()]).reshape(-1, 2)
        for g in (0, 1):  # electricity, gas
            here = group == g
            out[here] = f[at[here], g]
        return out

    def _interval(self, a: int) -> tuple[float, float]:
        """The (electricity, gas) factor of the interval starting at slot ``a``."""
        f = self._cache.get(a)
        if f is None:
            ms = a * SLOT_MS
            end = ms + self._interval_ms
            f = (
                self.factors.at(Carrier.ELECTRICITY, ms, end).value,
                self.factors.at(Carrier.NATURAL_GAS, ms, end).value,
            )
            self._cache[a] = f
        return f

    def forget_before(self, start: int) -> None:
        for a in [a for a in self._cache if a < start]:
            del self._cache[a]


class SiteSeries:
    """Slot and day sums of the channels that count in the site's windows."""

    def __init__(
        self,
        weights: SiteWeights,
        factors: EmissionFactors,
        calendar: SiteCalendar,
        interval_start: Callable[[np.ndarray], np.ndarray],
        interval_ms: int,
    ) -> None:
        self.weights = weights
        self.calendar = calendar
        counted = (weights.energy_kwh != 0) | (weights.units != 0) | (weights.kgce != 0)
        #: Channels counted in the site's windows, in channel order; their column offset.
        self.counted = np.flatnonzero(counted)
        #: Channels summed: the counted ones and root meters' export (net import only).
        self.summed = np.flatnonzero(counted | (weights.net_kwh != 0))
        self._column = np.full(len(weights.group), -1, dtype=np.int64)
        self._column[self.counted] = SUMS + np.arange(self.counted.size)
        self.width = SUMS + int(self.counted.size)
        self.base = 0  # slot of row 0
        self.data = np.zeros((0, self.width), dtype=np.float64)
        self.days: dict[int, np.ndarray] = {}  # local day's ordinal: sums
        self._keep_from: int | None = None
        self._factors = SlotFactors(factors, interval_start, interval_ms)
        self._day_starts = np.zeros(0, dtype=np.int64)  # slot of each local midnight
        self._day_ords = np.zeros(0, dtype=np.int64)
        self._version = 0  # one more with every change to the days
        self._month_cache: tuple[tuple[int, int], np.ndarray] | None = None
        #: The first slot whose NET is known (None: all are): a series restored from a
        #: file without it knows no net import before the restart.
        self.net_from: int | None = None

    # --- adding --------------------------------------------------------------------------

    def add(self, slots: Slots, *, by_slot: bool = False) -> None:
        """The slot rows of one engine call (any channels, any order); ``by_slot``: as
        if called once per slot, in slot order (see :func:`_add_by_slot`)."""
        w = self.weights
        col = self._column[slots.channel]
        # Export channels add to NET only: no coverage of their own (their meter's is).
        take = (col >= 0) | (w.net_kwh[slots.channel] != 0)
        if not take.any():
            return
        c, s, col = slots.channel[take], slots.slot[take], col[take]
        e = slots.energy[take]
        rows = np.zeros((s.size, self.width), dtype=np.float64)
        rows[:, ENERGY] = e * w.energy_kwh[c]
        rows[:, CO2] = e * w.co2[c] * self._factors.of(s, w.group[c])
        rows[:, UNITS] = e * w.units[c]
        rows[:, KGCE] = e * w.kgce[c]
        rows[:, NET] = e * w.net_kwh[c]
        cov = np.flatnonzero(col >= 0)
        rows[cov, MEASURED] = slots.measured_ms[take][cov]
        rows[cov, INTERPOLATED] = slots.interpolated_ms[take][cov]
        rows[cov, col[cov]] = rows[cov, MEASURED] + rows[cov, INTERPOLATED]
        self._reserve(int(s.min()), int(s.max()) + 1)
        ords = self._day_of(s)
        self._version += 1
        if by_slot:
            _add_by_slot(self.data, s - self.base, ords, rows, self.days)
            return
        np.add.at(self.data, s - self.base, rows)
        for d in np.unique(ords).tolist():
            day = self.days.setdefault(d, np.zeros(self.width))
            day += rows[ords == d].sum(axis=0)

    def _reserve(self, first: int, end: int) -> None:
        """Rows for slots [first, end): shift out what is no longer needed, then grow."""
        n = self.data.shape[0]
        if n == 0:
            self.base, self.data = first, np.zeros((max(end - first, 64), self.width))
            return
        if first >= self.base and end <= self.base + n:
            return
        lo = min(first, self.base)
        if self._keep_from is not None:
            lo = min(first, max(lo, self._keep_from))
        hi = max(end, self.base + n)
        size = hi - lo
        grown = np.zeros((max(size + size // 2, 64), self.width))
        a, b = max(lo, self.base), min(hi, self.base + n)
        if b > a:
            grown[a - lo : b - lo] = self.data[a - self.base : b - self.base]
        self.base, self.data = lo, grown

    def keep_from(self, slot: int) -> None:
        """No window will need slots before ``slot`` again (nor days before its month)."""
        self._keep_from = slot
        if slot - self.base > REACH_SLOTS:  # at most about once a day
            self._shrink(slot)
        month = self.calendar.local_date(slot * SLOT_MS).replace(day=1).toordinal()
        for d in [d for d in self.days if d < month - DAY_MARGIN]:
            del self.days[d]
            self._version += 1
        self._factors.forget_before(slot - REACH_SLOTS)

    def _shrink(self, slot: int) -> None:
        """Drop the rows before ``slot`` (an outage's, once no window needs them)."""
        kept = self.data[slot - self.base :]
        last = np.flatnonzero(kept.any(axis=1))
        n = int(last[-1]) + 1 if last.size else 0
        self.data = np.array(kept[: max(n + n // 2, 64)])
        self.base = slot

    def _day_of(self, s: np.ndarray) -> np.ndarray:
        """The local day (ordinal) each slot belongs to."""
        lo, hi = int(s.min()), int(s.max())
        starts = self._day_starts
        if not starts.size or lo < starts[0] or hi >= starts[-1]:
            first = self.calendar.local_date(
                min(lo, int(starts[0]) if starts.size else lo) * SLOT_MS
            )
            last = self.calendar.local_date(
                max(hi, int(starts[-1]) if starts.size else hi) * SLOT_MS
            )
            ords = np.arange(first.toordinal(), last.toordinal() + 2, dtype=np.int64)
            self._day_ords = ords
            self._day_starts = np.array(
                [self.calendar.day_start_ms(date.fromordinal(int(o))) // SLOT_MS for o in ords],
                dtype=np.int64,
            )
        idx = np.searchsorted(self._day_starts, s, side="right") - 1
        return self._day_ords[idx]

    # --- reading -------------------------------------------------------------------------

    def tail_sums(self, end: int, lengths: list[int]) -> np.ndarray:
        """Row i: the sums over the ``lengths[i]`` slots before ``end``; each slot summed
        once (the shorter windows are the start of the longer ones)."""
        out = np.zeros((len(lengths), self.width))
        acc = np.zeros(self.width)
        done = 0  # slots before end summed so far
        rows = self.data.shape[0]
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            n = lengths[i]
            a = min(max(end - n - self.base, 0), rows)
            b = min(max(end - done - self.base, 0), rows)
            if b > a:
                acc = acc + self.data[a:b].sum(axis=0)
            done = max(done, n)
            out[i] = acc
        return out

    def set_day(self, ordinal: int, sums: np.ndarray) -> None:
        self.days[ordinal] = sums
        self._version += 1

    def days_of_month_before(self, day: date) -> np.ndarray:
        """The sums of the local days of ``day``'s month before it (cached until a slot
        is added)."""
        key = (day.toordinal(), self._version)
        if self._month_cache is not None and self._month_cache[0] == key:
            return self._month_cache[1]
        first = day.replace(day=1).toordinal()
        out = np.zeros(self.width)
        for d, sums in self.days.items():
            if first <= d < day.toordinal():
                out += sums
        self._month_cache = (key, out)
        return out

    # --- snapshot ------------------------------------------------------------------------

    def net_known(self, first: int) -> bool:
        """The net import of a window from slot ``first`` on is known: all its slots were
        summed with their export."""
        return self.net_from is None or first >= self.net_from

    def save(self, snap: Snapshot, names: list[str]) -> None:
        """The slots a window may still need, the days, and the counted devices' names
        (``names``, in column order: a restore matches the coverage columns by them).
        The first format's arrays as they were; NET beside them (``series_net``,
        ``series_days_net``), and from which slot it is known."""
        lo = self.base
        if self._keep_from is not None:
            lo = max(lo, min(self._keep_from, self.base + self.data.shape[0]))
        rows = self.data[lo - self.base :]
        last = np.flatnonzero(rows.any(axis=1))
        rows = rows[: int(last[-1]) + 1] if last.size else rows[:0]
        snap.put("series_base", lo)
        snap.put("series_columns", names)
        snap.put_array("series", np.delete(rows, NET, axis=1))
        snap.put_array("series_net", rows[:, NET])
        days = sorted(self.days.items())
        snap.put("series_days", {str(d): np.delete(v, NET).tolist() for d, v in days})
        snap.put("series_days_net", {str(d): float(v[NET]) for d, v in days})
        snap.put("series_net_from", self.net_from)

    def restore_from(self, snap: Snapshot, names: list[str]) -> Callable[[], None] | None:
        """The series saved in ``snap``; None when the file predates it. A device counted
        now and not then has no coverage before the restart (missing); one counted then
        and not now leaves its sums in the site's (it was counted), its column goes."""
        if "series" not in snap.arrays:
            return None
        base = snap.value("series_base", int)
        saved = snap.value("series_columns", lambda v: [str(n) for n in v])
        rows = snap.arrays["series"]
        days = snap.value("series_days", _day_sums)
        if rows.ndim != 2 or rows.shape[1] != SUMS_V1 + len(saved):
            raise SnapshotError(f"{snap.path}: series of {rows.shape} for {len(saved)} devices")
        net = _net_of(snap, rows.shape[0])
        src = [SUMS_V1 + saved.index(n) if n in saved else -1 for n in names]

        def columns(a: np.ndarray, net: np.ndarray | float) -> np.ndarray:
            out = np.zeros((*a.shape[:-1], self.width))
            out[..., :SUMS_V1] = a[..., :SUMS_V1]
            out[..., NET] = net
            for j, k in enumerate(src):
                if k >= 0:
                    out[..., SUMS + j] = a[..., k]
            return out

        def restore() -> None:
            self.base = base
            self.data = columns(np.asarray(rows, dtype=np.float64), net[0])
            self.days = {
                d: columns(v, net[1].get(d, 0.0))
                for d, v in days.items()
                if v.size == len(saved) + SUMS_V1
            }
            self.net_from = net[2] if net[3] else self.data_end()
            self._version += 1

        return restore

    def data_end(self) -> int:
        """One past the last slot with any sums (the series' base when it has none)."""
        last = np.flatnonzero(self.data.any(axis=1))
        return self.base + (int(last[-1]) + 1 if last.size else 0)


def seed(
    series: SiteSeries,
    slots: Slots,
    ring_from: int,
    data_from: int,
    days: dict[date, tuple[float, float, float, float]],
) -> None:
    """A file of an earlier format: the slots its engine ring still holds (from
    ``ring_from`` on; the data began at ``data_from``), and the finished days it
    kept. A day with data before the ring's first slot is taken whole from the
    file, its coverage unknown and so counted as measured."""
    series.add(slots)
    for d, (energy, co2, units, kgce) in days.items():
        start = series.calendar.day_start_ms(d)
        if max(start // SLOT_MS, data_from) >= ring_from:
            continue  # all of its data is in the ring
        ms = series.calendar.day_start_ms(date.fromordinal(d.toordinal() + 1)) - start
        sums = np.zeros(series.width)
        sums[:SUMS] = (energy, co2, units, kgce, ms * series.counted.size, 0.0, 0.0)
        sums[SUMS:] = ms
        series.set_day(d.toordinal(), sums)
    series.net_from = series.data_end()  # the file had no export sums: known from here on


def _net_of(
    snap: Snapshot, n_rows: int
) -> tuple[np.ndarray | float, dict[int, float], int | None, bool]:
    """The saved NET column (per slot row, per day), the slot it is known from, and
    whether the file has it at all (a file without it: 0, known from the restart on)."""
    net = snap.arrays.get("series_net")
    if net is None:
        return 0.0, {}, None, False
    if net.shape != (n_rows,):
        raise SnapshotError(f"{snap.path}: series_net of {net.shape} for {n_rows} rows")
    days = snap.value("series_days_net", lambda v: {int(d): float(x) for d, x in v.items()})
    net_from = snap.value("series_net_from", lambda v: None if v is None else int(v))
    return np.asarray(net, dtype=np.float64), days, net_from, True


def _add_by_slot(
    data: np.ndarray,
    at: np.ndarray,
    ords: np.ndarray,
    rows: np.ndarray,
    days: dict[int, np.ndarray],
) -> None:
    """Rows of many slots (``at``: their rows in ``data``, ascending, a slot's rows
    together) added as :meth:`SiteSeries.add` called once per slot adds them, to the
    last bit (replay's bulk lane): a slot's rows in turn (``sum(axis=0)`` adds them so;
    np.add.reduceat would add pairwise), then the slots one after the other onto the day."""
    starts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
    k = rows.shape[0] // starts.size
    if k * starts.size == rows.shape[0] and (np.diff(starts) == k).all():
        block = rows.reshape(starts.size, k, rows.shape[1])
        per_slot = block[:, 0].copy()
        for j in range(1, k):
            per_slot = per_slot + block[:, j]
    else:
        per_slot = np.array([rows[a:b].sum(axis=0) for a, b in pairwise([*starts, at.size])])
    first = at[starts]
    if data[first].any():
        np.add.at(data, at, rows)  # not slots of their own: as add() does
    else:
        data[first] = 0.0 + per_slot  # (0 + r1) + r2 ... to the sign of a zero
    ords = ords[starts]
    cuts = np.flatnonzero(np.r_[True, ords[1:] != ords[:-1], True]).tolist()
    for a, b in pairwise(cuts):
        day = days.setdefault(int(ords[a]), np.zeros(rows.shape[1]))
        day[:] = np.cumsum(np.vstack([day, per_slot[a:b]]), axis=0)[-1]  # in turn


def _day_sums(v: Any) -> dict[int, np.ndarray]:
    return {int(d): np.asarray(s, dtype=np.float64) for d, s in v.items()}
