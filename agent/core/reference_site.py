"""The site's windows by brute force: the definition the site's series is tested against.

:mod:`agent.core.series` keeps slot sums for a limited reach and day sums for the
month, shrinks and grows, and is fed slot rows in whatever order the engine closes
them. This module keeps **every** slot row of every counted channel, for ever, and
computes each window of an interval ending at ``end`` straight from docs/core.md:

* ``1m``, ``15m``, ``1h``, ``24h``: the slots [t − n, t), t = end's slot;
* ``today``: from local midnight of the day ``end − 1 ms`` belongs to;
* ``month``: from local midnight of that day's month's first day;

each slot's CO2 at the emission factor of the interval holding it; the net
import (root electricity meters' import minus their export channels', where the
site has one that can export; never unknown here: this site never restarts);
coverage summed over the counted channels, a channel missing from a window when it covered
less than all of it. A window is the difference of two running totals per
channel (the totals up to each slot, in slot order): no day sums, no retention.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from agent.contract.vocab import Carrier, Window
from agent.core.calendar import SiteCalendar
from agent.core.channels import SLOT_MS
from agent.core.devices import SiteWeights
from agent.core.factors import EmissionFactors

#: Rolling windows in slots (docs/core.md, "Site windows").
ROLLING = {Window.MIN_1: 1, Window.MIN_15: 15, Window.HOUR_1: 60, Window.HOUR_24: 1440}


@dataclass(frozen=True)
class RefWindow:
    """One window's sums and coverage, in the payload's terms."""

    energy_kwh: float
    co2_kg: float
    units: float
    kgce: float
    measured_share: float
    interpolated_share: float
    missing_share: float
    missing: tuple[str, ...]
    net_import_kwh: float | None = None


@dataclass
class _Channel:
    """Every slot row of one channel, by slot; running totals built on demand."""

    rows: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    slots: list[int] = field(default_factory=list)
    totals: list[tuple[float, ...]] = field(default_factory=list)

    def build(self) -> None:
        self.slots = sorted(self.rows)
        acc: tuple[float, ...] = (0.0,) * 4
        self.totals = [acc]
        for s in self.slots:
            acc = tuple(a + b for a, b in zip(acc, self.rows[s], strict=True))
            self.totals.append(acc)

    def between(self, a: int, b: int) -> tuple[float, ...]:
        """(energy, energy x its factor, measured ms, interpolated ms) over [a, b)."""
        i = bisect.bisect_left(self.slots, a)
        j = bisect.bisect_left(self.slots, b)
        return tuple(y - x for x, y in zip(self.totals[i], self.totals[j], strict=True))


class ReferenceSite:
    """All slot rows of the counted channels; every window of any interval end."""

    def __init__(
        self,
        weights: SiteWeights,
        names: Sequence[str],
        factors: EmissionFactors,
        calendar: SiteCalendar,
        interval_start: Callable[[int], int],
        interval_ms: int,
    ) -> None:
        self.weights = weights
        self.calendar = calendar
        self._factors = factors
        self._interval_start = interval_start
        self._interval_ms = interval_ms
        self.counted = [
            c
            for c in range(len(names))
            if weights.energy_kwh[c] or weights.units[c] or weights.kgce[c]
        ]
        self.names = [names[c] for c in self.counted]
        #: Channels in the net import: root electricity meters' import and export.
        self.netted = [c for c in range(len(weights.net_kwh)) if weights.net_kwh[c]]
        self._channels = {c: _Channel() for c in sorted({*self.counted, *self.netted})}
        self._built = False

    def add(
        self, channel: int, slot: int, energy: float, measured_ms: int, interpolated_ms: int
    ) -> None:
        """One slot row (each (channel, slot) comes once)."""
        ch = self._channels.get(channel)
        if ch is None:
            return
        assert slot not in ch.rows, (channel, slot)
        ch.rows[slot] = (energy, energy * self._factor(channel, slot), measured_ms, interpolated_ms)
        self._built = False

    def _factor(self, channel: int, slot: int) -> float:
        group = int(self.weights.group[channel])
        if group < 0:
            return 0.0
        start = self._interval_start(slot) * SLOT_MS
        carrier = Carrier.ELECTRICITY if group == 0 else Carrier.NATURAL_GAS
        return self._factors.at(carrier, start, start + self._interval_ms).value

    def windows(self, end_ms: int) -> dict[str, RefWindow]:
        if not self._built:
            for ch in self._channels.values():
                ch.build()
            self._built = True
        t = end_ms // SLOT_MS
        day = self.calendar.local_date(end_ms - 1)
        firsts = {name: t - n for name, n in ROLLING.items()}
        firsts[Window.TODAY] = self.calendar.day_start_ms(day) // SLOT_MS
        month_first = date(day.year, day.month, 1)
        firsts[Window.MONTH] = self.calendar.day_start_ms(month_first) // SLOT_MS
        return {name: self._window(a, t) for name, a in firsts.items()}

    def _window(self, a: int, b: int) -> RefWindow:
        w = self.weights
        energy = co2 = units = kgce = measured = interpolated = 0.0
        missing = []
        for c, name in zip(self.counted, self.names, strict=True):
            e, e_co2, m, i = self._channels[c].between(a, b)
            energy += e * w.energy_kwh[c]
            co2 += e_co2 * w.co2[c]
            units += e * w.units[c]
            kgce += e * w.kgce[c]
            measured += m
            interpolated += i
            if m + i < (b - a) * SLOT_MS:
                missing.append(name)
        span = (b - a) * SLOT_MS * len(self.counted)
        net = None
        if (w.net_kwh < 0).any():
            net = sum(float(self._channels[c].between(a, b)[0] * w.net_kwh[c]) for c in self.netted)
        return RefWindow(
            float(energy),
            float(co2),
            float(units),
            float(kgce),
            measured / span,
            interpolated / span,
            max(0.0, 1.0 - (measured + interpolated) / span),
            tuple(missing),
            net,
        )
