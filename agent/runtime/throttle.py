"""At most one log line per key and period: a flapping or hostile meter must not fill
the journal.

A meter that answers garbage every other poll would otherwise log an error and an
"answering again" per poll, 7,200 lines an hour for one device. The device's
status topic still changes at every transition; only the log is thinned, and the
line that is written says how many were left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class LogThrottle:
    def __init__(self, period_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._clock = clock
        #: key -> (when its last line was written, occurrences left out since)
        self._last: dict[Hashable, tuple[float, int]] = {}

    def due(self, key: Hashable) -> int | None:
        """None: leave this occurrence out. Else log it, and the number returned of
        those left out since the last line for this key."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.period_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]


def repeats(n: int) -> str:
    """The suffix of a line that stands for others: "" or " (3 more since the last)"."""
    return f" ({n} more since the last such line)" if n else ""
