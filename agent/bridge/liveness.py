"""Is the bridge doing its job? The evidence behind the systemd watchdog and the progress gauge.

A bridge can be alive and useless: in issue 11 it stayed running and connected
(``energy_bridge_mqtt_connected`` 1) while acknowledging nothing, and a plain
``Restart=`` never noticed. So the watchdog is not fed by a timer but by evidence
that the work moves, one of:

* **progress**: a batch written and acknowledged, or a dead letter the broker
  accepted (its original then acknowledged);
* **idle**: nothing received is waiting, and the MQTT network thread answered
  its last probe (an idle bridge is a healthy one, even for hours);
* **retrying**: a write failed and the writer is going round its backoff. The
  database is down or refusing; a restart cannot bring it back, so the watchdog
  stays fed, and ``energy_bridge_last_progress_timestamp_seconds`` (which only
  progress moves) is what an alert should watch.

Without any of these for ``stall_s`` seconds the watchdog goes hungry and systemd
restarts the bridge; the messages it held were never acknowledged, so the broker
delivers them again.

``stall_s`` must cover the longest healthy gap between two pieces of evidence: a
batch's flush interval plus a write's time limit, or a failed write plus the
longest backoff; :func:`stall_limit` adds a margin for a busy machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

#: Never judge faster than this: a loaded machine may pause a thread for seconds.
MIN_STALL_S = 30.0
#: Added to the computed worst case, for validation, garbage collection, a busy CPU.
STALL_MARGIN_S = 10.0


def stall_limit(flush_interval_s: float, write_timeout_s: float, retry_max_s: float) -> float:
    """Seconds without evidence after which the bridge counts as wedged."""
    worst = flush_interval_s + write_timeout_s + retry_max_s
    return max(MIN_STALL_S, worst + STALL_MARGIN_S)


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    why: str


class Liveness:
    """Timestamps of the evidence, set from any thread; judged from the main thread.

    Each mark is one float assignment (atomic under the GIL), so the writer and
    paho's thread never wait here.
    """

    def __init__(
        self,
        stall_s: float,
        gauge: Gauge | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stall_s = stall_s
        self._gauge = gauge
        self._clock = clock
        self._wall = wall
        start = clock()
        self._progress = start  # the start counts: nothing could have moved before it
        self._retry = -math.inf
        self._idle = -math.inf

    def progressed(self) -> None:
        """A batch written and acknowledged, or a dead letter accepted by the broker."""
        self._progress = self._clock()
        if self._gauge is not None:
            self._gauge.set(self._wall())

    def retried(self) -> None:
        """A write failed and will be retried: the writer turns, the database does not."""
        self._retry = self._clock()

    def verdict(self, pending: int, unanswered_s: float) -> Verdict:
        """``pending``: received, not yet acknowledged; ``unanswered_s``: how long the
        MQTT network thread has left a probe unanswered (0 when none is out)."""
        now = self._clock()
        if unanswered_s > self.stall_s:
            return Verdict(
                False, f"the MQTT network thread has not answered for {unanswered_s:.0f} s"
            )
        if pending == 0:
            self._idle = now
            return Verdict(True, "idle")
        quiet = now - max(self._progress, self._idle)
        if quiet <= self.stall_s:
            return Verdict(True, "progressing")
        if now - self._retry <= self.stall_s:
            return Verdict(True, "database unavailable, retrying")
        return Verdict(False, f"{pending} messages pending, no progress for {quiet:.0f} s")
