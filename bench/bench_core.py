"""Core benchmark: streaming throughput, year replay, accuracy, memory and start-up.

Run: ``.venv/bin/python -m bench.bench_core [--quick]`` (pandas is needed: ``pip install -e
'.[bench]'``).

1. Streaming: 10,000 counter channels, one reading each per scan, a scan a second for an
   hour. ``Engine.feed`` once per scan, against a vectorised numpy implementation of the
   same slot energies and 1 min / 15 min / 1 h / 24 h windows, pandas (on a subset,
   extrapolated per reading) and the pure-Python ``ReferenceCore`` (subset, extrapolated).
   The fixed cost of one ``feed`` call is timed with one-reading scans.
2. Replay: a year of 1 Hz readings of one meter through ``Engine.feed`` in one call, against
   pandas ``resample('1min')`` of the counter diff plus rolling sums.
3. Accuracy: the year's energy from the interval records against exact rational arithmetic;
   a single absurd spike (1e12) must leave no residue in the windows.
4. Memory per channel of the engine's state arrays.
5. Start-up of a fresh process to the first closed interval, with a warm and a cold numba
   cache.

The machine has two cores and other processes may run beside the benchmark, so every time
reported is the best of several runs (the least disturbed one); the figures are for one
core, all ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from agent.core.channels import RING, SLOT_MS, ChannelSpec
from agent.core.engine import Engine, Records
from agent.core.reference import ReferenceCore
from bench.machine import describe

try:
    import pandas as pd
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("bench_core needs pandas: pip install -e '.[bench]'")

#: 2025-01-01T00:00:00Z, a minute (and day) boundary.
T0 = 1_735_689_600_000
MAX_RATE = 400.0  # kW: the largest plausible increase per hour, in kWh
TOL_REL = 2.0**-22  # a float32 register's resolution
WINDOWS = (1, 15, 60, 1440)  # minutes
INTERVAL_S = 900
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    channels: int
    scans: int
    repeat: int
    pandas_channels: int
    pandas_scans: int
    ref_channels: int
    ref_scans: int
    overhead_calls: int
    days: int
    replay_repeat: int
    pandas_repeat: int
    warm_starts: int
    cold_starts: int


FULL = Sizes(10_000, 3_600, 5, 1_000, 900, 100, 600, 20_000, 365, 5, 2, 3, 2)
QUICK = Sizes(10_000, 960, 2, 300, 300, 50, 300, 5_000, 30, 2, 1, 2, 1)


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-``repeat`` seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _best_with(setup: Callable[[], T], fn: Callable[[T], object], repeat: int) -> float:
    """Like :func:`_best`, with ``setup()`` (building an engine, say) outside the timing."""
    best = float("inf")
    for _ in range(repeat):
        arg = setup()
        t0 = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def _prefault(*arrays: np.ndarray) -> None:
    """Write every page of fresh (lazily zeroed) arrays once."""
    for a in arrays:
        a.fill(0)


def _spec(i: int) -> ChannelSpec:
    return ChannelSpec(f"m{i}", max_rate_per_h=MAX_RATE, tol_rel=TOL_REL, wrap=0.0)


def _window_args(end_slot: int) -> tuple[np.ndarray, np.ndarray]:
    ends = np.full(len(WINDOWS), end_slot, dtype=np.int64)
    return ends - np.array(WINDOWS, dtype=np.int64), ends


def _ok(passed: bool) -> str:
    return "PASS" if passed else "**FAIL**"


def _mrps(readings: float, seconds: float) -> float:
    return readings / seconds / 1e6


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- 1. streaming --------------------------------------------------------------------------


@dataclass
class Stream:
    chans: np.ndarray  # [n] channel of each reading in a scan
    ts: np.ndarray  # [scans, n] int64 ms, every channel read at the same instant
    vals: np.ndarray  # [scans, n] float64 counters, kWh
    closes: list[bool]  # this scan's instant ends a minute: it closes a slot


def make_stream(n: int, scans: int, seed: int = 1) -> Stream:
    rng = np.random.default_rng(seed)
    start = rng.uniform(1e3, 1e5, n)
    steps = rng.random((scans, n)) * 0.02  # up to 72 kW per channel
    steps[0] = 0.0
    vals = start + np.cumsum(steps, axis=0)
    t = T0 + 1000 * (1 + np.arange(scans, dtype=np.int64))  # first scan at 00:00:01
    ts = np.repeat(t[:, None], n, axis=1)
    return Stream(np.arange(n, dtype=np.int64), ts, vals, [int(x) % SLOT_MS == 0 for x in t])


class NumpyStream:
    """The same slot energies and windows as a competent engineer writes them with numpy.

    Per scan: masks for resets (a decrease: new baseline, nothing counted) and glitches (an
    increase beyond the channel's rate: reading ignored), the step added to the current
    minute's bucket. On each minute boundary the bucket goes into a ring of 1440 one-minute
    slots (slot-major, so a slot is one contiguous row) and the four window sums are updated
    with add/subtract. Assumes a full scan in channel order (what this benchmark feeds it).
    """

    def __init__(self, n: int, max_rate: np.ndarray, tol_rel: np.ndarray) -> None:
        self.rate = max_rate
        self.tol = tol_rel
        self.prev = np.full(n, np.nan)
        self.prev_t = np.zeros(n, dtype=np.int64)
        self.cur = np.zeros(n)
        self.ring = np.zeros((1440, n))
        self.pos = 0
        self.win = np.zeros((len(WINDOWS), n))

    def feed(self, ts: np.ndarray, vals: np.ndarray, closes: bool) -> None:
        d = vals - self.prev
        limit = self.rate * (ts - self.prev_t) / 3_600_000.0 + self.tol * np.abs(vals)
        ok = (d >= 0.0) & (d <= limit)
        self.cur += np.where(ok, d, 0.0)
        take = ~(d > limit) & ~np.isnan(vals)  # accepted, reset or first reading
        np.copyto(self.prev, vals, where=take)
        np.copyto(self.prev_t, ts, where=take)
        if closes:
            self.close_minute()

    def close_minute(self) -> None:
        p, r, cur, w = self.pos, self.ring, self.cur, self.win
        w[3] += cur - r[p]  # the slot leaving the 24 h window
        r[p] = cur
        w[0] = cur
        w[1] += cur - r[(p - 15) % 1440]
        w[2] += cur - r[(p - 60) % 1440]
        self.pos = (p + 1) % 1440
        cur[:] = 0.0


def pandas_windows(
    chans: np.ndarray, ts: np.ndarray, vals: np.ndarray
) -> tuple[pd.DataFrame, dict[int, pd.DataFrame]]:
    """A data analyst's version: readings in a frame, diff per channel, 1-min resample,
    rolling sums. ``closed='right'`` puts a reading on a minute boundary into the minute it
    ends, as the engine does."""
    df = pd.DataFrame({"channel": chans, "ts": pd.to_datetime(ts, unit="ms"), "value": vals})
    wide = df.pivot(index="ts", columns="channel", values="value")
    delta = wide.diff()
    hours = wide.index.to_series().diff().dt.total_seconds() / 3600.0
    limit = wide.abs().mul(TOL_REL).add(hours * MAX_RATE, axis=0)
    delta = delta.where((delta >= 0.0) & (delta <= limit), 0.0)
    slots = delta.resample("1min", closed="right", label="left").sum()
    windows = {w: slots.rolling(w, min_periods=1).sum() for w in WINDOWS[1:]}
    return slots, windows


@dataclass
class StreamResult:
    n: int
    scans: int
    t_feed: float
    t_feed_win: float
    t_fresh: float
    t_numpy: float
    pandas_readings: int
    t_pandas: float
    ref_readings: int
    t_ref: float
    t_call: float
    slots_checked: int
    slot_bits: bool
    win_diff: float
    pd_diff: float
    ref_diff: float
    engine: Engine

    @property
    def readings(self) -> int:
        return self.n * self.scans


def streaming_bench(sz: Sizes) -> StreamResult:
    n, scans = sz.channels, sz.scans
    st = make_stream(n, scans)
    specs = [_spec(i) for i in range(n)]
    wargs = [
        _window_args(int(st.ts[i, 0]) // SLOT_MS) if st.closes[i] else None for i in range(scans)
    ]

    # warm the compiled kernel (cached or compiled now) outside every timing
    warm = Engine(specs[:2], INTERVAL_S)
    warm.feed(st.chans[:2], st.ts[0, :2], st.vals[0, :2])
    warm.range_sums(*_window_args(1))

    engines: list[Engine] = []

    def new_engine() -> Engine:
        # Steady state, as in a running agent: the ring's pages are faulted in here, outside
        # the timing (a fresh engine is timed once below).
        engines.clear()
        e = Engine(specs, INTERVAL_S)
        _prefault(e.ring_e, e.ring_f, e.ring_cov)
        engines.append(e)
        return e

    def feed_only(e: Engine) -> None:
        for i in range(scans):
            e.feed(st.chans, st.ts[i], st.vals[i])

    def feed_windows(e: Engine) -> None:
        for i in range(scans):
            e.feed(st.chans, st.ts[i], st.vals[i])
            w = wargs[i]
            if w is not None:
                e.range_sums(*w)

    t_feed = _best_with(new_engine, feed_only, sz.repeat)
    t_feed_win = _best_with(new_engine, feed_windows, sz.repeat)
    e = engines.pop()
    t_fresh = _best_with(lambda: Engine(specs, INTERVAL_S), feed_only, 1)

    rate = np.full(n, MAX_RATE)
    tol = np.full(n, TOL_REL)
    baselines: list[NumpyStream] = []

    def new_baseline() -> NumpyStream:
        baselines.clear()
        baselines.append(NumpyStream(n, rate, tol))
        _prefault(baselines[0].ring)
        return baselines[0]

    def numpy_run(b: NumpyStream) -> None:
        for i in range(scans):
            b.feed(st.ts[i], st.vals[i], st.closes[i])

    t_numpy = _best_with(new_baseline, numpy_run, sz.repeat)
    b = baselines.pop()

    # agreement: slots bit for bit, windows up to the running sums' rounding
    n_closed = sum(st.closes)
    first_slot = int(st.ts[0, 0]) // SLOT_MS
    eng_slots = np.stack([e.ring_e[:, (first_slot + m) % RING] for m in range(n_closed)])
    eng_win = e.range_sums(*_window_args(first_slot + n_closed)).T
    slot_bits = _same_bits(eng_slots, b.ring[:n_closed])
    win_diff = float(np.max(np.abs(eng_win - b.win)))

    # pandas on a subset, in the long format readings arrive in
    pc, ps = sz.pandas_channels, sz.pandas_scans
    p_chans = np.tile(st.chans[:pc], ps)
    p_ts = st.ts[:ps, :pc].ravel()
    p_vals = st.vals[:ps, :pc].ravel()
    out: list[pd.DataFrame] = []
    t_pandas = _best(lambda: out.append(pandas_windows(p_chans, p_ts, p_vals)[0]), sz.pandas_repeat)
    p_closed = sum(st.closes[:ps])
    pd_diff = float(np.max(np.abs(out[-1].to_numpy()[:p_closed] - eng_slots[:p_closed, :pc])))

    # the reference core on a smaller subset, windows read at each minute like the others
    rc, rs = sz.ref_channels, sz.ref_scans
    refs: list[ReferenceCore] = []

    def ref_run() -> None:
        ref = ReferenceCore(specs[:rc], INTERVAL_S)
        for i in range(rs):
            ref.feed_many(st.chans[:rc], st.ts[i, :rc], st.vals[i, :rc])
            if st.closes[i]:
                ref.closed_intervals()
                end_slot = int(st.ts[i, 0]) // SLOT_MS
                for c in range(rc):
                    for w in WINDOWS:
                        ref.range_sum(c, end_slot - w, end_slot)
        refs[:] = [ref]

    t_ref = _best(ref_run, max(1, sz.repeat - 1))
    r_closed = sum(st.closes[:rs])
    ref_slots = np.array(
        [[refs[0].slot_energy(c, first_slot + m) for c in range(rc)] for m in range(r_closed)]
    )
    ref_diff = float(np.max(np.abs(ref_slots - eng_slots[:r_closed, :rc])))

    # fixed cost of one call: one channel, one reading
    calls = sz.overhead_calls
    c1 = np.zeros(1, dtype=np.int64)
    ts1 = [np.array([T0 + 1000 * (i + 1)], dtype=np.int64) for i in range(calls)]
    v1 = [np.array([1000.0 + 0.01 * i]) for i in range(calls)]

    def overhead_run(e1: Engine) -> None:
        feed = e1.feed
        for i in range(calls):
            feed(c1, ts1[i], v1[i])

    t_call = _best_with(lambda: Engine(specs[:1], INTERVAL_S), overhead_run, 5) / calls

    return StreamResult(
        n=n,
        scans=scans,
        t_feed=t_feed,
        t_feed_win=t_feed_win,
        t_fresh=t_fresh,
        t_numpy=t_numpy,
        pandas_readings=pc * ps,
        t_pandas=t_pandas,
        ref_readings=rc * rs,
        t_ref=t_ref,
        t_call=t_call,
        slots_checked=n_closed,
        slot_bits=slot_bits,
        win_diff=win_diff,
        pd_diff=pd_diff,
        ref_diff=ref_diff,
        engine=e,
    )


# --- 2. and 3. a year of 1 Hz readings -----------------------------------------------------


@dataclass
class Year:
    ts: np.ndarray
    vals: np.ndarray
    chans: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.ts.shape[0])


def make_year(days: int, seed: int = 2) -> Year:
    """1 Hz with ±200 ms jitter (so steps straddle slot boundaries and are split); the first
    reading inside the first minute, the last exactly on the final midnight."""
    rng = np.random.default_rng(seed)
    n = days * 86_400
    ts = T0 + 1000 * np.arange(1, n + 1, dtype=np.int64)
    ts[:-1] += rng.integers(-200, 201, n - 1)
    vals = 54_321.0 + np.cumsum(rng.random(n) * 0.02)  # up to 72 kW
    return Year(ts, vals, np.zeros(n, dtype=np.int64))


@dataclass
class ReplayResult:
    t_engine: float
    t_pandas: float
    records: Records
    slot_diff: float
    total_diff: float


def replay_bench(sz: Sizes, y: Year) -> ReplayResult:
    recs: list[Records] = []

    def engine_run(e: Engine) -> None:
        recs[:] = [e.feed(y.chans, y.ts, y.vals).records]

    warm = Engine([_spec(0)], 60)
    warm.feed(y.chans[:100], y.ts[:100], y.vals[:100])
    t_engine = _best_with(lambda: Engine([_spec(0)], 60), engine_run, sz.replay_repeat)
    rec = recs[0]

    slots_out: list[pd.Series] = []

    def pandas_run() -> None:
        s = pd.Series(y.vals, index=pd.to_datetime(y.ts, unit="ms"))
        d = s.diff()
        hours = s.index.to_series().diff().dt.total_seconds() / 3600.0
        d = d.where((d >= 0.0) & (d <= hours * MAX_RATE + s.abs() * TOL_REL), 0.0)
        slots = d.resample("1min", closed="right", label="left").sum()
        for w in WINDOWS[1:]:
            slots.rolling(w, min_periods=1).sum()
        slots_out[:] = [slots]

    t_pandas = _best(pandas_run, sz.pandas_repeat)
    pd_slots = slots_out[0].to_numpy()
    same_len = pd_slots.shape[0] == len(rec)
    return ReplayResult(
        t_engine=t_engine,
        t_pandas=t_pandas,
        records=rec,
        slot_diff=float(np.max(np.abs(pd_slots - rec.energy))) if same_len else float("nan"),
        total_diff=abs(float(pd_slots.sum() - rec.energy.sum())),
    )


def exact_sum(x: np.ndarray) -> Fraction:
    """The exact rational sum of float64 values, vectorised.

    Each value is m·2^e with a 53-bit integer m. m is cut into three 18-bit pieces and the
    pieces are summed per exponent with ``np.bincount``: every partial sum is an integer
    below 2^53 (pieces < 2^18, fewer than 2^35 values), so float64 holds it exactly. The
    per-exponent integers are then combined with Python's unbounded ints.
    """
    mant, ex = np.frexp(np.asarray(x, dtype=np.float64))
    m = (mant * 2.0**53).astype(np.int64)  # exact: the significand as an integer
    e = ex.astype(np.int64) - 53
    e0 = int(e.min())
    idx = e - e0
    total = 0
    for shift in (36, 18, 0):
        piece = m >> shift if shift == 36 else (m >> shift) & (2**18 - 1)
        sums = np.bincount(idx, weights=piece.astype(np.float64))
        for k in np.flatnonzero(sums):
            total += int(sums[k]) << int(k + shift)
    return Fraction(total) * Fraction(2) ** e0


def exact_counter(ts: np.ndarray, vals: np.ndarray, t: int) -> Fraction:
    """The virtual counter C(t) in exact arithmetic, for a stream whose every reading is
    accepted: 0 up to the first reading, linear between readings (as in reference.py)."""
    if t <= ts[0]:
        return Fraction(0)
    i = int(np.searchsorted(ts, t))  # ts[i-1] < t <= ts[i]
    v0, a, b = Fraction(vals[0]), Fraction(vals[i - 1]), Fraction(vals[i])
    return a - v0 + (b - a) * Fraction(int(t - ts[i - 1]), int(ts[i] - ts[i - 1]))


@dataclass
class AccuracyResult:
    total_kwh: float
    telescopes: bool
    sterbenz: bool
    err: float
    rounded_err: float
    sampled: int
    worst_interval: float


def accuracy_bench(y: Year, rec: Records) -> AccuracyResult:
    rng = np.random.default_rng(3)
    probe = rng.random(20_000) * 10.0 ** rng.integers(-12, 6, 20_000)
    assert exact_sum(probe) == sum(map(Fraction, probe.tolist())), "exact_sum is not exact"

    # Every reading of this stream is accepted, so the accepted steps are np.diff(vals).
    # Sterbenz: b - a is exact when a/2 <= b <= 2a, so every float step is the real step and
    # their exact sum telescopes to last - first (checked, not assumed).
    a, b = y.vals[:-1], y.vals[1:]
    sterbenz = bool(np.all((b <= 2 * a) & (a <= 2 * b)))
    exact = exact_sum(np.diff(y.vals))
    telescopes = exact == Fraction(y.vals[-1]) - Fraction(y.vals[0])
    err = abs(float(exact_sum(rec.energy) - exact))
    rounded_err = abs(float(Fraction(float(np.sum(rec.energy))) - exact))

    # per interval, on every 97th record: C(end) - C(end - 60 s) in exact arithmetic
    worst = Fraction(0)
    sample = range(0, len(rec), 97)
    for j in sample:
        end = int(rec.end_ms[j])
        want = exact_counter(y.ts, y.vals, end) - exact_counter(y.ts, y.vals, end - 60_000)
        worst = max(worst, abs(Fraction(float(rec.energy[j])) - want))
    return AccuracyResult(
        total_kwh=float(exact),
        telescopes=telescopes,
        sterbenz=sterbenz,
        err=err,
        rounded_err=rounded_err,
        sampled=len(sample),
        worst_interval=float(worst),
    )


@dataclass
class SpikeResult:
    checkpoints: int
    glitches: int
    same_as_dropped: bool
    untouched_equal: int
    not_covering: int
    covering: int
    covering_diff: float
    running_residue: float

    @property
    def no_residue(self) -> bool:
        return self.same_as_dropped and self.untouched_equal == self.not_covering


@dataclass
class _Run:
    windows: list[tuple[int, np.ndarray]]  # (closed slot end, the 4 window sums) per checkpoint
    records: list[np.ndarray]
    engine: Engine


def _checkpointed(y: Year, ts: np.ndarray, vals: np.ndarray, cuts: list[int]) -> _Run:
    e = Engine([_spec(0)], 60)
    run = _Run([], [], e)
    start = 0
    for stop in cuts:
        rec = e.feed(y.chans[start:stop], ts[start:stop], vals[start:stop]).records
        run.records += [rec.end_ms, rec.energy, rec.flags]
        end = int(e.closed_slot_end()[0])
        run.windows.append((end, e.range_sums(*_window_args(end))[0]))
        start = stop
    return run


def spike_bench(y: Year) -> SpikeResult:
    """A 1e12 reading mid-stream against the same stream without that reading, and against
    the untouched stream; windows read at many checkpoints, some right after the spike."""
    n = y.rows
    at = n // 2 + 12_345
    cps = set(range(86_400, n, 86_400)) | {n}
    cps |= {at + k for k in (1, 30, 61, 301, 901, 3_601, 86_401) if at + k < n}
    cuts = sorted(cps)
    spiked = y.vals.copy()
    spiked[at] = 1e12

    a = _checkpointed(y, y.ts, spiked, cuts)
    b = _checkpointed(y, np.delete(y.ts, at), np.delete(y.vals, at), [c - (c > at) for c in cuts])
    c = _checkpointed(y, y.ts, y.vals, cuts)
    same_as_dropped = (
        all(
            ea == eb and _same_bits(wa, wb)
            for (ea, wa), (eb, wb) in zip(a.windows, b.windows, strict=True)
        )
        and all(_same_bits(ra, rb) for ra, rb in zip(a.records, b.records, strict=True))
        and _same_bits(a.engine.ring_e, b.engine.ring_e)
        and _same_bits(a.engine.ring_f, b.engine.ring_f)
    )
    spike_slot = int(y.ts[at]) // SLOT_MS
    untouched_equal = covering = 0
    covering_diff = 0.0
    for (end, wa), (_, wc) in zip(a.windows, c.windows, strict=True):
        for k, w in enumerate(WINDOWS):
            if end - w <= spike_slot < end:
                covering += 1
                covering_diff = max(covering_diff, abs(float(wa[k] - wc[k])))
            else:
                untouched_equal += int(_same_bits(wa[k : k + 1], wc[k : k + 1]))

    # For contrast: a 24 h sum kept with add/subtract (the numpy baseline's way), after the
    # same value reached one slot, at the end, long after the slot left the window again.
    series = np.tile(a.engine.ring_e[0], 4)  # realistic slot energies
    hit = RING + 100
    bad = series.copy()
    bad[hit] += 1e12

    def running(x: np.ndarray) -> float:
        d = x.copy()
        d[1440:] -= x[:-1440]
        return float(np.cumsum(d)[-1])  # S_k = S_(k-1) + (new - leaving), in order

    return SpikeResult(
        checkpoints=len(cuts),
        glitches=int(a.engine.events[0].sum()),
        same_as_dropped=same_as_dropped,
        untouched_equal=untouched_equal,
        not_covering=len(a.windows) * len(WINDOWS) - covering,
        covering=covering,
        covering_diff=covering_diff,
        running_residue=abs(running(bad) - running(series)),
    )


# --- 5. start-up ---------------------------------------------------------------------------

CHILD = """
import sys, time
import numpy as np
from agent.core.channels import ChannelSpec
from agent.core.engine import Engine
e = Engine([ChannelSpec("m", max_rate_per_h=400.0)], 60)
t = np.array([{t0}, {t0} + 60_000], dtype=np.int64)
r = e.feed(np.zeros(2, dtype=np.int64), t, np.array([10.0, 10.5])).records
assert len(r) == 1 and r.energy[0] == 0.5
print(time.time() - float(sys.argv[1]))
"""


def _since_spawn(code: str, env: dict[str, str] | None = None) -> float:
    """Seconds from just before spawning ``python -c code`` to the moment it prints."""
    t_spawn = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code, repr(t_spawn)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


@dataclass
class StartupResult:
    warm: float
    cold: float
    python: float


def startup_bench(sz: Sizes) -> StartupResult:
    code = CHILD.format(t0=T0)
    cold = []
    for _ in range(sz.cold_starts):
        with tempfile.TemporaryDirectory(prefix="numba-cold-") as d:
            cold.append(_since_spawn(code, dict(os.environ, NUMBA_CACHE_DIR=d)))
    with tempfile.TemporaryDirectory(prefix="numba-warm-") as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        _since_spawn(code, env)  # fill the cache
        warm = min(_since_spawn(code, env) for _ in range(sz.warm_starts))
    bare = "import sys, time; print(time.time() - float(sys.argv[1]))"
    python = min(_since_spawn(bare) for _ in range(3))
    return StartupResult(warm=warm, cold=min(cold), python=python)


# --- report --------------------------------------------------------------------------------


def report_streaming(sz: Sizes, s: StreamResult, targets: list[tuple[str, str, bool]]) -> None:
    eng = _mrps(s.readings, s.t_feed)
    eng_w = _mrps(s.readings, s.t_feed_win)
    npy = _mrps(s.readings, s.t_numpy)
    print(
        f"### 1. Streaming: {s.n:,} counter channels, one reading each per scan, "
        f"{s.scans:,} scans (1 s apart)\n"
    )
    print(
        "| implementation | readings timed | seconds | million readings/s "
        "| engine (feed) ÷ this | engine (feed + windows) ÷ this |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    rows = [
        ("Engine.feed per scan", s.readings, s.t_feed),
        ("Engine.feed per scan + 4 windows (range_sums) each minute", s.readings, s.t_feed_win),
        ("numpy, vectorised per scan, running window sums", s.readings, s.t_numpy),
        (
            f"pandas pivot/diff/resample/rolling, batch ({s.pandas_readings:,} readings: "
            "subset, extrapolated)",
            s.pandas_readings,
            s.t_pandas,
        ),
        (
            f"ReferenceCore, pure Python ({s.ref_readings:,} readings: subset, extrapolated)",
            s.ref_readings,
            s.t_ref,
        ),
    ]
    for k, (name, nr, t) in enumerate(rows):
        r = _mrps(nr, t)
        ratios = "| | |" if k < 2 else f"| {eng / r:,.2f}× | {eng_w / r:,.2f}× |"
        print(f"| {name} | {nr:,} | {t:.3f} | {r:,.2f} {ratios}")
    print(
        f"\nFixed cost of one `Engine.feed` call (one channel, one reading, best of 5 × "
        f"{sz.overhead_calls:,} calls): **{s.t_call * 1e6:.1f} µs**.\n"
    )
    print(
        f"Same data, same results: the {s.slots_checked} one-minute slots of all {s.n:,} "
        f"channels are {'bit-identical' if s.slot_bits else 'NOT identical'} between engine "
        f"and numpy, and the windows at the end agree within {s.win_diff:.1e} kWh (numpy's "
        "running add/subtract sums against the engine's recomputation from its ring); pandas' "
        f"slots within {s.pd_diff:.1e} kWh, ReferenceCore's within {s.ref_diff:.1e} kWh. The "
        "baselines implement the same reset and glitch masks but not re-baselining, wraps, "
        "gaps, split steps or out-of-order readings, which this clean, aligned stream does "
        "not need; pandas runs in one batch (its most favourable use) rather than per scan. "
        "Engine and numpy rings are faulted in before timing (a running agent's steady "
        "state); on a fresh engine, whose ring pages are first written as slots close, the "
        f"engine's feed run took {s.t_fresh:.2f} s (once, not best-of).\n"
    )
    targets.append(
        ("≥ 20 M channel-readings/s on one core (Engine.feed)", f"{eng:,.1f} M/s", eng >= 20)
    )
    targets.append(("≥ 5× numpy: feed only", f"{eng / npy:.2f}×", eng / npy >= 5))
    targets.append(
        ("≥ 5× numpy: feed + windows each minute", f"{eng_w / npy:.2f}×", eng_w / npy >= 5)
    )
    targets.append(
        ("≤ 50 µs fixed overhead per feed call", f"{s.t_call * 1e6:.1f} µs", s.t_call <= 50e-6)
    )


def report_replay(
    sz: Sizes, y: Year, r: ReplayResult, targets: list[tuple[str, str, bool]]
) -> None:
    print(
        f"### 2. Replay: {sz.days} days of 1 Hz readings of one meter ({y.rows:,} rows), "
        "one call, 60 s intervals\n"
    )
    print("| implementation | seconds | million rows/s | engine is |")
    print("|---|---:|---:|---:|")
    print(
        f"| Engine.feed (all {len(r.records):,} interval records) | {r.t_engine:.2f} "
        f"| {_mrps(y.rows, r.t_engine):.1f} | |"
    )
    print(
        f"| pandas diff + resample('1min') + rolling 15/60/1440 | {r.t_pandas:.2f} "
        f"| {_mrps(y.rows, r.t_pandas):.1f} | {r.t_pandas / r.t_engine:.1f}× faster |"
    )
    print(
        f"\npandas' minute sums differ from the engine's records by up to {r.slot_diff:.3g} kWh "
        "(pandas books a step that straddles a minute boundary wholly in the minute it ends; "
        "the engine splits it in proportion to time); the totals differ by "
        f"{r.total_diff:.1e} kWh.\n"
    )
    year_s = r.t_engine * 365 / sz.days
    note = "" if sz.days == 365 else f" (scaled from {sz.days} days)"
    targets.append(("a year of 1 Hz replayed in < 3 s", f"{year_s:.2f} s{note}", year_s < 3))


def report_accuracy(
    acc: AccuracyResult, sp: SpikeResult, targets: list[tuple[str, str, bool]]
) -> None:
    print("### 3. Accuracy (the same stream)\n")
    print("| check | result |")
    print("|---|---|")
    print(f"| energy over the stream, exact | {acc.total_kwh:,.6f} kWh |")
    print(
        "| how the exact value is computed | Σ of the accepted float64 steps as one exact "
        "rational (bincount of 18-bit significand pieces per exponent; checked against "
        "`Fraction` on 20,000 values). Every step exact by Sterbenz: "
        f"{acc.sterbenz}; equal to last − first in `Fraction`: {acc.telescopes} |"
    )
    print(f"| Σ of the engine's interval records (summed exactly) − exact | {acc.err:.1e} kWh |")
    print(f"| the same Σ rounded once more by a float64 `np.sum` | {acc.rounded_err:.1e} kWh |")
    print(
        f"| worst single interval against C(end) − C(end − 60 s) in `Fraction` "
        f"({acc.sampled:,} records, every 97th) | {acc.worst_interval:.1e} kWh |"
    )
    print(
        f"| spike of 1e12 mid-stream against the stream without that reading: windows at "
        f"{sp.checkpoints} checkpoints (some 1 s to 1 day after the spike), every record, "
        f"the ring | {'bit-identical' if sp.same_as_dropped else '**DIFFERENT**'} "
        f"({sp.glitches} glitch counted) |"
    )
    print(
        f"| spike against the untouched stream | {sp.untouched_equal}/{sp.not_covering} "
        f"windows not covering the spike's minute bit-identical; the {sp.covering} covering it "
        f"within {sp.covering_diff:.1e} kWh (one 2 s step there instead of two 1 s steps) |"
    )
    print(
        "| for contrast: a 24 h sum kept with add/subtract after 1e12 reached one slot "
        f"| still off by {sp.running_residue:.1e} kWh long after that slot left the window |\n"
    )
    targets.append(("energy error ≤ 1 mWh (1e-6 kWh)", f"{acc.err:.1e} kWh", acc.err <= 1e-6))
    targets.append(
        (
            "a 1e12 spike leaves no residue in the windows",
            "bit-identical" if sp.no_residue else "residue",
            sp.no_residue,
        )
    )


def report_memory(e: Engine, targets: list[tuple[str, str, bool]]) -> None:
    arrays = e.state_arrays()
    per = {k: a.nbytes / a.shape[0] for k, a in arrays.items()}
    total = sum(per.values())
    print(f"### 4. Memory per channel (Engine state arrays, {e.I.shape[0]:,} channels)\n")
    print("| array | bytes per channel |")
    print("|---|---:|")
    for k, v in per.items():
        print(f"| {k} {arrays[k].dtype}{list(arrays[k].shape[1:])} | {v:,.0f} |")
    print(f"| **total** | **{total:,.0f}** ({total / 1024:.1f} KiB) |\n")
    print(
        "Plus output buffers per engine, not per channel: 16 columns × 65,536 rows × 8 bytes "
        "(slot rows with their interval records, event rows), touched only as rows are "
        "written.\n"
    )
    targets.append(("≤ 64 KiB of state per channel", f"{total / 1024:.1f} KiB", total <= 64 * 1024))


def report_startup(sz: Sizes, st: StartupResult, targets: list[tuple[str, str, bool]]) -> None:
    print(
        "### 5. Start-up: new process → import, build an engine, feed two readings → first "
        "closed interval\n"
    )
    print("| numba cache | seconds |")
    print("|---|---:|")
    print(f"| warm (NUMBA_CACHE_DIR reused, best of {sz.warm_starts}) | {st.warm:.2f} |")
    print(f"| cold (fresh NUMBA_CACHE_DIR, best of {sz.cold_starts}) | {st.cold:.2f} |")
    print(f"| for scale: a bare `python -c` | {st.python:.2f} |")
    print(f"\nFirst-start compile time ≈ cold − warm = {st.cold - st.warm:.1f} s.\n")
    targets.append(
        ("start-up to first record, warm cache, < 1.5 s", f"{st.warm:.2f} s", st.warm < 1.5)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = ap.parse_args()
    sz = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    print(f"Machine: {describe()}\n")
    print(
        f"Every time is the best of several runs ({sz.repeat} for streaming, "
        f"{sz.replay_repeat} for the replay): other processes may share the two cores "
        f"(load average {load0:.1f} at start). numba, numpy and pandas each run on one "
        "core here.\n"
    )
    targets: list[tuple[str, str, bool]] = []

    s = streaming_bench(sz)
    report_streaming(sz, s, targets)
    y = make_year(sz.days)
    r = replay_bench(sz, y)
    report_replay(sz, y, r, targets)
    report_accuracy(accuracy_bench(y, r.records), spike_bench(y), targets)
    report_memory(s.engine, targets)
    del s, y, r
    report_startup(sz, startup_bench(sz), targets)

    print("### Targets\n")
    print("| target | measured | result |")
    print("|---|---|---|")
    for name, got, ok in targets:
        print(f"| {name} | {got} | {_ok(ok)} |")
    print(
        f"\nTotal run time {time.perf_counter() - t_start:.0f} s; load average "
        f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end."
    )


if __name__ == "__main__":
    main()
