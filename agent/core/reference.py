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
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from agent.core.channels import (
    REBASELINE_AFTER,
    SLOT_MS,
    WRAP_BAND,
    ChannelKind,
    ChannelSpec,
    Event,
    Flag,
)


class Cover(IntEnum):
    """What a segment of C between two accepted points is made of, for coverage."""

    MISSING = 0  # nothing known: a power gap, the span a rebaseline skips
    MEASURED = 1  # a step at the normal polling rate (span <= max_gap_s)
    INTERPOLATED = 2  # a counter's step across a polling gap (span > max_gap_s)


@dataclass(frozen=True)
class IntervalRecord:
    """Energy of one channel over one closed interval [end - interval, end)."""

    channel: int
    end_ms: int
    energy: float
    flags: int
    measured_ms: int = 0
    interpolated_ms: int = 0


@dataclass(frozen=True)
class SlotRow:
    """One closed one-minute slot of one channel."""

    channel: int
    slot: int
    energy: float
    measured_ms: int
    interpolated_ms: int
    flags: int
    demand_kw: float  # NaN for a channel without demand


@dataclass(frozen=True)
class EventRow:
    channel: int
    ts: int
    event: Event
    value: float


@dataclass
class RefChannel:
    spec: ChannelSpec
    times: list[int] = field(default_factory=list)  # accepted points of C
    values: list[float] = field(default_factory=list)
    seg_flags: list[int] = field(default_factory=list)  # flags of segment ending at point i
    seg_cover: list[Cover] = field(default_factory=list)  # what segment i is made of
    ref_raw: float = math.nan  # the raw reading behind the last accepted point
    last_seen: int | None = None
    candidates: list[tuple[int, float]] = field(default_factory=list)
    events: Counter[Event] = field(default_factory=Counter)
    rows: list[tuple[int, Event, float]] = field(default_factory=list)  # (ts, event, value)

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
            if self.spec.kind.is_power and abs(value) > self.spec.max_rate_per_h:
                self._event(t, Event.GLITCH, value)
                return
            self.times, self.values = [t], [0.0]
            self.seg_flags, self.seg_cover = [0], [Cover.MISSING]
            self.ref_raw = value
            return
        if self.spec.kind.is_power:
            self._feed_power(t, value)
        else:
            self._feed_counter(t, value)

    def _event(self, t: int, event: Event, value: float) -> None:
        self.events[event] += 1
        self.rows.append((t, event, value))

    def _accept(self, t: int, raw: float, delta: float, flags: int, cover: Cover) -> None:
        self.times.append(t)
        self.values.append(self.values[-1] + delta)
        self.seg_flags.append(int(flags))
        self.seg_cover.append(cover)
        self.ref_raw = raw
        self.candidates = []

    def _step(self, t0: int, t: int, raw: float, delta: float) -> None:
        """Accept a counter step from the last point: interpolated across a long gap."""
        if t - t0 > self.spec.max_gap_s * 1000:
            self._accept(t, raw, delta, Flag.INTERPOLATED, Cover.INTERPOLATED)
        else:
            self._accept(t, raw, delta, 0, Cover.MEASURED)

    def _feed_counter(self, t: int, raw: float) -> None:
        spec = self.spec
        t0, r0 = self.times[-1], self.ref_raw
        delta = raw - r0
        wrapped = False
        if delta < 0:
            top, bottom = (1 - WRAP_BAND) * spec.wrap, WRAP_BAND * spec.wrap
            if spec.wrap > 0 and r0 >= top and raw <= bottom:
                delta = raw + spec.wrap - r0
                wrapped = True
        if 0.0 <= delta <= spec.max_step(t - t0, raw):
            if wrapped:
                self._event(t, Event.WRAP, raw)
            self._step(t0, t, raw, delta)
            return
        # Rejected: a decrease that is no wrap (a reset, or a garbage value) or more than
        # the limit allows. It becomes a candidate for a new baseline.
        self._event(t, Event.GLITCH, raw)
        if self.candidates and _consistent(spec, self.candidates[-1], (t, raw)):
            self.candidates.append((t, raw))
        else:
            self.candidates = [(t, raw)]
        if len(self.candidates) >= REBASELINE_AFTER:
            self._rebaseline()

    def _rebaseline(self) -> None:
        """Several readings agree with each other, not with the past: the meter really is
        at a new level. The first of them is the new baseline; the span up to it counts
        nothing; the steps between them count as ordinary steps."""
        run = self.candidates
        t1, v1 = run[0]
        self._event(t1, Event.RESET if v1 < self.ref_raw else Event.REBASELINE, v1)
        self._accept(t1, v1, 0.0, Flag.RESET, Cover.MISSING)
        for (ta, va), (tb, vb) in itertools.pairwise(run):
            self._step(ta, tb, vb, vb - va)

    def _feed_power(self, t: int, kw: float) -> None:
        spec = self.spec
        if abs(kw) > spec.max_rate_per_h:
            self._event(t, Event.GLITCH, kw)
            return
        t0, p0 = self.times[-1], self.ref_raw
        if t - t0 > spec.max_gap_s * 1000:
            self._accept(t, kw, 0.0, Flag.GAP, Cover.MISSING)
            return
        # import integrates max(P, 0), export max(-P, 0)
        a, b = (-p0, -kw) if spec.kind is ChannelKind.POWER_EXPORT else (p0, kw)
        energy = (max(a, 0.0) + max(b, 0.0)) / 2.0 * (t - t0) / 3_600_000.0
        self._accept(t, kw, energy, 0, Cover.MEASURED)

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

    def _segments_over(self, a: int, b: int) -> range:
        """The segments i (from point i-1 to point i) overlapping (a, b) with positive
        length: times[i] > a and times[i-1] < b (bisection: the lists can be long)."""
        lo = max(bisect.bisect_right(self.times, a), 1)
        hi = min(bisect.bisect_left(self.times, b), len(self.times) - 1)
        return range(lo, hi + 1)

    def flags_over(self, a: int, b: int) -> int:
        """OR of the flags of every segment overlapping (a, b) with positive length."""
        out = 0
        for i in self._segments_over(a, b):
            out |= self.seg_flags[i]
        if self.times and a < self.times[0] < b:
            out |= int(Flag.PARTIAL)
        return out

    def coverage(self, a: int, b: int) -> tuple[int, int]:
        """(measured ms, interpolated ms) of [a, b): how much of it lies in segments of
        each kind. The rest (before the first point, power gaps, spans a rebaseline
        skipped, after the last point) is missing."""
        covered = [0, 0, 0]  # by Cover
        for i in self._segments_over(a, b):
            covered[self.seg_cover[i]] += min(b, self.times[i]) - max(a, self.times[i - 1])
        return covered[Cover.MEASURED], covered[Cover.INTERPOLATED]

    def energy(self, a: int, b: int) -> float:
        return self.counter_at(b) - self.counter_at(a)


