"""Timestamps as meter logs write them, to Unix milliseconds UTC.

Accepted: Unix milliseconds, Unix seconds (integer or decimal; which of the two
is decided per file from its first numeric timestamp: below 1e11 is seconds,
i.e. anything after 1973 in milliseconds), and ISO 8601 with or without a UTC
offset. A time without an offset is the site's local time.

Local times are not always unique. When clocks go back, an hour of local times
happens twice; a logger writing local time writes that hour twice, in order.
Such a time is read as whichever of its two instants lies closer to the newest
time already read from the same file (the first one when nothing was read yet),
so a file that runs through the change in order is read as it was written. A
local time that does not exist (the hour skipped when clocks go forward) is read
with the offset in force before the change, as Python reads it: 02:30 on that
night is 03:30 summer time, the instant a clock that never changed shows 02:30.

The readers turn text into three parallel arrays (a kind per row, an integer,
a float), and :meth:`TsState.finish` turns those into milliseconds, vectorised
for all but the rows in an hour that contains a clock change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from zoneinfo import ZoneInfo

import numpy as np

EPOCH = datetime(1970, 1, 1)
HOUR_MS = 3_600_000
#: A numeric timestamp below this is in seconds (1e11 ms is 1973; 1e11 s is the year 5138).
SECONDS_BELOW = 10**11
#: Milliseconds beyond this (the year 5138, the contract's last ts) are no reading's time:
#: microseconds or nanoseconds read as milliseconds. Such a row is bad, not a year 55969.
MS_BEYOND = 10**14
INT64_MIN = np.iinfo(np.int64).min

_INT = re.compile(r"-?\d+")
_DEC = re.compile(r"-?\d+\.\d*")


class Kind(IntEnum):
    """What a timestamp cell held, before units and zones are applied."""

    BAD = 0
    INT = 1  #: an integer: Unix ms or s (``ints``)
    DEC = 2  #: a decimal number: Unix ms or s (``decs``)
    UTC = 3  #: ISO 8601 with an offset, already ms UTC (``ints``)
    NAIVE = 4  #: ISO 8601 without one: local wall time as if it were UTC (``ints``)


class TsUnit(StrEnum):
    MS = "Unix milliseconds"
    S = "Unix seconds"


def _naive_ms(dt: datetime) -> int:
    return round((dt - EPOCH) / timedelta(milliseconds=1))


def classify(text: str) -> tuple[Kind, int, float]:
    """One timestamp cell, as the readers without pyarrow see it (and pyarrow's odd cases)."""
    text = text.strip()
    if _INT.fullmatch(text):
        return Kind.INT, int(text), 0.0
    if _DEC.fullmatch(text):
        return Kind.DEC, 0, float(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return Kind.BAD, 0, 0.0
    if dt.tzinfo is None:
        return Kind.NAIVE, _naive_ms(dt), 0.0
    return Kind.UTC, round(dt.timestamp() * 1000), 0.0


def classify_many(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kinds = np.zeros(len(texts), dtype=np.int8)
    ints = np.zeros(len(texts), dtype=np.int64)
    decs = np.zeros(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        if t is not None:
            kinds[i], ints[i], decs[i] = classify(t)
    return kinds, ints, decs


@dataclass
class TsState:
    """Per input file: its numeric unit (decided once) and the newest time read so far."""

    tz: ZoneInfo
    unit: TsUnit | None = None
    latest: int | None = None
    #: Local times in a repeated hour read as their second occurrence (for the summary).
    second_occurrences: int = 0
    _hours: dict[int, int | None] = field(default_factory=dict)

    def finish(self, kinds: np.ndarray, ints: np.ndarray, decs: np.ndarray) -> np.ndarray:
        """Milliseconds UTC per row; rows of kind BAD get INT64_MIN."""
        out = np.full(kinds.shape[0], INT64_MIN, dtype=np.int64)
        numeric = (kinds == Kind.INT) | (kinds == Kind.DEC)
        if numeric.any():
            if self.unit is None:
                first = int(np.flatnonzero(numeric)[0])
                v = ints[first] if kinds[first] == Kind.INT else decs[first]
                self.unit = TsUnit.S if abs(v) < SECONDS_BELOW else TsUnit.MS
            scale = 1000 if self.unit is TsUnit.S else 1
            m = kinds == Kind.INT
            out[m] = ints[m] * scale
            m = kinds == Kind.DEC
            out[m] = np.round(decs[m] * scale).astype(np.int64)
        m = kinds == Kind.UTC
        out[m] = ints[m]
        naive = kinds == Kind.NAIVE
        if naive.any():
            self._local(out, naive, ints)
        out[out > MS_BEYOND] = INT64_MIN
        good = out != INT64_MIN
        if good.any():
            top = int(out[good].max())
            self.latest = top if self.latest is None else max(self.latest, top)
        return out

    def _offset(self, hour: int) -> int | None:
        """The zone's offset (ms) through the local hour ``hour``, None if it changes in it."""
        if hour not in self._hours:
            start = EPOCH + timedelta(hours=hour)
            end = start + timedelta(milliseconds=HOUR_MS - 1)
            offsets = {
                dt.replace(tzinfo=self.tz, fold=f).utcoffset()
                for dt in (start, end)
                for f in (0, 1)
            }
            one = offsets.pop() if len(offsets) == 1 else None
            self._hours[hour] = None if one is None else one // timedelta(milliseconds=1)
            if len(self._hours) > 100_000:  # a file spanning centuries: keep it bounded
                self._hours.clear()
        return self._hours[hour]

    def _local(self, out: np.ndarray, naive: np.ndarray, local: np.ndarray) -> None:
        idx = np.flatnonzero(naive)
        hours, inverse = np.unique(local[idx] // HOUR_MS, return_inverse=True)
        offsets = [self._offset(int(h)) for h in hours]
        per_hour = np.array([0 if o is None else o for o in offsets], dtype=np.int64)
        changing = np.array([o is None for o in offsets], dtype=bool)
        special = changing[inverse]
        plain = idx[~special]
        out[plain] = local[plain] - per_hour[inverse[~special]]
        if not special.any():
            return
        # Rows in an hour with a clock change: one by one, in file order, each against
        # the newest time read before it.
        running = np.maximum.accumulate(np.where(out == INT64_MIN, INT64_MIN, out))
        newest = self.latest
        for i in idx[special]:
            ref = newest
            if i > 0 and running[i - 1] != INT64_MIN:
                ref = int(running[i - 1]) if ref is None else max(ref, int(running[i - 1]))
            out[i] = self._resolve(int(local[i]), ref)
            newest = int(out[i]) if newest is None else max(newest, int(out[i]))

    def _resolve(self, local_ms: int, ref: int | None) -> int:
        naive = EPOCH + timedelta(milliseconds=local_ms)
        first, second = (
            local_ms
            - naive.replace(tzinfo=self.tz, fold=f).utcoffset() // timedelta(milliseconds=1)  # type: ignore[operator]
            for f in (0, 1)
        )
        if first < second and ref is not None and abs(second - ref) < abs(first - ref):
            self.second_occurrences += 1
            return second  # the repeated hour, second time round
        return first  # unique, the first occurrence, or a skipped time (offset before)


def parse_ts(text: str, tz: ZoneInfo, unit: TsUnit | None = None) -> int:
    """One timestamp to ms UTC (no fold rule: the first occurrence); ValueError if none."""
    kinds, ints, decs = classify_many([text])
    if kinds[0] == Kind.BAD:
        raise ValueError(f"not a timestamp: {text!r}")
    return int(TsState(tz, unit=unit).finish(kinds, ints, decs)[0])
