"""Drawn channels for the core's equivalence tests: counters and power meters with
glitches, outages (up to weeks), resets and limit changes, and the engine and
reference built from them.

Shared by tests/unit/core/test_core_equivalence.py (kernel against reference)
and tests/unit/core/test_jit.py (numba against plain Python).
"""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime

import numpy as np
from hypothesis import strategies as st

from agent.core.calendar import SiteCalendar
from agent.core.channels import RING, SLOT_MS, ChannelKind, ChannelSpec
from agent.core.engine import Closed, Engine
from agent.core.reference import ReferenceCore

DAY_MS = 86_400_000
MAX_READINGS = 90  # per channel
INTERVALS_S = [60, 300, 900, 1800, 3600]


def _utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


#: Streams start up to 6 h after one of these (UTC): an ordinary day (deliberately not
#: on a slot boundary), hours before a month end, a leap day, the EU's and the US's
#: spring DST change, the EU's autumn one, a year end.
ANCHORS_MS = [
    1_700_000_000_123,
    _utc_ms("2024-01-31T20:00:00"),
    _utc_ms("2024-02-28T21:00:00"),
    _utc_ms("2024-03-10T03:00:00"),
    _utc_ms("2024-03-30T22:00:00"),
    _utc_ms("2024-10-26T22:00:00"),
    _utc_ms("2024-12-31T17:00:00"),
]
#: Month starts (demand peaks reset there) are local, DST and half-hour zones included.
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Adelaide"]

COUNTER_OPS = [
    *["step"] * 8,
    "boundary",
    "boundary",
    "gap",
    "long_gap",
    "outage",
    "reset",
    "real_reset",
    "garbage0",
    "spike",
    "flicker",
    "jump",
    "over",
    "dup",
    "ooo",
    "nan",
]
POWER_OPS = [*["step"] * 8, "boundary", "gap", "long_gap", "outage", "spike", "dup", "ooo", "nan"]


# --- stream generators ------------------------------------------------------------------


