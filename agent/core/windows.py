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
from collections.abc import Callable, Sequence
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
    REACH_SLOTS,
    SUMS,
    UNITS,
    SiteSeries,
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

    def share(self, ms: float) -> float:
        return ms / self.span_ms if self.span_ms > 0 else 0.0

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
        self._pending: set[int] = set()
        #: Published interval ends: (revision, digest of what was published).
        self._published: dict[int, tuple[int, str]] = {}
        self._last_published = -1
        #: The local day of the latest record computed (the first format's ``today``).
        self._today: date | None = None

    # --- slots in, and which intervals wait for their intensity record -------------------

    def add(self, slots: Slots) -> None:
        """Closed slots: into the series; published records whose windows cover a slot
        closed late are owed again."""
        if not len(slots):
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

    def due(self, upto: int | None) -> list[int]:
        """The owed interval ends up to ``upto`` (None: all), in order; no longer owed."""
        ends = sorted(e for e in self._pending if upto is None or e <= upto)
        self._pending.difference_update(ends)
        return ends

    def due_first(self) -> list[int]:
        """The earliest owed interval end, if any (as a list of zero or one)."""
        return [min(self._pending)] if self._pending else []

    def revision(self, end_ms: int, payload: object) -> int | None:
        """The revision under which the record ending at ``end_ms`` goes out: 0 the first
        time, one more each time it changed; None when it is what was published."""
        digest = hashlib.blake2b(repr(payload).encode(), digest_size=12).hexdigest()
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
        day = self.calendar.local_date(end_ms - 1)
        if self._today is None or day > self._today:
            self._today = day
        day_start = self.calendar.day_start_ms(day) // SLOT_MS
        series = self.series
        windows: dict[str, Totals] = {
            name: self._totals(series.span(t - w, t), w) for name, w in ROLLING.items()
        }
        today = series.span(day_start, t)
        windows[Window.TODAY] = self._totals(today, t - day_start)
        month_start = self.calendar.month_bounds(end_ms - 1)[0] // SLOT_MS
        month = series.days_of_month_before(day) + today
        windows[Window.MONTH] = self._totals(month, t - month_start)
        return windows

    def _totals(self, sums: np.ndarray, slots: int) -> Totals:
        window_ms = slots * SLOT_MS
        short = np.flatnonzero(sums[SUMS:] < window_ms).tolist()
        return Totals(
            energy_kwh=float(sums[ENERGY]),
            co2_kg=float(sums[CO2]),
            units=float(sums[UNITS]),
            kgce=float(sums[KGCE]),
            measured_ms=float(sums[MEASURED]),
            interpolated_ms=float(sums[INTERPOLATED]),
            span_ms=float(window_ms * len(self._names)),
            missing=tuple(self._names[i] for i in short),
        )

    # --- snapshot (agent.core.snapshot.Part) -----------------------------------------

    def save(self, snap: Snapshot) -> None:
        self._save_first_format(snap)
        snap.put("pending_ends", sorted(self._pending))
        snap.put("published", [[e, r, d] for e, (r, d) in sorted(self._published.items())])
        self.series.save(snap)

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
        series = self.series.restore_from(snap)
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
        self.series.seed(slots, max(ring_from), min(data_from), days)


def _days(v: Any) -> dict[date, tuple[float, float, float, float]]:
    return {
        date.fromisoformat(d): (t["energy_kwh"], t["co2_kg"], t["units"], t["kgce"])
        for d, t in v.items()
    }
