"""The numba kernels: every channel's state in arrays, one call per batch of readings.

Layout (n = channels): ``I[n, NI]`` int64 state, ``F[n, NF]`` float64 state and
settings, ``ring_e[n, RING]`` energy per one-minute slot, ``ring_f[n, RING]`` slot
quality bits, ``events[n, N_EVENTS]`` counts. A reading moves the channel's
virtual counter; the segment since the previous reading is spread over the
slots it covers in proportion to time (a polling gap is spread evenly, a slot
boundary splits the step exactly), and each slot that a reading reaches the
end of is closed into the ring. Closing the last slot of a publish interval
emits an interval record. Windows are sums over the ring, recomputed when
asked, so a single absurd value never leaves a residue behind.

Same semantics as :mod:`agent.core.reference`; the tests feed both the same
streams. The column layout of ``I`` and ``F`` is known here and in
:mod:`agent.core.engine`, nowhere else. Import this module only after the
numba cache directory is set (:func:`agent.core.engine.load_kernel`). Without
numba the same functions run as Python, bit for bit the same
(:mod:`agent.core.jit`): keep them free of ``fastmath`` and of anything numba
would compute differently.
"""

from __future__ import annotations

import os

import numpy as np

from agent.core.channels import (
    DEMAND_SLOTS,
    REBASELINE_AFTER,
    RING,
    SLOT_MS,
    WRAP_BAND,
    ChannelKind,
    Event,
    Flag,
)
from agent.core.jit import choose

#: Compiled by numba, or (and why) run as Python.
JIT, njit = choose(os.environ)

# int64 state columns
I_HAS_REF = 0
I_REF_T = 1
I_LAST_SEEN = 2
I_FIRST_T = 3
I_OPEN_SLOT = 4
I_OPEN_FLAGS = 5
I_CAND_N = 6
I_CAND_T = 7
I_EMITTED_END = 8
I_KIND = 9
I_DEMAND = 10  # 1: this channel tracks 15-minute demand
I_DM_SLOT = 11
I_DM_MONTH = 12
NI = 13

# float64 state and settings columns
F_REF_RAW = 0
F_OPEN_ACC = 1
F_CAND_RAW = 2
F_WRAP = 3
F_MAX_RATE = 4  # per hour
F_TOL_ABS = 5
F_TOL_REL = 6
F_MAX_GAP_MS = 7
F_DM_MAX = 8
NF = 9

# Channel kinds, slot quality bits and event counters: the values of the enums in
# agent.core.channels (which the reference and the site use), as plain ints, which numba
# compiles in as constants. numba's cache is keyed on this file only: after changing a
# value there, touch this file (an installed upgrade rewrites every file anyway).
KIND_COUNTER = int(ChannelKind.COUNTER)
KIND_POWER = int(ChannelKind.POWER)

FLAG_INTERPOLATED = int(Flag.INTERPOLATED)
FLAG_GAP = int(Flag.GAP)
FLAG_RESET = int(Flag.RESET)
FLAG_PARTIAL = int(Flag.PARTIAL)

EV_WRAP = int(Event.WRAP)
EV_RESET = int(Event.RESET)
EV_GLITCH = int(Event.GLITCH)
EV_REBASELINE = int(Event.REBASELINE)
EV_OUT_OF_ORDER = int(Event.OUT_OF_ORDER)
EV_MISSING = int(Event.MISSING)


@njit(cache=True, inline="always")
def _max_step(F: np.ndarray, c: int, dt_ms: float, value: float) -> float:
    return F[c, F_MAX_RATE] * dt_ms / 3_600_000.0 + F[c, F_TOL_ABS] + F[c, F_TOL_REL] * abs(value)


@njit(cache=True)
def _month_of(month_starts: np.ndarray, slot: int) -> int:
    return int(np.searchsorted(month_starts, slot, side="right")) - 1


