"""The slow, obviously correct core: the definition the numba kernel is tested against.

Each channel keeps every accepted point of its *virtual counter* C(t): the
meter's counter after wrap, reset and glitch correction, starting at 0 at the
first reading and linear between readings. Every number the core produces is
then a difference of C at two instants:

    energy of [a, b) = C(b) - C(a)          (C is flat before the first reading)

so interpolation across polling gaps and exact splitting at interval
boundaries are not separate rules but consequences. A span is *closed* once
an accepted reading at or after its end exists.

No arrays, no rings, no running sums: lists and bisection, written to be read.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.core.channels import (
    REBASELINE_AFTER,
    SLOT_MS,
    WRAP_BAND,
    ChannelKind,
    ChannelSpec,
    Event,
    Flag,
)


@dataclass(frozen=True)
class IntervalRecord:
    """Energy of one channel over one closed interval [end - interval, end)."""

    channel: int
    end_ms: int
    energy: float
    flags: int


@dataclass
class RefChannel:
    spec: ChannelSpec
    times: list[int] = field(default_factory=list)  # accepted points of C
    values: list[float] = field(default_factory=list)
    seg_flags: list[int] = field(default_factory=list)  # flags of segment ending at point i
    ref_raw: float = math.nan  # the raw reading behind the last accepted point
    last_seen: int | None = None
    candidates: list[tuple[int, float]] = field(default_factory=list)
    events: Counter[Event] = field(default_factory=Counter)

    # --- the correction rules ------------------------------------------------------------

    def feed(self, t: int, value: float) -> None:
        if value is None or math.isnan(value):
            self.events[Event.MISSING] += 1
            return
        if self.last_seen is not None and t <= self.last_seen:
            self.events[Event.OUT_OF_ORDER] += 1
            return
        self.last_seen = t
        if not self.times:
            if self.spec.kind is ChannelKind.POWER and abs(value) > self.spec.max_rate_per_h:
                self.events[Event.GLITCH] += 1
                return
            self.times, self.values, self.seg_flags = [t], [0.0], [0]
            self.ref_raw = value
            return
        if self.spec.kind is ChannelKind.POWER:
            self._feed_power(t, value)
        else:
            self._feed_counter(t, value)

    def _accept(self, t: int, raw: float, delta: float, flags: int) -> None:
        self.times.append(t)
        self.values.append(self.values[-1] + delta)
        self.seg_flags.append(flags)
        self.ref_raw = raw
        self.candidates = []

    def _feed_counter(self, t: int, raw: float) -> None:
        spec = self.spec
        t0, r0 = self.times[-1], self.ref_raw
        flags = Flag.INTERPOLATED if t - t0 > spec.max_gap_s * 1000 else 0
        delta = raw - r0
        wrapped = False
        if delta < 0:
            top, bottom = (1 - WRAP_BAND) * spec.wrap, WRAP_BAND * spec.wrap
            if spec.wrap > 0 and r0 >= top and raw <= bottom:
                delta = raw + spec.wrap - r0
                wrapped = True
            else:
                # Any other decrease: the meter was reset or replaced. New baseline,
                # nothing counted for this step.
                self.events[Event.RESET] += 1
                self._accept(t, raw, 0.0, flags | Flag.RESET)
                return
        if delta > spec.max_step(t - t0, raw):
            self.events[Event.GLITCH] += 1
            if self.candidates and _consistent(spec, self.candidates[-1], (t, raw)):
                self.candidates.append((t, raw))
            else:
                self.candidates = [(t, raw)]
            if len(self.candidates) >= REBASELINE_AFTER:
                # Several readings agree with each other, not with the past: the
                # meter really is at a new level. Rebase, count nothing for the jump.
                self.events[Event.REBASELINE] += 1
                self._accept(t, raw, 0.0, flags | Flag.RESET)
            return
        if wrapped:
            self.events[Event.WRAP] += 1
        self._accept(t, raw, delta, flags)

    def _feed_power(self, t: int, kw: float) -> None:
        spec = self.spec
        if abs(kw) > spec.max_rate_per_h:
            self.events[Event.GLITCH] += 1
            return
        t0, p0 = self.times[-1], self.ref_raw
        if t - t0 > spec.max_gap_s * 1000:
            self._accept(t, kw, 0.0, Flag.GAP)
            return
        energy = (max(p0, 0.0) + max(kw, 0.0)) / 2.0 * (t - t0) / 3_600_000.0
        self._accept(t, kw, energy, 0)

    # --- reading the virtual counter -----------------------------------------------------

    @property
    def first(self) -> int | None:
        return self.times[0] if self.times else None

    @property
    def last(self) -> int | None:
        return self.times[-1] if self.times else None

    def closed_until(self) -> int | None:
        """Spans ending at or before this instant are closed."""
        return self.times[-1] if self.times else None

    def counter_at(self, t: float) -> float:
        """C(t) by linear interpolation; flat before the first point. Needs t <= last."""
        times, values = self.times, self.values
        assert times and t <= times[-1], "C is only known up to the last accepted reading"
        if t <= times[0]:
            return values[0]
        i = bisect.bisect_left(times, t)
        if times[i] == t:
            return values[i]
        t0, t1 = times[i - 1], times[i]
        return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)

    def flags_over(self, a: int, b: int) -> int:
        """OR of the flags of every segment overlapping (a, b) with positive length."""
        out = 0
        for i in range(1, len(self.times)):
            if self.times[i - 1] < b and a < self.times[i]:
                out |= self.seg_flags[i]
        if self.times and a < self.times[0] < b:
            out |= Flag.PARTIAL
        return out

    def energy(self, a: int, b: int) -> float:
        return self.counter_at(b) - self.counter_at(a)


def _consistent(spec: ChannelSpec, prev: tuple[int, float], cur: tuple[int, float]) -> bool:
    (t0, r0), (t1, r1) = prev, cur
    return 0.0 <= r1 - r0 <= spec.max_step(t1 - t0, r1)


class ReferenceCore:
    """All channels; records and windows computed from first principles on demand."""

    def __init__(self, specs: Sequence[ChannelSpec], interval_s: int) -> None:
        if interval_s * 1000 % SLOT_MS:
            raise ValueError("interval_s must be a whole number of minutes")
        self.channels = [RefChannel(s) for s in specs]
        self.interval_ms = interval_s * 1000
        self._emitted: list[int | None] = [None] * len(specs)  # last interval end emitted

    def feed(self, channel: int, t: int, value: float) -> None:
        self.channels[channel].feed(t, value)

    def feed_many(
        self, channels: Sequence[int], ts: Sequence[int], values: Sequence[float]
    ) -> None:
        for c, t, v in zip(channels, ts, values, strict=True):
            self.channels[c].feed(int(t), float(v))

    def closed_intervals(self) -> list[IntervalRecord]:
        """Intervals closed since the last call, per channel, in time order."""
        out: list[IntervalRecord] = []
        step = self.interval_ms
        for c, ch in enumerate(self.channels):
            if not ch.times:
                continue
            first, closed = ch.times[0], ch.times[-1]
            end = self._emitted[c]
            end = (first // step + 1) * step if end is None else end + step
            while end <= closed:
                out.append(
                    IntervalRecord(
                        c, end, ch.energy(end - step, end), ch.flags_over(end - step, end)
                    )
                )
                self._emitted[c] = end
                end += step
        return out

    def slot_energy(self, channel: int, slot: int) -> float:
        """Energy of one closed one-minute slot; 0 where the channel has no data."""
        ch = self.channels[channel]
        a, b = slot * SLOT_MS, (slot + 1) * SLOT_MS
        if not ch.times or b > ch.times[-1]:
            return 0.0
        return ch.energy(a, b)

    def range_sum(self, channel: int, first_slot: int, end_slot: int) -> float:
        """Energy of slots [first_slot, end_slot) that are closed for this channel."""
        ch = self.channels[channel]
        if not ch.times:
            return 0.0
        closed_end = ch.times[-1] // SLOT_MS * SLOT_MS
        a = min(first_slot * SLOT_MS, closed_end)
        b = min(end_slot * SLOT_MS, closed_end)
        return ch.energy(a, b) if b > a else 0.0

    def weighted_range_sum(
        self, channel: int, first_slot: int, end_slot: int, weight: Sequence[float]
    ) -> float:
        """Σ slot energy x weight[slot - first_slot] (CO2 with a per-slot factor)."""
        return math.fsum(
            self.slot_energy(channel, s) * weight[s - first_slot]
            for s in range(first_slot, end_slot)
        )

    def demand_kw(self, channel: int, slot: int, width: int = 15) -> float:
        """Average power over the ``width`` slots ending with ``slot`` (a closed slot)."""
        energy = self.range_sum(channel, slot - width + 1, slot + 1)
        return energy * 60.0 / width

    def demand_peak(
        self, channel: int, month_start_slot: int, month_end_slot: int, width: int = 15
    ) -> tuple[float, int] | None:
        """(max demand kW, slot) over the closed slots of [month_start_slot, month_end_slot)
        that the channel has data for (from the slot of its first reading); the first
        occurrence wins a tie. None when no such slot is closed yet."""
        ch = self.channels[channel]
        if not ch.times:
            return None
        lo = max(month_start_slot, ch.times[0] // SLOT_MS)
        hi = min(month_end_slot, ch.times[-1] // SLOT_MS)  # slots before this are closed
        best: tuple[float, int] | None = None
        for slot in range(lo, hi):
            kw = self.demand_kw(channel, slot, width)
            if best is None or kw > best[0]:
                best = (kw, slot)
        return best

    def events(self, channel: int) -> Counter[Event]:
        return self.channels[channel].events
