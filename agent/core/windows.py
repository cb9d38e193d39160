"""The site's windows: rolling and calendar sums of the counted meters, with coverage.

Every window is computed from the site's own series (:mod:`agent.core.series`),
which keeps every closed slot until no window can need it and every local day
for its month: so a window computed late (after an outage of any length) is as
exact as one computed on time. ``today`` runs from local midnight of the day the
interval belongs to (23 or 25 hours on DST days); ``month`` adds the local days
of the month before it. CO2 is each slot's energy times the emission factor of
its interval and carrier.

Each window also says how much of it is data: the share of its time (summed over
the counted channels) that was measured, interpolated across a gap, or missing,
and which counted devices miss some of it. This part also knows which interval
ends still owe their ``intensity`` record, and which have been published (and
in which revision): late slots owe again every published record whose windows
cover them.

The window names are the contract's (:class:`agent.contract.vocab.Window`);
this module keeps each rolling one's length and computes the calendar ones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from agent.contract.vocab import Window
from agent.core.calendar import SiteCalendar
from agent.core.channels import RING, SLOT_MS
from agent.core.devices import SiteWeights
from agent.core.engine import Engine, Slots
from agent.core.factors import EmissionFactors
from agent.core.series import (
    CO2,
    ENERGY,
    INTERPOLATED,
    KGCE,
    MEASURED,
    NET,
    REACH_SLOTS,
    SUMS,
    UNITS,
    SiteSeries,
    seed,
)
from agent.core.snapshot import Snapshot

#: Rolling windows: length in one-minute slots, by name.
ROLLING = {Window.MIN_1: 1, Window.MIN_15: 15, Window.HOUR_1: 60, Window.HOUR_24: 1440}
#: Calendar windows, in the site's time zone: from local midnight, from the month's start.
CALENDAR = (Window.TODAY, Window.MONTH)
#: A window names at most this many of the devices missing from it (and counts them all).
MISSING_NAMED = 5


@dataclass
class Totals:
    """The sums of one window: kWh (electricity and gas), kg CO2, units, kgce; and its
    coverage: ms measured and interpolated over ``span_ms`` (the window's length times
    the counted channels), the counted devices that miss some of it."""

    energy_kwh: float = 0.0
    co2_kg: float = 0.0
    units: float = 0.0
    kgce: float = 0.0
    measured_ms: float = 0.0
    interpolated_ms: float = 0.0
    span_ms: float = 0.0
    missing: tuple[str, ...] = ()
    #: Root electricity meters' import minus their export, kWh; None: the site has no
    #: exporting meter, or the window began before the agent kept export sums.
    net_import_kwh: float | None = None

    def share(self, ms: float) -> float:
        """``ms`` of the window's meter-time (at most all of it: a meter no longer
        configured left its coverage in the sums of the days it was counted)."""
        return min(ms / self.span_ms, 1.0) if self.span_ms > 0 else 0.0

    @property
    def missing_share(self) -> float:
        if self.span_ms <= 0:
            return 0.0
        return max(0.0, 1.0 - (self.measured_ms + self.interpolated_ms) / self.span_ms)


class SiteWindows:
    def __init__(
        self,
        engine: Engine,
        weights: SiteWeights,
        factors: EmissionFactors,
        calendar: SiteCalendar,
        names: Sequence[str],
    ) -> None:
        self.engine = engine
        self.calendar = calendar
        self.series = SiteSeries(
            weights,
            factors,
            calendar,
            lambda s: s - (s - engine.align_offset_slots) % engine.interval_slots,
            engine.interval_ms,
        )
        #: The counted devices' names, in the series' column order.
        self._names = [names[c] for c in self.series.counted.tolist()]
        self._net = weights.net_import
        self._pending: set[int] = set()
        #: Published interval ends: (revision, digest of what was published).
        self._published: dict[int, tuple[int, str]] = {}
        self._last_published = -1
        #: The local day of the latest record computed (the first format's ``today``).
        self._today: date | None = None
        self._day_cache: tuple[date, int, int, int, int] | None = None

    # --- slots in, and which intervals wait for their intensity record -------------------

    def add(self, slots: Slots) -> None:
        """Closed slots: into the series; published records whose windows cover a slot
        closed late are owed again."""
        if not slots.slot.size:
            return
        self.series.add(slots)
        lo = int(slots.slot.min())
        if (lo + 1) * SLOT_MS > self._last_published:
            return
        hi = int(slots.slot.max())
        month_end = self.calendar.month_bounds(hi * SLOT_MS)[1]
        horizon = max((hi + ROLLING[Window.HOUR_24]) * SLOT_MS, month_end)
        lo_ms = (lo + 1) * SLOT_MS
        self._pending.update(e for e in self._published if lo_ms <= e <= horizon)

    def expect(self, end_ms: int) -> None:
        """An interval ending at ``end_ms`` has a record: the site owes its windows."""
        self._pending.add(end_ms)

    def owed(self) -> list[int]:
        """The interval ends still owed, in order (the views say what holds them)."""
        return sorted(self._pending)

    def due(self, upto: int | None) -> list[int]:
        """The owed interval ends up to ``upto`` (None: all), in order; no longer owed."""
        ends = sorted(e for e in self._pending if upto is None or e <= upto)
        self._pending.difference_update(ends)
        return ends

    def last_published(self) -> int:
        """The latest interval end published (-1: none): slots closed after it revise
        nothing."""
        return self._last_published

    @property
    def names(self) -> list[str]:
        """The counted devices' names, in the series' column order."""
        return self._names

    def due_first(self) -> list[int]:
        """The earliest owed interval end, if any (as a list of zero or one)."""
        return [min(self._pending)] if self._pending else []

    def revision(self, end_ms: int, windows: Mapping[str, Totals]) -> int | None:
        """The revision under which the record ending at ``end_ms`` goes out: 0 the first
        time, one more each time it changed; None when it is what was published (its
        sums and coverage to the payload's 9 decimals, the same missing devices)."""
        numbers = np.array(
            [
                (t.energy_kwh, t.co2_kg, t.units, t.kgce, t.measured_ms, t.interpolated_ms)
                for t in windows.values()
            ]
        ).round(9)
        if self._net:  # a site without export keeps the digests it published before
            nets = [
                math.nan if t.net_import_kwh is None else t.net_import_kwh for t in windows.values()
            ]
            numbers = np.concatenate([numbers.ravel(), np.array(nets).round(9)])
        names = "|".join(",".join(t.missing) for t in windows.values())
        digest = hashlib.blake2b(numbers.tobytes() + names.encode(), digest_size=12).hexdigest()
        before = self._published.get(end_ms)
        if before is not None and before[1] == digest:
            return None
        rev = 0 if before is None else before[0] + 1
        self._published[end_ms] = (rev, digest)
        self._last_published = max(self._last_published, end_ms)
        return rev

    def forget_before(self, slot: int) -> None:
        """Slots before ``slot`` will not close again: what only they could change goes."""
        keep = slot - REACH_SLOTS
        self.series.keep_from(keep)
        for e in [e for e in self._published if e < slot * SLOT_MS]:
            del self._published[e]

    # --- the windows ---------------------------------------------------------------------

    def at(self, end_ms: int) -> dict[str, Totals]:
        """Every window as of the interval ending at ``end_ms``, by name."""
        t = end_ms // SLOT_MS
        day, day_start, month_start = self.day_of(end_ms - 1)
        if self._today is None or day > self._today:
            self._today = day
        lengths = [*ROLLING.values(), t - day_start]
        sums = self.series.tail_sums(t, lengths)
        month = self.series.days_of_month_before(day) + sums[-1]
        names = [*ROLLING, Window.TODAY, Window.MONTH]
        slots = np.array([*lengths, t - month_start], dtype=np.int64)
        return dict(zip(names, self._totals(np.vstack([sums, month]), slots, t), strict=True))

    def day_of(self, ms: int) -> tuple[date, int, int]:
        """The local day holding ``ms``, its first slot and its month's (cached: records
        come in time order, many to a day)."""
        cached = self._day_cache
        if cached is not None and cached[3] <= ms < cached[4]:
            return cached[0], cached[1], cached[2]
        day = self.calendar.local_date(ms)
        start, end = self.calendar.day_bounds(ms)
        month_start = self.calendar.month_bounds(ms)[0] // SLOT_MS
        self._day_cache = (day, start // SLOT_MS, month_start, start, end)
        return day, start // SLOT_MS, month_start

    def _totals(self, sums: np.ndarray, slots: np.ndarray, end: int) -> list[Totals]:
        """Each row of ``sums`` (a window of ``slots[i]`` slots before slot ``end``) as
        Totals."""
        window_ms = slots * SLOT_MS
        short = sums[:, SUMS:] < window_ms[:, None]
        counted = len(self._names)
        out = []
        for i, row in enumerate(sums.tolist()):
            missing: tuple[str, ...] = ()
            if short[i].any():
                missing = tuple(self._names[j] for j in np.flatnonzero(short[i]).tolist())
            out.append(
                Totals(
                    energy_kwh=row[ENERGY],
                    co2_kg=row[CO2],
                    units=row[UNITS],
                    kgce=row[KGCE],
                    measured_ms=row[MEASURED],
                    interpolated_ms=row[INTERPOLATED],
                    span_ms=float(window_ms[i] * counted),
                    missing=missing,
                    net_import_kwh=(
                        row[NET]
                        if self._net and self.series.net_known(end - int(slots[i]))
                        else None
                    ),
                )
            )
        return out

    # --- snapshot (agent.core.snapshot.Part) -----------------------------------------

    def save(self, snap: Snapshot) -> None:
        self._save_first_format(snap)
        snap.put("pending_ends", sorted(self._pending))
        snap.put("published", [[e, r, d] for e, (r, d) in sorted(self._published.items())])
        self.series.save(snap, self._names)

    def _save_first_format(self, snap: Snapshot) -> None:
        """The keys the first format's windows read, so that a rollback continues: its
        finished days (from the series), its day, and an empty factor ring (-1: it
        writes every slot's factor again)."""
        today = self._today
        days = {
            date.fromordinal(d).isoformat(): dict(
                zip(("energy_kwh", "co2_kg", "units", "kgce"), v[: KGCE + 1].tolist(), strict=True)
            )
            for d, v in sorted(self.series.days.items())
            if today is not None and d < today.toordinal()
        }
        snap.put("days", days)
        snap.put("today", today.isoformat() if today else None)
        snap.put("weights_end", -1)
        snap.put_array("weights", np.zeros((2, RING), dtype=np.float64))

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        """The series always (it is kept by slot and day); the owed and published records
        only with the same publish interval (they are kept by interval end). A file of
        the first format has no series: it is rebuilt from what the engine's ring holds
        and the finished days the file kept."""
        pending = snap.value("pending_ends", set)
        today = snap.value("today", lambda v: None if v is None else date.fromisoformat(v))
        series = self.series.restore_from(snap, self._names)
        published: dict[int, tuple[int, str]] = {}
        old_days: dict[date, tuple[float, float, float, float]] = {}
        if series is None:
            old_days = snap.value("days", _days)
        else:
            published = snap.value(
                "published", lambda v: {int(e): (int(r), str(d)) for e, r, d in v}
            )

        def restore() -> None:
            self._today = today
            if series is not None:
                series()
            else:
                self._seed_from_ring(old_days)
            if same_interval:
                self._pending = pending
                self._published = published
                self._last_published = max(published, default=-1)

        return restore

    def _seed_from_ring(self, days: dict[date, tuple[float, float, float, float]]) -> None:
        """The slots the restored engine ring holds, as slot rows for the series."""
        eng = self.engine
        ends = eng.closed_slot_end()
        rows: list[tuple[np.ndarray, ...]] = []
        ring_from, data_from = [], []  # per channel: the ring's first slot, the data's
        for c in self.series.counted.tolist():
            if not eng.has_reference(c):
                continue
            end = int(ends[c])
            ring_from.append(end - eng.ring_e.shape[1])
            data_from.append(eng.first_slot(c))
            s = np.arange(max(ring_from[-1], data_from[-1]), end, dtype=np.int64)
            idx = s % eng.ring_e.shape[1]
            cov = eng.ring_cov[c, idx].astype(np.int64)
            rows.append((np.full(s.size, c), s, eng.ring_e[c, idx], cov[:, 0], cov[:, 1]))
        if not rows:
            return
        chans, s, energy, measured, interpolated = (
            np.concatenate(col) for col in zip(*rows, strict=True)
        )
        n = s.size
        flags, demand = np.zeros(n, dtype=np.int64), np.full(n, np.nan)
        slots = Slots(chans, s, energy, measured, interpolated, flags, demand)
        seed(self.series, slots, max(ring_from), min(data_from), days)


def _days(v: Any) -> dict[date, tuple[float, float, float, float]]:
    return {
        date.fromisoformat(d): (t["energy_kwh"], t["co2_kg"], t["units"], t["kgce"])
        for d, t in v.items()
    }
