"""The polling schedule, as tables: (when the poll ran, its outcome, when it ended) ->
when the device is due next.

A failure is retried at the device's next instant (``GRACE_FAILURES`` in a row); only
the one after backs off, with delays that double up to the cap; an answer puts the
device back on its instants. The jitter is pinned to its top (the full delay), so
every number here is written by hand.
"""

from __future__ import annotations

import random
from typing import cast

import pytest

from agent.runtime.scheduler import GRACE_FAILURES, Backoff, DevicePoll
from drivers.reader import DeviceReader


class _NoJitter(random.Random):
    """``random()`` at 1.0: a backoff delay is its whole nominal value."""

    def random(self) -> float:
        return 1.0


def _poll(interval_s: float, cap_s: float = 60.0) -> DevicePoll:
    backoff = Backoff(base_s=interval_s, cap_s=cap_s, rng=_NoJitter())
    return DevicePoll("m", cast(DeviceReader, None), interval_s, backoff, next_due=0.0)


def _run(p: DevicePoll, steps: list[tuple[bool, float]]) -> list[float]:
    """Each step: (answered, the clock when the poll ended); the next due time after it."""
    out = []
    for ok, now in steps:
        if ok:
            p.schedule_after_success(now)
        else:
            p.schedule_after_failure(now)
        out.append(p.next_due)
    return out


def test_grace_is_two_failures() -> None:
    assert GRACE_FAILURES == 2


def test_a_dead_meter_stays_on_its_instants_twice_then_backs_off_to_the_cap() -> None:
    # 5 s interval, each timeout ends 1 s after the poll began (the poll ran at next_due).
    p = _poll(5.0)
    steps = [
        (False, 1.0),  # 1st failure at 0: next instant, 5
        (False, 6.0),  # 2nd at 5: next instant, 10
        (False, 11.0),  # 3rd at 10: backs off, 11 + 5 x 2^0
        (False, 17.0),  # at 16: 17 + 10
        (False, 28.0),  # at 27: 28 + 20
        (False, 49.0),  # at 48: 49 + 40
        (False, 90.0),  # at 89: 80 capped at 60
        (False, 151.0),  # at 150: still 60
    ]
    assert _run(p, steps) == [5.0, 10.0, 16.0, 27.0, 48.0, 89.0, 150.0, 211.0]
    assert p.in_backoff and p.failures == 8


def test_an_answer_puts_a_backed_off_meter_back_on_its_instants() -> None:
    p = _poll(5.0)
    _run(p, [(False, 1.0), (False, 6.0), (False, 11.0)])  # due at 16, backing off
    # answers at 16.2: the next instant of the grid (multiples of 5) after it is 20
    assert _run(p, [(True, 16.2)]) == [20.0]
    assert not p.in_backoff and p.failures == 0
    # and a failure after that is once more retried at the next instant
    assert _run(p, [(False, 21.0), (True, 25.3)]) == [25.0, 30.0]


@pytest.mark.parametrize(
    ("outcomes", "due"),
    [
        # one in three lost: never leaves the grid
        ("ok fail ok ok fail ok ok fail ok", [1.0 * k for k in range(1, 10)]),
        # two in a row lost: still on the grid
        ("fail fail ok fail fail ok", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        # three in a row: the third backs off, 1 s from its end (2.7); the answer at 3.9
        # puts it back on its instants (4)
        ("fail fail fail ok", [1.0, 2.0, 3.7, 4.0]),
    ],
)
def test_a_flaky_meter_keeps_its_rate(outcomes: str, due: list[float]) -> None:
    """A 1 s meter whose answers come 0.2 s and timeouts 0.7 s after the poll was due;
    the third failure in a row waits max(interval, 1 x base) from the end of the poll."""
    p = _poll(1.0)
    got = []
    for outcome in outcomes.split():
        now = p.next_due + (0.2 if outcome == "ok" else 0.7)
        got += _run(p, [(outcome == "ok", now)])
    assert got == pytest.approx(due)


def test_a_late_poll_skips_the_instants_it_missed() -> None:
    """A failure that took longer than an interval (a serial line behind a dead meter)
    is retried at the next instant after it ended, not at the ones it missed."""
    p = _poll(1.0)
    assert _run(p, [(False, 3.4)]) == [4.0]
    assert _run(p, [(True, 4.1)]) == [5.0]
