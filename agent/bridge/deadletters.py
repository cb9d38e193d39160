"""Which original message each unacknowledged dead letter stands for.

The original is acknowledged once, and only after the broker acknowledged its
dead letter, so a crash in between redelivers the original instead of losing it.
That needs the dead letter's packet id, which ``publish()`` returns; but the
broker's PUBACK is handled on paho's network thread and can be handled *before*
``publish()`` has returned to the writer thread. Holding a lock across
``publish()`` to stop that is what deadlocked the bridge (issue 11; see
:mod:`agent.bridge.consumer`), so instead an answer for a packet id nobody has
filed yet is kept while a publication is in progress, and the publication's
filing finds it.

An early answer counts only if it arrived after its publication began: paho reuses
a packet id once its message is done, and the counter of answers tells a stale
answer for an earlier holder of the same id from the real one.

:class:`DeadLetterBook` is not thread-safe by itself: the consumer calls it under
its lock, and never while calling paho.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Answer = TypeVar("Answer")


@dataclass(frozen=True, slots=True)
class Original:
    """The rejected message: its packet id, QoS and connection generation."""

    mid: int
    qos: int
    generation: int


class DeadLetterBook(Generic[Answer]):
    """Dead letters awaiting the broker's acknowledgement, and answers that came early."""

    def __init__(self) -> None:
        self._waiting: dict[int, Original] = {}
        self._early: dict[int, tuple[int, Answer]] = {}
        self._publishing = 0
        self._answers = 0  # every answer seen, numbering the early ones

    def __len__(self) -> int:
        """Dead letters published and not yet acknowledged by the broker."""
        return len(self._waiting)

    def opening(self) -> int:
        """Before ``publish()``: returns the ticket to hand to :meth:`filed`."""
        self._publishing += 1
        return self._answers

    def filed(
        self, ticket: int, mid: int | None, original: Original, *, live: bool
    ) -> Answer | None:
        """After ``publish()`` (``mid`` None: nothing was queued).

        Returns the broker's answer when it came first: the caller settles the
        original now. Otherwise the dead letter waits for :meth:`answered`, unless
        its connection is gone (``live`` False): then the broker redelivers the
        original on the next one, and it is rejected again.
        """
        self._publishing -= 1
        early = self._early.pop(mid, None) if mid is not None else None
        if not self._publishing:
            self._early.clear()  # nobody can claim what is left
        if mid is None:
            return None
        if early is not None and early[0] > ticket:
            return early[1]
        if live:
            self._waiting[mid] = original
        return None

    def answered(self, mid: int, answer: Answer) -> Original | None:
        """The broker's PUBACK: the original to settle, or None (not ours, or early)."""
        self._answers += 1
        original = self._waiting.pop(mid, None)
        if original is None and self._publishing:
            self._early[mid] = (self._answers, answer)
        return original

    def clear(self) -> None:
        """The connection changed: what was waiting is redelivered and rejected again."""
        self._waiting.clear()
        self._early.clear()


class LogThrottle:
    """At most ``burst`` log lines per key (a reject reason) per ``window_s``.

    A gateway with a broken clock sends a reject with every message, and a flood of
    garbage thousands a second: one line each would bury everything else in the
    journal (and get the service rate-limited by journald). The dead-letter topic
    and ``energy_bridge_rejects_total`` keep the full count; the log keeps samples
    and says how many it left out.
    """

    def __init__(
        self, burst: int = 10, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()  # a leaf: nothing is called while it is held
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, lines asked)

    def allow(self, key: str) -> tuple[bool, int]:
        """(log this one?, how many of this key the window that just ended left out)."""
        now = self._clock()
        with self._lock:
            start, asked = self._windows.get(key, (now, 0))
            left_out = 0
            if now - start >= self.window_s:
                left_out = max(0, asked - self.burst)
                start, asked = now, 0
            self._windows[key] = (start, asked + 1)
        return asked < self.burst, left_out