@njit(cache=True)
def _close_slot(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    c: int,
    slot: int,
    interval_slots: int,
    month_starts: np.ndarray,
    out_c: np.ndarray,
    out_end: np.ndarray,
    out_e: np.ndarray,
    out_f: np.ndarray,
    out_n: int,
) -> int:
    pos = slot % RING
    ring_e[c, pos] = F[c, F_OPEN_ACC]
    ring_f[c, pos] = I[c, I_OPEN_FLAGS]
    F[c, F_OPEN_ACC] = 0.0
    I[c, I_OPEN_FLAGS] = 0
    first_slot = I[c, I_FIRST_T] // SLOT_MS
    if I[c, I_DEMAND] != 0:
        lo = max(slot - DEMAND_SLOTS + 1, first_slot)
        total = 0.0
        for s in range(lo, slot + 1):
            total += ring_e[c, s % RING]
        demand = total * 60.0 / DEMAND_SLOTS
        month = _month_of(month_starts, slot)
        if month != I[c, I_DM_MONTH] or demand > F[c, F_DM_MAX]:
            I[c, I_DM_MONTH] = month
            F[c, F_DM_MAX] = demand
            I[c, I_DM_SLOT] = slot
    if (slot + 1) % interval_slots == 0:
        end_slot = slot + 1
        lo = max(end_slot - interval_slots, first_slot)
        energy = 0.0
        flags = 0
        for s in range(lo, end_slot):
            energy += ring_e[c, s % RING]
            flags |= ring_f[c, s % RING]
        start_ms = (end_slot - interval_slots) * SLOT_MS
        if start_ms < I[c, I_FIRST_T]:
            flags |= FLAG_PARTIAL
        out_c[out_n] = c
        out_end[out_n] = end_slot * SLOT_MS
        out_e[out_n] = energy
        out_f[out_n] = flags
        I[c, I_EMITTED_END] = end_slot * SLOT_MS
        out_n += 1
    return out_n


@njit(cache=True)
def _spread(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    c: int,
    t0: int,
    t1: int,
    delta: float,
    flags: int,
    interval_slots: int,
    month_starts: np.ndarray,
    out_c: np.ndarray,
    out_end: np.ndarray,
    out_e: np.ndarray,
    out_f: np.ndarray,
    out_n: int,
) -> int:
    """Spread ``delta`` over [t0, t1] in proportion to time, closing slots on the way."""
    slot = I[c, I_OPEN_SLOT]
    slot_end = (slot + 1) * SLOT_MS
    span = float(t1 - t0)
    allocated = 0.0
    while slot_end <= t1:
        share = delta * ((slot_end - t0) / span)
        F[c, F_OPEN_ACC] += share - allocated
        allocated = share
        I[c, I_OPEN_FLAGS] |= flags
        out_n = _close_slot(
            I,
            F,
            ring_e,
            ring_f,
            c,
            slot,
            interval_slots,
            month_starts,
            out_c,
            out_end,
            out_e,
            out_f,
            out_n,
        )
        slot += 1
        slot_end += SLOT_MS
    F[c, F_OPEN_ACC] += delta - allocated
    if t1 > slot * SLOT_MS:
        I[c, I_OPEN_FLAGS] |= flags
    I[c, I_OPEN_SLOT] = slot
    return out_n


