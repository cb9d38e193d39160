"""The site's windows: rolling and calendar sums of the root meters, CO2 by its factor.

Rolling windows (1m, 15m, 1h, 24h) are sums over the engine's closed slots,
recomputed every time. ``today`` runs from local midnight of the day the
interval belongs to (23 or 25 hours on DST days); ``month`` adds the finished
local days of the month, each kept when it ends, while the ring still holds
all of it. CO2 is each slot's energy times the emission factor of its interval
and carrier, written into a ring of weights beside the engine's. This part also
knows which interval ends still wait for their ``intensity`` record.

The window names are the contract's (:class:`agent.contract.vocab.Window`);
this module keeps each rolling one's length and computes the calendar ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from agent.contract.vocab import Carrier, Window
from agent.core.calendar import SiteCalendar
from agent.core.channels import RING, SLOT_MS
from agent.core.devices import SiteWeights
from agent.core.engine import Engine
from agent.core.factors import EmissionFactors
from agent.core.snapshot import Snapshot

#: Rolling windows: length in one-minute slots, by name.
ROLLING = {Window.MIN_1: 1, Window.MIN_15: 15, Window.HOUR_1: 60, Window.HOUR_24: 1440}
#: Calendar windows, in the site's time zone: from local midnight, from the month's start.
CALENDAR = (Window.TODAY, Window.MONTH)
#: Finished days are kept this many days back (a month, and margin).
KEEP_DAYS = 62


@dataclass
class Totals:
    """The sums of one window: kWh (electricity and gas), kg CO2, units, kgce."""

    energy_kwh: float = 0.0
    co2_kg: float = 0.0
    units: float = 0.0
    kgce: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.energy_kwh + other.energy_kwh,
            self.co2_kg + other.co2_kg,
            self.units + other.units,
            self.kgce + other.kgce,
        )


class SiteWindows:
    def __init__(
        self,
        engine: Engine,
        weights: SiteWeights,
        factors: EmissionFactors,
        calendar: SiteCalendar,
    ) -> None:
        self.engine = engine
        self.weights = weights
        self.factors = factors
        self.calendar = calendar
        #: The emission factor of each slot, per carrier row (SiteWeights.group).
        self._factor_ring = np.zeros((2, RING), dtype=np.float64)
        self._factors_end = -1  # slots before this have their factor written
        self._pending: set[int] = set()
        self._days: dict[date, Totals] = {}
        self._today: date | None = None

    # --- which intervals wait for their intensity record ---------------------------------

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

    # --- the windows ---------------------------------------------------------------------

    def at(self, end_ms: int) -> dict[str, Totals]:
        """Every window as of the interval ending at ``end_ms``, by name.

        Called for each interval in time order: a new local day finishes the one before.
        """
        t = end_ms // SLOT_MS
        self._fill_factors(t)
        day = self.calendar.local_date(end_ms - 1)
        if self._today is not None and day != self._today:
            self._finish_day(self._today)
        self._today = day
        day_start = self.calendar.day_start_ms(day) // SLOT_MS
        firsts = [t - w for w in ROLLING.values()] + [day_start]
        totals = self._totals(firsts, [t] * len(firsts))
        windows: dict[str, Totals] = dict(zip(ROLLING, totals, strict=False))
        today = totals[-1]
        month = Totals()
        for d, tot in self._days.items():
            if (d.year, d.month) == (day.year, day.month) and d < day:
                month = month + tot
        windows[Window.TODAY] = today
        windows[Window.MONTH] = month + today
        if end_ms == self._day_end_ms(day):
            # This record closes the local day: its `today` is the whole day. Kept now,
            # while the ring still holds all of a 25-hour day; an interval later it may not.
            self._days[day] = today
        return windows

    def _day_end_ms(self, day: date) -> int:
        return self.calendar.day_start_ms(date.fromordinal(day.toordinal() + 1))

    def _finish_day(self, day: date) -> None:
        if day in self._days:
            return  # kept by the record that ended it
        a = self.calendar.day_start_ms(day) // SLOT_MS
        b = self._day_end_ms(day) // SLOT_MS
        self._fill_factors(b)
        self._days[day] = self._totals([a], [b])[0]
        for old in [d for d in self._days if (day.toordinal() - d.toordinal()) > KEEP_DAYS]:
            del self._days[old]

    def _fill_factors(self, end_slot: int) -> None:
        """Write each slot's emission factor (per carrier) for the CO2 window sums."""
        k = self.engine.interval_slots
        ms = self.engine.interval_ms
        first = self.engine.interval_start_slot(max(self._factors_end, end_slot - RING))
        for a in range(first, end_slot, k):
            start_ms = a * SLOT_MS
            el = self.factors.at(Carrier.ELECTRICITY, start_ms, start_ms + ms).value
            g = self.factors.at(Carrier.NATURAL_GAS, start_ms, start_ms + ms).value
            idx = np.arange(a, a + k) % RING
            self._factor_ring[0, idx] = el
            self._factor_ring[1, idx] = g
        self._factors_end = max(self._factors_end, end_slot)

    def _totals(self, first_slots: Sequence[int], end_slots: Sequence[int]) -> list[Totals]:
        w = self.weights
        e = self.engine.range_sums(first_slots, end_slots)
        co2 = self.engine.weighted_range_sums(w.group, self._factor_ring, first_slots, end_slots)
        return [
            Totals(
                energy_kwh=float(e[:, j] @ w.energy_kwh),
                co2_kg=float(co2[:, j] @ w.co2),
                units=float(e[:, j] @ w.units),
                kgce=float(e[:, j] @ w.kgce),
            )
            for j in range(len(first_slots))
        ]

    # --- snapshot (agent.core.snapshot.Part) -----------------------------------------

    def save(self, snap: Snapshot) -> None:
        snap.put("days", {d.isoformat(): vars(t) for d, t in self._days.items()})
        snap.put("today", self._today.isoformat() if self._today else None)
        snap.put("pending_ends", sorted(self._pending))
        snap.put("weights_end", self._factors_end)
        snap.put_array("weights", self._factor_ring)

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        """Finished days and today always; the factor ring and the owed records only
        with the same publish interval (they are laid out by interval)."""
        days = snap.value("days", _days)
        today = snap.value("today", lambda v: None if v is None else date.fromisoformat(v))
        pending = snap.value("pending_ends", set)
        factors_end = snap.value("weights_end", int)
        ring = snap.array("weights", self._factor_ring.shape)

        def restore() -> None:
            self._days, self._today = days, today
            if same_interval:
                self._factor_ring = ring.copy()
                self._factors_end = factors_end
                self._pending = pending

        return restore


def _days(v: Any) -> dict[date, Totals]:
    return {date.fromisoformat(d): Totals(**t) for d, t in v.items()}