def _next_boundary(t: int, step_ms: int) -> int:
    return (t // step_ms + 1) * step_ms


@st.composite
def start_time(draw, interval_ms: int) -> int:
    """Near an anchor; anywhere, or exactly on a slot or interval boundary (then the first
    interval is not partial)."""
    t = draw(st.sampled_from(ANCHORS_MS)) + draw(st.integers(0, 6 * 3_600_000))
    if draw(st.booleans()):
        t = _next_boundary(t, draw(st.sampled_from([SLOT_MS, interval_ms])))
    return t


@st.composite
def outage_ms(draw, interval_ms: int, max_days: int) -> int:
    """An outage: longer than an interval, up to ``max_days``; long ones as often as short."""
    short = st.integers(3 * interval_ms, DAY_MS)
    return draw(st.one_of(short, st.integers(DAY_MS, max_days * DAY_MS)))


@st.composite
def counter_channel(draw, key: str, interval_ms: int, max_outage_days: int = 2):
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
    outages = 0

    def emit(when: int, value: float) -> None:
        out.append((when, float(np.float32(value)) if f32 and not math.isnan(value) else value))

    def advance(dt: int) -> None:
        nonlocal t, v
        t += dt
        v += typical_kw * draw(st.floats(0.0, 1.0)) * dt / 3_600_000.0
        if wrap:
            v %= wrap
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
        elif op == "outage" and outages < 2:
            outages += 1
            advance(draw(outage_ms(interval_ms, max_outage_days)))
        elif op == "reset":  # a drop to anywhere lower; what follows decides what it was
            t += draw(st.integers(1, 90_000))
            v = draw(st.floats(0.0, max(v * 0.5, 0.0)))
            emit(t, v)
        elif op == "real_reset":  # the meter restarts near 0 and counts on: a new baseline
            t += draw(st.integers(1, 90_000))
            v = draw(st.sampled_from([0.0, 0.0, 0.5]))
            emit(t, v)
            for _ in range(draw(st.integers(2, 4))):
                advance(draw(st.integers(1, 90_000)))
        elif op == "garbage0":  # one 0 among normal readings
            t += draw(st.integers(1, 90_000))
            emit(t, 0.0)
            advance(draw(st.integers(1, 90_000)))
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
            if wrap:
                v %= wrap
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
def power_channel(draw, key: str, interval_ms: int, max_outage_days: int = 2):
    """(spec, [(t, kW)]) for active power to be integrated (trapezoid), import or export."""
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
    low = draw(st.sampled_from([-0.1, -1.0]))  # mostly import, or both ways (PV, drives)

    def kw() -> float:
        return draw(st.floats(low * max_kw, max_kw))

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
        elif op == "outage":
            t += draw(outage_ms(interval_ms, max_outage_days))
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
def channels(draw, n: int, interval_ms: int, max_outage_days: int):
    """``n`` meters: counters, or power meters counted as import and (half of them) as
    export too, from the same readings."""
    specs, streams = [], []
    while len(specs) < n:
        key = f"ch{len(specs)}"
        if draw(st.integers(0, 3)) == 0:
            spec, stream = draw(power_channel(key, interval_ms, max_outage_days))
            specs.append(spec)
            streams.append(stream)
            if len(specs) < n and draw(st.booleans()):
                twin = ChannelSpec(
                    f"{key}-export",
                    ChannelKind.POWER_EXPORT,
                    max_rate_per_h=spec.max_rate_per_h,
                    max_gap_s=spec.max_gap_s,
                )
                specs.append(twin)
                streams.append(stream)
        else:
            spec, stream = draw(counter_channel(key, interval_ms, max_outage_days))
            specs.append(spec)
            streams.append(stream)
    return specs, streams


@st.composite
def scenarios(draw, max_channels: int = 3, max_outage_days: int = 2, changes: bool = True):
    """Up to ``max_channels`` meters (at least 2 when more than 3 are allowed)."""
    interval_s = draw(st.sampled_from(INTERVALS_S))
    interval_ms = interval_s * 1000
    n = draw(st.integers(1 if max_channels <= 3 else 2, max_channels))
    specs, streams = draw(channels(n, interval_ms, max_outage_days))
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
    calendar = SiteCalendar(draw(st.sampled_from(ZONES)))
    months = calendar.month_starts_between(min(all_ts) - 40 * DAY_MS, max(all_ts) + 40 * DAY_MS)
    interval_slots = interval_ms // SLOT_MS
    change = st.tuples(
        st.integers(0, n - 1),
        st.sampled_from(["limit", "wrap"]),
        st.sampled_from([0.5, 60.0, 500.0, math.inf]),
    )
    return {
        "interval_s": interval_s,
        "align": draw(st.integers(0, interval_slots - 1)) if draw(st.booleans()) else 0,
        "specs": specs,
        "rows": rows,
        "cuts": cuts,
        # at each cut, maybe a new limit or wrap range for one channel
        "changes": [draw(st.none() | change) if changes else None for _ in cuts],
        "capacity": draw(st.sampled_from([1, 4, 4, 65_536])),
        "demand": [draw(st.booleans()) for _ in range(n)],
        "month_slots": [m // SLOT_MS for m in months],
        "groups": [draw(st.sampled_from([-1, 0, 1, 1])) for _ in range(n)],
        "weight_seed": draw(st.integers(0, 2**32 - 1)),
        "rnd": rnd,
    }


# --- running both -----------------------------------------------------------------------


def scale_of(ref: ReferenceCore, c: int) -> float:
    """Magnitude of the reference's virtual counter: it stores C(t) cumulatively, so
    C(b) - C(a) carries rounding of order ulp(C), however small the difference."""
    values = ref.channels[c].values
    return max((abs(x) for x in values), default=0.0)


def close_enough(got: float, want: float, scale: float = 0.0) -> bool:
    return abs(got - want) <= 1e-9 + 1e-12 * max(abs(got), abs(want), scale)


def make_engine(sc: dict, **kw: object) -> Engine:
    return Engine(
        sc["specs"],
        sc["interval_s"],
        demand=sc["demand"],
        align_offset_slots=sc["align"],
        month_starts_ms=[s * SLOT_MS for s in sc["month_slots"]],
        out_capacity=sc["capacity"],
        **kw,  # type: ignore[arg-type]
    )


def parts(sc: dict) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The scenario's rows cut into the chunks fed in one call each."""
    out = []
    rows = sc["rows"]
    for a, b in itertools.pairwise([0, *sc["cuts"], len(rows)]):
        part = rows[a:b]
        out.append(
            (
                np.array([c for c, _, _ in part], dtype=np.int64),
                np.array([t for _, t, _ in part], dtype=np.int64),
                np.array([v for _, _, v in part], dtype=np.float64),
            )
        )
    return out


def apply_change(change: tuple[int, str, float] | None, *cores: Engine | ReferenceCore) -> None:
    """A new limit or wrap range for one channel, in each of ``cores`` (an infinite wrap
    range is no range: left as it was)."""
    if change is None:
        return
    c, what, value = change
    for core in cores:
        if what == "limit":
            core.set_limit(c, value)
        elif math.isfinite(value):
            core.set_wrap(c, value)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Floats as their bit patterns: -0.0 differs from 0.0, NaN equals the same NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.float64:
        a, b = a.view(np.int64), b.view(np.int64)
    return bool((a == b).all())


def same_closed(a: Closed, b: Closed) -> bool:
    return all(
        same_bits(getattr(getattr(a, part), f), getattr(getattr(b, part), f))
        for part in ("records", "slots", "events")
        for f in vars(getattr(a, part))
    )