@njit(cache=True)
def update(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    events: np.ndarray,
    chans: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    start: int,
    interval_slots: int,
    month_starts: np.ndarray,
    out_c: np.ndarray,
    out_end: np.ndarray,
    out_e: np.ndarray,
    out_f: np.ndarray,
) -> tuple[int, int]:
    """Feed readings ``start..`` in order. Returns (next reading, records written).

    Stops early, before a reading that could emit more records than fit in the
    output arrays; the caller drains them and calls again from the returned index.
    """
    cap = out_c.shape[0]
    out_n = 0
    interval_ms = interval_slots * SLOT_MS
    n = chans.shape[0]
    for i in range(start, n):
        c = chans[i]
        t = ts[i]
        v = vals[i]
        if v != v:  # NaN: the meter said "not available"
            events[c, EV_MISSING] += 1
            continue
        if t <= I[c, I_LAST_SEEN]:  # starts at the smallest int64: nothing seen yet
            events[c, EV_OUT_OF_ORDER] += 1
            continue
        if I[c, I_HAS_REF] != 0:
            # t > I_REF_T, so a step shorter than an interval closes at most one: skip the
            # 64-bit division (it throttles the whole loop) for the common case.
            gap = t - I[c, I_REF_T]
            bound = 1 if gap < interval_ms else gap // interval_ms + 1
            if out_n + bound > cap:
                return i, out_n
        I[c, I_LAST_SEEN] = t
        if I[c, I_HAS_REF] == 0:
            if I[c, I_KIND] == KIND_POWER and abs(v) > F[c, F_MAX_RATE]:
                events[c, EV_GLITCH] += 1
                continue
            I[c, I_HAS_REF] = 1
            I[c, I_REF_T] = t
            I[c, I_FIRST_T] = t
            I[c, I_OPEN_SLOT] = t // SLOT_MS
            I[c, I_OPEN_FLAGS] = 0
            I[c, I_CAND_N] = 0
            I[c, I_EMITTED_END] = (t // interval_ms) * interval_ms
            F[c, F_REF_RAW] = v
            F[c, F_OPEN_ACC] = 0.0
            continue
        t0 = I[c, I_REF_T]
        r0 = F[c, F_REF_RAW]
        dt = t - t0
        if I[c, I_KIND] == KIND_POWER:
            if abs(v) > F[c, F_MAX_RATE]:
                events[c, EV_GLITCH] += 1
                continue
            if dt > F[c, F_MAX_GAP_MS]:
                delta = 0.0
                flags = FLAG_GAP
            else:
                delta = (max(r0, 0.0) + max(v, 0.0)) / 2.0 * dt / 3_600_000.0
                flags = 0
        else:
            flags = FLAG_INTERPOLATED if dt > F[c, F_MAX_GAP_MS] else 0
            delta = v - r0
            wrapped = False
            if delta < 0.0:
                wrap = F[c, F_WRAP]
                if wrap > 0.0 and r0 >= (1.0 - WRAP_BAND) * wrap and v <= WRAP_BAND * wrap:
                    delta = v + wrap - r0
                    wrapped = True
                else:
                    events[c, EV_RESET] += 1
                    delta = 0.0
                    flags |= FLAG_RESET
            if delta > _max_step(F, c, dt, v):
                events[c, EV_GLITCH] += 1
                n_cand = I[c, I_CAND_N]
                if n_cand > 0:
                    step = v - F[c, F_CAND_RAW]
                    ok = step >= 0.0 and step <= _max_step(F, c, t - I[c, I_CAND_T], v)
                    n_cand = n_cand + 1 if ok else 1
                else:
                    n_cand = 1
                I[c, I_CAND_N] = n_cand
                I[c, I_CAND_T] = t
                F[c, F_CAND_RAW] = v
                if n_cand < REBASELINE_AFTER:
                    continue
                events[c, EV_REBASELINE] += 1
                delta = 0.0
                flags |= FLAG_RESET
            elif wrapped:
                events[c, EV_WRAP] += 1
        # Most readings stay inside the open slot: accumulate here, without calling
        # _spread. (A call that passes arrays costs an atomic incref and decref per
        # array, several times the arithmetic; _spread gives the same result here.)
        slot = I[c, I_OPEN_SLOT]
        if t < (slot + 1) * SLOT_MS:
            F[c, F_OPEN_ACC] += delta
            if t > slot * SLOT_MS:
                I[c, I_OPEN_FLAGS] |= flags
        else:
            out_n = _spread(
                I,
                F,
                ring_e,
                ring_f,
                c,
                t0,
                t,
                delta,
                flags,
                interval_slots,
                month_starts,
                out_c,
                out_end,
                out_e,
                out_f,
                out_n,
            )
        I[c, I_REF_T] = t
        I[c, I_CAND_N] = 0
        F[c, F_REF_RAW] = v
    return n, out_n


@njit(cache=True, inline="always")
def _ring_bounds(I: np.ndarray, c: int, first_slot: int, end_slot: int) -> tuple[int, int]:
    """The part of [first_slot, end_slot) that channel c has closed and still holds."""
    closed_end = I[c, I_OPEN_SLOT]
    lo = max(first_slot, I[c, I_FIRST_T] // SLOT_MS, closed_end - RING)
    return lo, min(end_slot, closed_end)


@njit(cache=True)
def range_sums(
    I: np.ndarray,
    ring_e: np.ndarray,
    first_slots: np.ndarray,
    end_slots: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[c, j]`` = energy of channel c over slots [first_slots[j], end_slots[j]).

    Only slots the channel has closed count; each range must lie within the last
    RING slots. Recomputed from the ring every time: no running sums to drift.
    """
    n = I.shape[0]
    for c in range(n):
        if I[c, I_HAS_REF] == 0:
            for j in range(first_slots.shape[0]):
                out[c, j] = 0.0
            continue
        for j in range(first_slots.shape[0]):
            lo, hi = _ring_bounds(I, c, first_slots[j], end_slots[j])
            total = 0.0
            for s in range(lo, hi):
                total += ring_e[c, s % RING]
            out[c, j] = total


@njit(cache=True)
def weighted_range_sums(
    I: np.ndarray,
    ring_e: np.ndarray,
    group: np.ndarray,
    weights: np.ndarray,
    first_slots: np.ndarray,
    end_slots: np.ndarray,
    out: np.ndarray,
) -> None:
    """Like :func:`range_sums` with each slot's energy times ``weights[group[c], slot % RING]``
    (the emission factor of the channel's carrier at that slot): CO2 over windows."""
    n = I.shape[0]
    for c in range(n):
        g = group[c]
        if I[c, I_HAS_REF] == 0 or g < 0:
            for j in range(first_slots.shape[0]):
                out[c, j] = 0.0
            continue
        for j in range(first_slots.shape[0]):
            lo, hi = _ring_bounds(I, c, first_slots[j], end_slots[j])
            total = 0.0
            for s in range(lo, hi):
                total += ring_e[c, s % RING] * weights[g, s % RING]
            out[c, j] = total
