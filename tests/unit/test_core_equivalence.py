"""The numba engine against the slow reference: same streams, same numbers.

Hypothesis builds messy multi-channel streams (wraps, resets, glitches, jumps that
persist, gaps, duplicates, out-of-order and missing readings, float32 counters,
power channels), feeds them to :class:`Engine` in random chunks (sometimes with a
tiny output buffer, so the kernel has to stop and resume) and to
:class:`ReferenceCore` one reading at a time, and requires the same closed interval
records, event counts, window sums, CO2-style weighted sums and demand peaks.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.channels import N_EVENTS, RING, SLOT_MS, ChannelKind, ChannelSpec, Event
from agent.core.engine import Engine
from agent.core.reference import ReferenceCore

BASE_MS = 1_700_000_000_000  # 2023-11-14, deliberately not on a slot boundary
MAX_READINGS = 90  # per channel
INTERVALS_S = [60, 300, 900, 1800, 3600]

COUNTER_OPS = [
    *["step"] * 8,
    "boundary",
    "boundary",
    "gap",
    "long_gap",
    "reset",
    "spike",
    "flicker",
    "jump",
    "over",
    "dup",
    "ooo",
    "nan",
]
POWER_OPS = [*["step"] * 8, "boundary", "gap", "long_gap", "spike", "dup", "ooo", "nan"]


# --- stream generators ------------------------------------------------------------------


def _next_boundary(t: int, step_ms: int) -> int:
    return (t // step_ms + 1) * step_ms


@st.composite
def start_time(draw, interval_ms: int) -> int:
    """Anywhere, or exactly on a slot or interval boundary (then the first interval is
    not partial)."""
    t = BASE_MS + draw(st.integers(0, 3_600_000))
    if draw(st.booleans()):
        t = _next_boundary(t, draw(st.sampled_from([SLOT_MS, interval_ms])))
    return t


@st.composite
def counter_channel(draw, key: str, interval_ms: int):
    """(spec, [(t, value)]) for a cumulative counter, with every correction case mixed in."""
    f32 = draw(st.integers(0, 3)) == 0
    wrap = 0.0 if f32 else draw(st.sampled_from([0.0, 0.0, 655.36, 1000.0, 42949672.96]))
    max_rate = draw(st.sampled_from([math.inf, 60.0, 500.0, 5000.0]))
    spec = ChannelSpec(
        key,
        ChannelKind.COUNTER,
        wrap=wrap,
        max_rate_per_h=max_rate,
        tol_abs=draw(st.sampled_from([0.0, 0.0, 0.001, 0.01])),
        tol_rel=2.0**-22 if f32 else draw(st.sampled_from([0.0, 1e-9])),
        max_gap_s=draw(st.sampled_from([60.0, 120.0, 300.0, 900.0])),
    )
    max_gap_ms = int(spec.max_gap_s * 1000)
    typical_kw = min(max_rate, 1000.0) * 0.9
    if wrap:
        v = wrap - draw(st.floats(0.001, min(0.05 * wrap, 20.0)))  # near the top: it will wrap
    elif f32:
        v = draw(st.sampled_from([0.0, 1234.5, 1e6, 3e6]))
    else:
        v = draw(st.floats(0.0, 1e6))
    t = draw(start_time(interval_ms))
    out: list[tuple[int, float]] = []

    def emit(when: int, value: float) -> None:
        out.append((when, float(np.float32(value)) if f32 and not math.isnan(value) else value))

    def advance(dt: int) -> None:
        nonlocal t, v
        t += dt
        v += typical_kw * draw(st.floats(0.0, 1.0)) * dt / 3_600_000.0
        if wrap and v >= wrap:
            v -= wrap
        emit(t, v)

    emit(t, v)
    for _ in range(draw(st.integers(1, 50))):
        op = draw(st.sampled_from(COUNTER_OPS))
        if len(out) >= MAX_READINGS:
            break
        if op == "step":
            dt = draw(st.sampled_from([1000, 5000, 60_000, 0])) or draw(st.integers(1, 90_000))
            advance(dt)
        elif op == "boundary":
            step = draw(st.sampled_from([SLOT_MS, interval_ms]))
            advance(_next_boundary(t, step) - t)
        elif op == "gap":
            advance(draw(st.integers(max_gap_ms + 1, max_gap_ms + 3 * interval_ms)))
        elif op == "long_gap":
            advance(draw(st.integers(3 * interval_ms, (RING + 200) * SLOT_MS)))
        elif op == "reset":
            t += draw(st.integers(1, 90_000))
            v = draw(st.floats(0.0, max(v * 0.5, 0.0)))
            emit(t, v)
        elif op == "spike":  # one absurd reading, then back to normal
            t += draw(st.integers(1, 90_000))
            emit(t, v + 1e9)
            advance(draw(st.integers(1, 90_000)))
        elif op == "flicker":  # absurd readings again and again, normal ones in between
            for _ in range(draw(st.integers(2, 4))):
                t += draw(st.integers(1, 30_000))
                emit(t, v + 1e9)
                advance(draw(st.integers(1, 30_000)))
        elif op == "jump":  # a new level that persists: rebaseline after 3 readings
            t += draw(st.integers(1, 90_000))
            v += draw(st.floats(1e3, 1e7))
            if wrap:
                v %= wrap
            emit(t, v)
            for _ in range(draw(st.integers(1, 4))):
                advance(draw(st.integers(1, 90_000)))
        elif op == "over":  # just above the plausible rate
            dt = draw(st.integers(1, 90_000))
            t += dt
            limit = spec.max_step(dt, v) if math.isfinite(max_rate) else 1e4
            v += limit * draw(st.floats(0.9, 1.5))
            if wrap and v >= wrap:
                v -= wrap
            emit(t, v)
        elif op == "dup":
            emit(t, v + draw(st.sampled_from([0.0, 0.5, -0.5])))
        elif op == "ooo":
            emit(t - draw(st.integers(1, 600_000)), v - draw(st.floats(0.0, 10.0)))
        elif op == "nan":
            t += draw(st.integers(1, 90_000))
            emit(t, math.nan)
    return spec, out


@st.composite
def power_channel(draw, key: str, interval_ms: int):
    """(spec, [(t, kW)]) for active power to be integrated (trapezoid)."""
    max_kw = draw(st.sampled_from([50.0, 500.0, 5000.0]))
    spec = ChannelSpec(
        key,
        ChannelKind.POWER,
        max_rate_per_h=max_kw,
        max_gap_s=draw(st.sampled_from([60.0, 120.0, 300.0, 900.0])),
    )
    max_gap_ms = int(spec.max_gap_s * 1000)
    t = draw(start_time(interval_ms))
    out: list[tuple[int, float]] = []

    def kw() -> float:
        return draw(st.floats(-0.1 * max_kw, max_kw))

    def spike() -> float:
        return max_kw * draw(st.floats(1.01, 1e3)) * draw(st.sampled_from([1.0, -1.0]))

    out.append((t, spike() if draw(st.integers(0, 9)) == 0 else kw()))
    for _ in range(draw(st.integers(1, 50))):
        op = draw(st.sampled_from(POWER_OPS))
        if len(out) >= MAX_READINGS:
            break
        if op == "step":
            t += draw(st.sampled_from([1000, 5000, 60_000, 0])) or draw(st.integers(1, 90_000))
            out.append((t, kw()))
        elif op == "boundary":
            t = _next_boundary(t, draw(st.sampled_from([SLOT_MS, interval_ms])))
            out.append((t, kw()))
        elif op == "gap":
            t += draw(st.integers(max_gap_ms + 1, max_gap_ms + 3 * interval_ms))
            out.append((t, kw()))
        elif op == "long_gap":
            t += draw(st.integers(3 * interval_ms, (RING + 200) * SLOT_MS))
            out.append((t, kw()))
        elif op == "spike":
            t += draw(st.integers(1, 90_000))
            out.append((t, spike()))
        elif op == "dup":
            out.append((t, kw()))
        elif op == "ooo":
            out.append((t - draw(st.integers(1, 600_000)), kw()))
        elif op == "nan":
            t += draw(st.integers(1, 90_000))
            out.append((t, math.nan))
    return spec, out


@st.composite
def scenarios(draw):
    interval_s = draw(st.sampled_from(INTERVALS_S))
    interval_ms = interval_s * 1000
    n = draw(st.integers(1, 3))
    specs, streams = [], []
    for c in range(n):
        gen = power_channel if draw(st.integers(0, 3)) == 0 else counter_channel
        spec, stream = draw(gen(f"ch{c}", interval_ms))
        specs.append(spec)
        streams.append(stream)
    # interleave the channels, keeping each channel's own order
    rnd: random.Random = draw(st.randoms(use_true_random=False))
    order = [c for c, s in enumerate(streams) for _ in s]
    rnd.shuffle(order)
    pos = [0] * n
    rows = []
    for c in order:
        t, v = streams[c][pos[c]]
        pos[c] += 1
        rows.append((c, t, v))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=6)))
    all_ts = [t for _, t, _ in rows]
    lo_slot, hi_slot = min(all_ts) // SLOT_MS, max(all_ts) // SLOT_MS
    months = sorted(set(draw(st.lists(st.integers(lo_slot - 30, hi_slot + 30), max_size=3))))
    return {
        "interval_s": interval_s,
        "specs": specs,
        "rows": rows,
        "cuts": cuts,
        "capacity": draw(st.sampled_from([1, 4, 4, 65_536])),
        "demand": [draw(st.booleans()) for _ in range(n)],
        "month_slots": months,
        "groups": [draw(st.sampled_from([-1, 0, 1, 1])) for _ in range(n)],
        "weight_seed": draw(st.integers(0, 2**32 - 1)),
        "rnd": rnd,
    }


# --- comparison helpers -----------------------------------------------------------------


def _scale(ref: ReferenceCore, c: int) -> float:
    """Magnitude of the reference's virtual counter: it stores C(t) cumulatively, so
    C(b) - C(a) carries rounding of order ulp(C), however small the difference."""
    values = ref.channels[c].values
    return max((abs(x) for x in values), default=0.0)


def _close(got: float, want: float, scale: float = 0.0) -> bool:
    return abs(got - want) <= 1e-9 + 1e-12 * max(abs(got), abs(want), scale)


def _compare_records(records, ref_records, ref: ReferenceCore) -> None:
    order = np.lexsort((records.end_ms, records.channel))
    got = [
        (
            int(records.channel[i]),
            int(records.end_ms[i]),
            float(records.energy[i]),
            int(records.flags[i]),
        )
        for i in order
    ]
    want = sorted((r.channel, r.end_ms, r.energy, r.flags) for r in ref_records)
    assert [(c, e, f) for c, e, _, f in got] == [(c, e, f) for c, e, _, f in want]
    for (c, end, eg, _), (_, _, er, _) in zip(got, want, strict=True):
        assert _close(eg, er, _scale(ref, c)), (c, end, eg, er)


def _run(sc: dict) -> tuple[Engine, ReferenceCore]:
    specs, rows = sc["specs"], sc["rows"]
    engine = Engine(
        specs,
        sc["interval_s"],
        demand=sc["demand"],
        month_starts_ms=[s * SLOT_MS for s in sc["month_slots"]],
        out_capacity=sc["capacity"],
    )
    ref = ReferenceCore(specs, sc["interval_s"])
    bounds = [0, *sc["cuts"], len(rows)]
    for a, b in itertools.pairwise(bounds):
        part = rows[a:b]
        recs = engine.feed(
            np.array([c for c, _, _ in part], dtype=np.int64),
            np.array([t for _, t, _ in part], dtype=np.int64),
            np.array([v for _, _, v in part], dtype=np.float64),
        )
        for c, t, v in part:
            ref.feed(c, t, v)
        _compare_records(recs, ref.closed_intervals(), ref)
    return engine, ref


# --- the property -----------------------------------------------------------------------


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_engine_matches_reference(sc: dict) -> None:
    engine, ref = _run(sc)
    n = len(sc["specs"])

    # events
    for c in range(n):
        want = [ref.events(c)[Event(i)] for i in range(N_EVENTS)]
        assert engine.events[c].tolist() == want, (c, engine.events[c], ref.events(c))

    # closed slots
    closed = engine.closed_slot_end()
    live = [c for c in range(n) if ref.channels[c].times]
    for c in live:
        assert closed[c] == ref.channels[c].times[-1] // SLOT_MS
    if not live:
        assert engine.range_sums([0], [1]).tolist() == [[0.0]] * n
        return

    # window sums over random ranges inside the ring of every channel
    rnd: random.Random = sc["rnd"]
    top = max(int(closed[c]) for c in live)
    first = min(ref.channels[c].times[0] // SLOT_MS for c in live)
    lowest = max(top - RING, first - 20)
    firsts, ends = [], []
    for _ in range(8):
        a = rnd.randint(lowest, top + 5)
        width = rnd.choice([0, 1, 15, 60, 1440, rnd.randint(1, RING)])
        firsts.append(a)
        ends.append(min(a + width, lowest + RING))
    sums = engine.range_sums(firsts, ends)
    for c in range(n):
        for j, (a, b) in enumerate(zip(firsts, ends, strict=True)):
            want = ref.range_sum(c, a, b)
            assert _close(sums[c, j], want, _scale(ref, c)), (c, a, b, sums[c, j], want)

    # weighted sums (CO2 with a per-slot factor per carrier group)
    weights = np.random.default_rng(sc["weight_seed"]).uniform(0.0, 1.0, size=(2, RING))
    group = np.array(sc["groups"], dtype=np.int64)
    wf, we = firsts[:3], [min(b, a + 300) for a, b in zip(firsts[:3], ends[:3], strict=True)]
    wsums = engine.weighted_range_sums(group, weights, wf, we)
    for c in range(n):
        for j, (a, b) in enumerate(zip(wf, we, strict=True)):
            g = int(group[c])
            if g < 0:
                assert wsums[c, j] == 0.0
                continue
            w = [weights[g, s % RING] for s in range(a, b)]
            want = ref.weighted_range_sum(c, a, b, w)
            assert _close(wsums[c, j], want, _scale(ref, c)), (c, a, b, wsums[c, j], want)

    # demand peaks of the current month
    months = np.array(sc["month_slots"], dtype=np.int64)
    for c in range(n):
        got = engine.demand_peak(c)
        if not sc["demand"][c]:
            assert got is None
            continue
        last_closed = int(closed[c]) - 1 if c in live else None
        if last_closed is None or last_closed < ref.channels[c].times[0] // SLOT_MS:
            assert got is None  # no slot closed yet
            continue
        assert got is not None
        kw, slot, month = got
        m = int(np.searchsorted(months, last_closed, side="right")) - 1 if months.size else 0
        assert month == m
        m_lo = int(months[m]) if months.size and m >= 0 else -(2**62)
        m_hi = int(months[m + 1]) if months.size and m + 1 < months.size else 2**62
        want = ref.demand_peak(c, m_lo, m_hi)
        assert want is not None
        tol_scale = 4 * _scale(ref, c)
        assert _close(kw, want[0], tol_scale), (c, kw, want)
        assert m_lo <= slot < m_hi
        # the kernel's slot really has that demand; a different slot only on a (near) tie
        assert _close(ref.demand_kw(c, slot), kw, tol_scale)
        if kw == 0.0 and want[0] == 0.0:  # an exact tie: the first slot keeps the peak
            assert slot == want[1]
        elif slot != want[1]:
            assert _close(ref.demand_kw(c, want[1]), kw, tol_scale)