def _consistent(spec: ChannelSpec, prev: tuple[int, float], cur: tuple[int, float]) -> bool:
    """Two rejected readings agree: the later one is an acceptable step from the earlier."""
    (t0, r0), (t1, r1) = prev, cur
    return 0.0 <= r1 - r0 <= spec.max_step(t1 - t0, r1)


class ReferenceCore:
    """All channels; records, slots and windows computed from first principles on demand.

    Intervals end at the slots s with (s - align_offset_slots) % interval_slots == 0.
    """

    def __init__(
        self,
        specs: Sequence[ChannelSpec],
        interval_s: int,
        *,
        demand: Sequence[bool] | None = None,
        align_offset_slots: int = 0,
    ) -> None:
        if interval_s * 1000 % SLOT_MS:
            raise ValueError("interval_s must be a whole number of minutes")
        if not 0 <= align_offset_slots < interval_s * 1000 // SLOT_MS:
            raise ValueError("align_offset_slots must be in [0, interval slots)")
        self.channels = [RefChannel(s) for s in specs]
        self.interval_ms = interval_s * 1000
        self.align_ms = align_offset_slots * SLOT_MS
        self.demand = list(demand) if demand is not None else [False] * len(specs)
        self._emitted: list[int | None] = [None] * len(specs)  # last interval end emitted
        self._slots_done: list[int | None] = [None] * len(specs)  # next slot to report
        self._events: list[EventRow] = []

    def feed(self, channel: int, t: int, value: float) -> None:
        ch = self.channels[channel]
        seen = len(ch.rows)
        ch.feed(t, value)
        self._events += [EventRow(channel, *row) for row in ch.rows[seen:]]

    def feed_many(
        self, channels: Sequence[int], ts: Sequence[int], values: Sequence[float]
    ) -> None:
        for c, t, v in zip(channels, ts, values, strict=True):
            self.feed(int(c), int(t), float(v))

    def closed_intervals(self) -> list[IntervalRecord]:
        """Intervals closed since the last call, per channel, in time order."""
        out: list[IntervalRecord] = []
        step, align = self.interval_ms, self.align_ms
        for c, ch in enumerate(self.channels):
            if not ch.times:
                continue
            first, closed = ch.times[0], ch.times[-1]
            end = self._emitted[c]
            end = ((first - align) // step + 1) * step + align if end is None else end + step
            while end <= closed:
                a = end - step
                measured, interpolated = ch.coverage(a, end)
                out.append(
                    IntervalRecord(
                        c, end, ch.energy(a, end), ch.flags_over(a, end), measured, interpolated
                    )
                )
                self._emitted[c] = end
                end += step
        return out

    def closed_slots(self) -> list[SlotRow]:
        """Slots closed since the last call, per channel, in time order: from the slot of
        the channel's first reading to the last one ending at or before its last point."""
        out: list[SlotRow] = []
        for c, ch in enumerate(self.channels):
            if not ch.times:
                continue
            slot = self._slots_done[c]
            slot = ch.times[0] // SLOT_MS if slot is None else slot
            end = ch.times[-1] // SLOT_MS
            for s in range(slot, end):
                a, b = s * SLOT_MS, (s + 1) * SLOT_MS
                measured, interpolated = ch.coverage(a, b)
                demand = self.demand_kw(c, s) if self.demand[c] else math.nan
                out.append(
                    SlotRow(
                        c, s, ch.energy(a, b), measured, interpolated, ch.flags_over(a, b), demand
                    )
                )
            self._slots_done[c] = max(slot, end)
        return out

    def set_limit(self, channel: int, max_rate_per_h: float) -> None:
        ch = self.channels[channel]
        ch.spec = replace(ch.spec, max_rate_per_h=max_rate_per_h)

    def set_wrap(self, channel: int, wrap: float) -> None:
        ch = self.channels[channel]
        ch.spec = replace(ch.spec, wrap=wrap)

    def new_events(self) -> list[EventRow]:
        """Event rows since the last call, in the order the readings were fed."""
        out, self._events = self._events, []
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
