"""Accuracy of the engine against exact rational arithmetic, on one day at 1 Hz.

This is the short version for the unit suite (well under a second). The full check, a
year of 1 Hz readings whose total must be right to 1 mWh, runs in ``bench/bench_core.py``
(``accuracy_bench``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from agent.core.channels import SLOT_MS, ChannelSpec
from agent.core.engine import Engine

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000


def one_day(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """1 Hz with +-200 ms jitter (steps straddle slot boundaries and get split), a load
    between 0 and 90 kW, a counter around 54,321 kWh; the last reading exactly at midnight."""
    rng = np.random.default_rng(seed)
    n = 86_400
    ts = T0 + 1000 * np.arange(1, n + 1, dtype=np.int64)
    ts[:-1] += rng.integers(-200, 201, n - 1)
    kw = 45.0 + 40.0 * np.sin(np.arange(n) * 2 * np.pi / 86_400) + rng.random(n) * 5.0
    vals = 54_321.0 + np.cumsum(kw * np.diff(ts, prepend=T0) / 3_600_000.0)
    return ts, vals


def exact_counter(ts: np.ndarray, vals: np.ndarray, t: int) -> Fraction:
    """C(t) exactly: 0 up to the first reading, linear between readings."""
    if t <= ts[0]:
        return Fraction(0)
    i = int(np.searchsorted(ts, t))  # ts[i-1] < t <= ts[i]
    v0, a, b = Fraction(vals[0]), Fraction(vals[i - 1]), Fraction(vals[i])
    return a - v0 + (b - a) * Fraction(int(t - ts[i - 1]), int(ts[i] - ts[i - 1]))


def test_one_day_at_1_hz_matches_exact_arithmetic() -> None:
    ts, vals = one_day()
    spec = ChannelSpec("meter", max_rate_per_h=200.0, tol_abs=1e-9)
    e = Engine([spec], 60)
    rec = e.feed(np.zeros(ts.shape[0], dtype=np.int64), ts, vals).records
    assert len(rec) == 1440 and int(rec.end_ms[-1]) == T0 + DAY_MS
    assert e.events.sum() == 0

    # every minute: C(end) - C(end - 60 s) exactly
    exact_c = {T0: Fraction(0)}
    for end in rec.end_ms.tolist():
        exact_c[end] = exact_counter(ts, vals, end)
    worst = max(
        abs(Fraction(float(x)) - (exact_c[end] - exact_c[end - SLOT_MS]))
        for end, x in zip(rec.end_ms.tolist(), rec.energy.tolist(), strict=True)
    )
    assert worst < Fraction(1, 10**9)

    # the day's total: the records summed in float64, and the 24 h window of the ring
    exact_total = Fraction(vals[-1]) - Fraction(vals[0])
    assert exact_total == exact_c[T0 + DAY_MS]
    assert abs(Fraction(float(np.sum(rec.energy))) - exact_total) < Fraction(1, 10**6)
    end_slot = (T0 + DAY_MS) // SLOT_MS
    window = e.range_sums([end_slot - 1440], [end_slot])[0, 0]
    assert abs(Fraction(float(window)) - exact_total) < Fraction(1, 10**6)
    assert 1000.0 < float(exact_total) < 1200.0  # about 45 kW for 24 h
