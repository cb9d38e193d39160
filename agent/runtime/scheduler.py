"""Deadline-based polling: every device keeps its own schedule, whatever the others do.

A device is due at fixed instants (start + k x interval). A poll that runs
late never shifts the phase: missed instants are skipped, not queued. A failed
poll is retried at the device's next instant, like any other: a meter that
misses one answer in three keeps its polling rate. Only from the
``GRACE_FAILURES + 1``-th failure in a row does the device back off, with
capped, jittered delays, so a dead meter costs its bus one timeout per backoff
period, not one per interval; its first answer puts it back on its instants.

A serial line carries one request at a time, so its devices are polled in one
loop, earliest deadline first; on TCP every device has its own task, and the
devices are due in ``slots`` groups per interval (every device of a group at
the same instant): one timer wake-up per group, and the group's results reach
the agent together, instead of one poll every interval/N.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.endpoint import Transport
from drivers.errors import TransportError
from drivers.quantities import Quantity
from drivers.reader import DeviceReader

Values = dict[Quantity, float | None]
#: (poll, ts, values, error, seconds, implausible, ratios): the values outside their
#: plausible range are None in ``values`` and listed, as read, in ``implausible``;
#: ``ratios`` are the transformer ratios the values were scaled with (empty: none).
ResultFn = Callable[
    [
        "DevicePoll",
        int,
        Values | None,
        TransportError | None,
        float,
        Mapping[Quantity, float],
        Mapping[str, float],
    ],
    None,
]


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter (delay in [d/2, d])."""

    base_s: float
    cap_s: float
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self.failures += 1
        delay: float = min(self.cap_s, self.base_s * 2.0 ** (self.failures - 1))
        return delay * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self.failures = 0


#: Failures in a row that are retried at the device's next scheduled instant before it
#: backs off. A meter that times out 30 % of the time fails twice in a row at one poll
#: in eleven and three times at one in 37: backing off from the first failure cut such a
#: meter (and the site's records waiting for it) to a fifth of its polls.
GRACE_FAILURES = 2


@dataclass
class DevicePoll:
    device_id: str
    reader: DeviceReader
    interval_s: float
    backoff: Backoff
    next_due: float = 0.0
    in_backoff: bool = False
    #: Failures since the last answer.
    failures: int = 0
    grace: int = GRACE_FAILURES
    #: While backing off: the instant of the schedule the device left it at.
    _left_at: float = 0.0

    def schedule_after_success(self, now: float) -> None:
        self.backoff.reset()
        self.failures = 0
        if self.in_backoff:
            # Back from backing off: the next instant of its own schedule after now.
            self.in_backoff = False
            self.next_due = self._left_at
        self._next_instant(now)

    def schedule_after_failure(self, now: float) -> None:
        self.failures += 1
        if self.failures <= self.grace:
            self._next_instant(now)  # a lost answer: try again when due anyway
            return
        if not self.in_backoff:
            self.in_backoff, self._left_at = True, self.next_due
        self.next_due = now + max(self.interval_s, self.backoff.next_delay())

    def _next_instant(self, now: float) -> None:
        self.next_due += self.interval_s
        if self.next_due <= now:  # ran late: skip the instants we missed
            missed = int((now - self.next_due) // self.interval_s) + 1
            self.next_due += missed * self.interval_s


class BusPoller:
    """Polls the devices of one bus until ``stop`` is set; each result goes to ``on_result``."""

    def __init__(
        self,
        bus_id: str,
        transport: Transport,
        polls: list[DevicePoll],
        on_result: ResultFn,
        *,
        serial: bool,
        slots: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.bus_id = bus_id
        self.transport = transport
        self.polls = polls
        self.on_result = on_result
        self.serial = serial
        self.slots = max(1, min(slots, len(polls)))
        self.clock = clock
        self.wall_ms = wall_ms
        #: Poll durations in seconds, most recent last (for metrics and the page).
        self.latencies: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        start = self.clock()
        # Spread the first polls over the first interval so a bus is not hit at once:
        # one every interval/N on a serial line, in ``slots`` groups on TCP.
        groups = len(self.polls) if self.serial else self.slots
        for i, p in enumerate(self.polls):
            p.next_due = start + (i % groups / max(groups, 1)) * min(p.interval_s, 1.0)
        if self.serial:
            await self._run_serial(stop)
        else:
            async with asyncio.TaskGroup() as tg:
                for p in self.polls:
                    tg.create_task(self._run_one(p, stop), name=f"poll-{p.device_id}")

    async def _sleep_until(self, due: float, stop: asyncio.Event) -> bool:
        """False when stopped while waiting."""
        delay = due - self.clock()
        if delay > 0:
            # asyncio.timeout, not wait_for: no task per sleep (one per poll).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        return not stop.is_set()

    async def _run_serial(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            p = min(self.polls, key=lambda x: x.next_due)
            if not await self._sleep_until(p.next_due, stop):
                return
            await self._poll(p)

    async def _run_one(self, p: DevicePoll, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self._sleep_until(p.next_due, stop):
                return
            await self._poll(p)

    async def _poll(self, p: DevicePoll) -> None:
        started = self.clock()
        try:
            sample = await p.reader.read(self.transport)
        except TransportError as exc:
            now = self.clock()
            p.schedule_after_failure(now)
            self.on_result(p, self.wall_ms(), None, exc, now - started, {}, {})
            return
        # The reading's time is when its values arrived, not when the poll was due: on a
        # TCP bus the request may have queued behind another unit's timeout (pymodbus
        # sends one request at a time per connection), and the core would attribute a
        # counter read seconds later to the scheduled instant.
        ts = self.wall_ms()
        now = self.clock()
        self.latencies.append(now - started)
        if len(self.latencies) > 1000:
            del self.latencies[:500]
        p.schedule_after_success(now)
        self.on_result(p, ts, sample.values, None, now - started, sample.implausible, sample.ratios)
