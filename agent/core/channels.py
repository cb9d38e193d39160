"""What a channel is, and the constants both implementations share.

A channel is one cumulative stream of one device: an energy, gas or unit
counter (``COUNTER``), or active power to be integrated when a meter has no
counter: its positive part (``POWER``, import) or its negative part
(``POWER_EXPORT``, export), so one power-only meter can feed two channels from
the same readings. The core works on a fixed grid of one-minute slots; a
publish interval is a whole number of slots, aligned to the Unix epoch plus an
offset of whole slots (0 in UTC; the site passes its zone's offset where that
is not a whole number of intervals, e.g. 30 minutes in Asia/Kolkata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from agent.contract.vocab import Correction, Quality

#: One slot of the grid, in milliseconds.
SLOT_MS = 60_000
#: Slots kept per channel: 24 h for the longest rolling window, plus a 25-hour
#: local day (the day clocks go back) plus margin.
RING = 1536
#: Consecutive rejected readings that agree with each other before the core
#: accepts that the meter really is at a new level (a reset, or a replacement
#: with a jump); the first of them becomes the new baseline. The kernel keeps
#: the first and the latest candidate, so this is fixed at 3.
REBASELINE_AFTER = 3
#: A wrap is a decrease from the top tenth of the range into the bottom tenth.
WRAP_BAND = 0.1
#: The demand period, in slots: 15-minute average power (the two-part tariff's demand).
DEMAND_SLOTS = 15


class ChannelKind(IntEnum):
    COUNTER = 0
    #: Active power, integrated where positive (import).
    POWER = 1
    #: Active power, integrated where negative (export), as a positive energy.
    POWER_EXPORT = 2

    @property
    def is_power(self) -> bool:
        return self is not ChannelKind.COUNTER


class Flag(IntFlag):
    """Per-slot quality bits; an interval's quality is the OR of its slots."""

    NONE = 0
    #: A polling gap longer than the channel's ``max_gap_s`` was spread evenly here.
    INTERPOLATED = 1
    #: Power channel: a gap longer than ``max_gap_s`` was not integrated (a lower bound).
    GAP = 2
    #: A counter reset or replacement happened here: the span from the last accepted
    #: reading to the new baseline counted nothing.
    RESET = 4
    #: The channel's first reading lies inside this slot: energy before it is unknown.
    PARTIAL = 8


def quality_of(flags: int, kind: ChannelKind) -> Quality:
    """The single word a record carries (the contract's :class:`Quality`); the most
    serious condition wins."""
    if flags & Flag.RESET:
        return Quality.RESET
    if flags & Flag.PARTIAL:
        return Quality.PARTIAL
    if flags & Flag.GAP:
        return Quality.GAP
    if flags & Flag.INTERPOLATED:
        return Quality.INTERPOLATED
    return Quality.INTEGRATED if kind.is_power else Quality.MEASURED


class Event(IntEnum):
    """Counted per channel, so status and logs can say what the core corrected; the
    first four are also reported one row each (``Engine.feed(...).events``)."""

    #: A counter's step was taken across its range (the value is the reading).
    WRAP = 0
    #: A rebaseline down: the new baseline (ts and value of the row) is below the last
    #: accepted reading (a reset, or a replacement with a lower reading).
    RESET = 1
    #: A reading rejected: a decrease that is not a wrap, a step beyond the limit, or
    #: power beyond it. It may later become a new baseline (then RESET or REBASELINE).
    GLITCH = 2
    #: A rebaseline up: the new baseline is above the last accepted reading (a jump).
    REBASELINE = 3
    OUT_OF_ORDER = 4
    MISSING = 5


N_EVENTS = len(Event)
#: The events reported one row each, as the contract names them (``events`` messages).
CORRECTION = {
    Event.WRAP: Correction.WRAP,
    Event.GLITCH: Correction.GLITCH,
    Event.RESET: Correction.RESET,
    Event.REBASELINE: Correction.REBASELINE,
}


@dataclass(frozen=True)
class ChannelSpec:
    """How one stream is corrected.

    ``wrap``: the counter's range in canonical units (2^bits x scale) for unsigned
    integer registers, 0 when it cannot wrap. ``max_rate_per_h``: the largest
    plausible increase per hour (max_power_kw for energy), inf for no check.
    ``tol_abs``/``tol_rel``: the register's resolution, so quantisation of a float32
    counter is never mistaken for a glitch. ``max_gap_s``: longer polling gaps are
    flagged (counters) or not integrated (power).
    """

    key: str
    kind: ChannelKind = ChannelKind.COUNTER
    wrap: float = 0.0
    max_rate_per_h: float = math.inf
    tol_abs: float = 0.0
    tol_rel: float = 0.0
    max_gap_s: float = 300.0

    def max_step(self, dt_ms: float, value: float) -> float:
        """Largest accepted increase over ``dt_ms`` ending at ``value``."""
        return self.max_rate_per_h * dt_ms / 3_600_000.0 + self.tol_abs + self.tol_rel * abs(value)
