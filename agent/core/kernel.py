"""The numba kernels: every channel's state in arrays, one call per batch of readings.

Layout (n = channels): ``I[n, NI]`` int64 state, ``F[n, NF]`` float64 state and
settings, ``ring_e[n, RING]`` energy per one-minute slot, ``ring_f[n, RING]`` slot
quality bits, ``ring_cov[n, RING, 2]`` the milliseconds of each slot covered by
measured and by interpolated steps, ``events[n, N_EVENTS]`` counts. A reading
moves the channel's virtual counter; the segment since the previous reading is
spread over the slots it covers in proportion to time (a polling gap is spread
evenly, a slot boundary splits the step exactly), and each slot that a reading
reaches the end of is closed into the ring and written out as a slot row.
Closing the last slot of a publish interval also writes the interval's record
into that row. Windows are sums over the ring, recomputed when asked, so a
single absurd value never leaves a residue behind.

Per reading the work is a few comparisons and additions; everything else (the
rings, the demand, the rows) happens when a slot closes.

Same semantics as :mod:`agent.core.reference`; the tests feed both the same
streams. The column layout of ``I``, ``F`` and the output rows is known here and
in :mod:`agent.core.engine`, nowhere else. Import this module only after the
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
from agent.core.jit import choose, guarded

#: Compiled by numba, or (and why) run as Python.
JIT, njit = choose(os.environ)

# The kernel keeps the first and the latest rejected reading of a run: a third that
# agrees with the latest completes it.
assert REBASELINE_AFTER == 3

# int64 state columns
I_HAS_REF = 0
I_REF_T = 1
I_LAST_SEEN = 2
I_FIRST_T = 3
I_OPEN_SLOT = 4
I_OPEN_FLAGS = 5
I_CAND_N = 6  # rejected readings in the current run of agreeing ones
I_CAND_T = 7  # the latest of them
I_EMITTED_END = 8
I_KIND = 9
I_DEMAND = 10  # 1: this channel tracks 15-minute demand
I_DM_SLOT = 11
I_DM_MONTH = 12
# columns added by issue 13 (a snapshot of the first format has the 13 above)
I_OPEN_MISSING = 13  # ms of the open slot so far that count nothing (power gap, rebaseline)
I_OPEN_INTERPOLATED = 14  # ... covered by interpolated steps (the rest so far: measured)
I_CAND0_T = 15  # the first rejected reading of the run: the new baseline if it holds
NI = 16
NI_V1 = 13

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
F_CAND0_RAW = 9  # issue 13
NF = 10
NF_V1 = 9

# ring_cov[c, slot % RING, k]: ms of the slot covered by measured (k = 0) and
# interpolated (k = 1) steps; uint16 holds a slot's 60,000 ms.
COV_MEASURED = 0
COV_INTERPOLATED = 1

# Slot rows, column-major: out_si[S_*, row] int64, out_sf[SF_*, row] float64. A row
# that closes an interval also carries the interval's record (S_IV_END = 1).
S_CHANNEL = 0
S_SLOT = 1
S_MEASURED = 2
S_INTERPOLATED = 3
S_FLAGS = 4
S_IV_END = 5
S_IV_FLAGS = 6
S_IV_MEASURED = 7
S_IV_INTERPOLATED = 8
NS = 9
SF_ENERGY = 0
SF_DEMAND = 1  # the 15-minute demand in kW at the slot's end; NaN without demand
SF_IV_ENERGY = 2
NSF = 3
# Event rows: out_ei[E_*, row] int64, out_ef[row] the reading.
E_CHANNEL = 0
E_TS = 1
E_EVENT = 2
NE = 3
#: Event rows one reading can cause: a glitch, and the rebaseline it completes.
EVENTS_PER_READING = 2

# Channel kinds, slot quality bits and event counters: the values of the enums in
# agent.core.channels (which the reference and the site use), as plain ints, which numba
# compiles in as constants. numba's cache is keyed on this file only: after changing a
# value there, touch this file (an installed upgrade rewrites every file anyway).
KIND_COUNTER = int(ChannelKind.COUNTER)
KIND_POWER = int(ChannelKind.POWER)
KIND_POWER_EXPORT = int(ChannelKind.POWER_EXPORT)

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


@njit(cache=True, inline="always")
def _event(
    events: np.ndarray,
    out_ei: np.ndarray,
    out_ef: np.ndarray,
    n_ev: int,
    c: int,
    t: int,
    code: int,
    value: float,
) -> int:
    events[c, code] += 1
    out_ei[E_CHANNEL, n_ev] = c
    out_ei[E_TS, n_ev] = t
    out_ei[E_EVENT, n_ev] = code
    out_ef[n_ev] = value
    return n_ev + 1


@njit(cache=True)
def _month_of(month_starts: np.ndarray, slot: int) -> int:
    return int(np.searchsorted(month_starts, slot, side="right")) - 1


@njit(cache=True)
def _interval_record(
    I: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    ring_cov: np.ndarray,
    c: int,
    end_slot: int,
    interval_slots: int,
    out_si: np.ndarray,
    out_sf: np.ndarray,
    row: int,
) -> None:
    """The interval ending at ``end_slot`` into slot row ``row``: sums of its slots."""
    lo = max(end_slot - interval_slots, I[c, I_FIRST_T] // SLOT_MS)
    energy = 0.0
    flags = 0
    measured = 0
    interpolated = 0
    for s in range(lo, end_slot):
        pos = s % RING
        energy += ring_e[c, pos]
        flags |= ring_f[c, pos]
        measured += int(ring_cov[c, pos, COV_MEASURED])
        interpolated += int(ring_cov[c, pos, COV_INTERPOLATED])
    if (end_slot - interval_slots) * SLOT_MS < I[c, I_FIRST_T]:
        flags |= FLAG_PARTIAL
    out_si[S_IV_END, row] = 1
    out_si[S_IV_FLAGS, row] = flags
    out_si[S_IV_MEASURED, row] = measured
    out_si[S_IV_INTERPOLATED, row] = interpolated
    out_sf[SF_IV_ENERGY, row] = energy
    I[c, I_EMITTED_END] = end_slot * SLOT_MS


@njit(cache=True)
def _close_slot(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    ring_cov: np.ndarray,
    c: int,
    slot: int,
    interval_slots: int,
    align: int,
    month_starts: np.ndarray,
    out_si: np.ndarray,
    out_sf: np.ndarray,
    n_slot: int,
) -> int:
    """Close the open slot ``slot`` of channel ``c`` into the rings and slot row ``n_slot``."""
    pos = slot % RING
    energy = F[c, F_OPEN_ACC]
    flags = I[c, I_OPEN_FLAGS]
    ring_e[c, pos] = energy
    ring_f[c, pos] = flags
    # Segments cover the slot from its start (or the first reading) to its end; the time
    # not counted as interpolated or missing on the way was measured.
    first_t = I[c, I_FIRST_T]
    interpolated = I[c, I_OPEN_INTERPOLATED]
    measured = (slot + 1) * SLOT_MS - max(slot * SLOT_MS, first_t) - interpolated
    measured -= I[c, I_OPEN_MISSING]
    ring_cov[c, pos, COV_MEASURED] = measured
    ring_cov[c, pos, COV_INTERPOLATED] = interpolated
    out_si[S_CHANNEL, n_slot] = c
    out_si[S_SLOT, n_slot] = slot
    out_si[S_MEASURED, n_slot] = measured
    out_si[S_INTERPOLATED, n_slot] = interpolated
    out_si[S_FLAGS, n_slot] = flags | FLAG_PARTIAL if slot * SLOT_MS < first_t else flags
    out_sf[SF_ENERGY, n_slot] = energy
    F[c, F_OPEN_ACC] = 0.0
    I[c, I_OPEN_FLAGS] = 0
    I[c, I_OPEN_MISSING] = 0
    I[c, I_OPEN_INTERPOLATED] = 0
    demand = np.nan
    if I[c, I_DEMAND] != 0:
        lo = max(slot - DEMAND_SLOTS + 1, first_t // SLOT_MS)
        total = 0.0
        for s in range(lo, slot + 1):
            total += ring_e[c, s % RING]
        demand = total * 60.0 / DEMAND_SLOTS
        month = _month_of(month_starts, slot)
        if month != I[c, I_DM_MONTH] or demand > F[c, F_DM_MAX]:
            I[c, I_DM_MONTH] = month
            F[c, F_DM_MAX] = demand
            I[c, I_DM_SLOT] = slot
    out_sf[SF_DEMAND, n_slot] = demand
    out_si[S_IV_END, n_slot] = 0
    if (slot + 1 - align) % interval_slots == 0:
        _interval_record(
            I, ring_e, ring_f, ring_cov, c, slot + 1, interval_slots, out_si, out_sf, n_slot
        )
    return n_slot + 1


@njit(cache=True)
def _spread(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    ring_cov: np.ndarray,
    c: int,
    t0: int,
    t1: int,
    delta: float,
    flags: int,
    cover: int,
    interval_slots: int,
    align: int,
    month_starts: np.ndarray,
    out_si: np.ndarray,
    out_sf: np.ndarray,
    n_slot: int,
) -> int:
    """Spread ``delta`` over [t0, t1] in proportion to time, closing slots on the way.

    ``cover``: the I column the segment's time counts in (I_OPEN_INTERPOLATED or
    I_OPEN_MISSING), or -1 for a measured one (the time left over at the slot's close)."""
    slot = I[c, I_OPEN_SLOT]
    slot_end = (slot + 1) * SLOT_MS
    span = float(t1 - t0)
    allocated = 0.0
    covered_to = t0
    while slot_end <= t1:
        share = delta * ((slot_end - t0) / span)
        F[c, F_OPEN_ACC] += share - allocated
        allocated = share
        I[c, I_OPEN_FLAGS] |= flags
        if cover >= 0:
            I[c, cover] += slot_end - covered_to
        covered_to = slot_end
        n_slot = _close_slot(
            I,
            F,
            ring_e,
            ring_f,
            ring_cov,
            c,
            slot,
            interval_slots,
            align,
            month_starts,
            out_si,
            out_sf,
            n_slot,
        )
        slot += 1
        slot_end += SLOT_MS
    F[c, F_OPEN_ACC] += delta - allocated
    if cover >= 0:
        I[c, cover] += t1 - covered_to
    if t1 > slot * SLOT_MS:
        I[c, I_OPEN_FLAGS] |= flags
    I[c, I_OPEN_SLOT] = slot
    return n_slot


@njit(cache=True, inline="always")
def _step_kind(F: np.ndarray, c: int, dt: int) -> tuple[int, int]:
    """(flags, cover column) of a counter step spanning ``dt`` ms."""
    if dt > F[c, F_MAX_GAP_MS]:
        return FLAG_INTERPOLATED, I_OPEN_INTERPOLATED
    return 0, -1


@njit(cache=True)
def _first_reading(
    I: np.ndarray, F: np.ndarray, c: int, t: int, v: float, interval_slots: int, align: int
) -> None:
    """Channel ``c``'s first accepted reading: C starts at 0 here."""
    I[c, I_HAS_REF] = 1
    I[c, I_REF_T] = t
    I[c, I_FIRST_T] = t
    I[c, I_OPEN_SLOT] = t // SLOT_MS
    I[c, I_OPEN_FLAGS] = 0
    I[c, I_OPEN_MISSING] = 0
    I[c, I_OPEN_INTERPOLATED] = 0
    I[c, I_CAND_N] = 0
    # the start of the interval holding t: none of it is closed yet
    interval_ms = interval_slots * SLOT_MS
    align_ms = align * SLOT_MS
    I[c, I_EMITTED_END] = (t - align_ms) // interval_ms * interval_ms + align_ms
    F[c, F_REF_RAW] = v
    F[c, F_OPEN_ACC] = 0.0


@njit(cache=True)
def _candidate(I: np.ndarray, F: np.ndarray, c: int, t: int, v: float) -> bool:
    """A rejected reading joins the run of candidates if it agrees with the latest (a step
    of at least 0 and at most the limit), else starts a new run. True when it completes a
    run of REBASELINE_AFTER: the state then still holds the first and the latest before it."""
    n_cand = I[c, I_CAND_N]
    if n_cand > 0:
        step = v - F[c, F_CAND_RAW]
        ok = step >= 0.0 and step <= _max_step(F, c, t - I[c, I_CAND_T], v)
        n_cand = n_cand + 1 if ok else 1
    else:
        n_cand = 1
    if n_cand >= REBASELINE_AFTER:
        return True
    I[c, I_CAND_N] = n_cand
    I[c, I_CAND_T] = t
    F[c, F_CAND_RAW] = v
    if n_cand == 1:
        I[c, I_CAND0_T] = t
        F[c, F_CAND0_RAW] = v
    return False


@njit(cache=True)
def _rebaseline(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    ring_cov: np.ndarray,
    c: int,
    interval_slots: int,
    align: int,
    month_starts: np.ndarray,
    out_si: np.ndarray,
    out_sf: np.ndarray,
    n_slot: int,
) -> int:
    """A run of agreeing rejected readings is complete: the first of them (I_CAND0_T) is
    the new baseline, the span up to it counts nothing (RESET, missing), and the step
    from the first to the latest one (I_CAND_T) counts as an ordinary step. The reading
    that completes the run is then accepted by the caller as a step from the latest."""
    ta = I[c, I_CAND0_T]
    tb = I[c, I_CAND_T]
    n_slot = _spread(
        I,
        F,
        ring_e,
        ring_f,
        ring_cov,
        c,
        I[c, I_REF_T],
        ta,
        0.0,
        FLAG_RESET,
        I_OPEN_MISSING,
        interval_slots,
        align,
        month_starts,
        out_si,
        out_sf,
        n_slot,
    )
    flags, cover = _step_kind(F, c, tb - ta)
    delta = F[c, F_CAND_RAW] - F[c, F_CAND0_RAW]
    return _spread(
        I,
        F,
        ring_e,
        ring_f,
        ring_cov,
        c,
        ta,
        tb,
        delta,
        flags,
        cover,
        interval_slots,
        align,
        month_starts,
        out_si,
        out_sf,
        n_slot,
    )


@njit(cache=True)
def update(
    I: np.ndarray,
    F: np.ndarray,
    ring_e: np.ndarray,
    ring_f: np.ndarray,
    ring_cov: np.ndarray,
    events: np.ndarray,
    chans: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    start: int,
    interval_slots: int,
    align: int,
    month_starts: np.ndarray,
    out_si: np.ndarray,
    out_sf: np.ndarray,
    out_ei: np.ndarray,
    out_ef: np.ndarray,
) -> tuple[int, int, int]:
    """Feed readings ``start..`` in order. Returns (next reading, slot rows, event rows).

    Intervals end at the slots s with (s - align) % interval_slots == 0. Stops early,
    before a reading that could write more rows than fit in the output arrays; the
    caller drains them and calls again from the returned index.
    """
    slot_cap = out_si.shape[1]
    event_cap = out_ef.shape[0]
    n_slot = 0
    n_ev = 0
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
        if n_ev + EVENTS_PER_READING > event_cap:
            return i, n_slot, n_ev
        if I[c, I_HAS_REF] != 0:
            # A reading closes the slots from the open one to its own (t > I_REF_T).
            gap = t - I[c, I_REF_T]
            bound = 1 if gap < SLOT_MS else gap // SLOT_MS + 1
            if n_slot + bound > slot_cap:
                return i, n_slot, n_ev
        I[c, I_LAST_SEEN] = t
        kind = I[c, I_KIND]
        if I[c, I_HAS_REF] == 0:
            if kind != KIND_COUNTER and abs(v) > F[c, F_MAX_RATE]:
                n_ev = _event(events, out_ei, out_ef, n_ev, c, t, EV_GLITCH, v)
                continue
            _first_reading(I, F, c, t, v, interval_slots, align)
            continue
        t0 = I[c, I_REF_T]
        r0 = F[c, F_REF_RAW]
        dt = t - t0
        if kind != KIND_COUNTER:
            if abs(v) > F[c, F_MAX_RATE]:
                n_ev = _event(events, out_ei, out_ef, n_ev, c, t, EV_GLITCH, v)
                continue
            if dt > F[c, F_MAX_GAP_MS]:
                delta = 0.0
                flags = FLAG_GAP
                cover = I_OPEN_MISSING
            else:
                p0, p1 = (r0, v) if kind == KIND_POWER else (-r0, -v)
                delta = (max(p0, 0.0) + max(p1, 0.0)) / 2.0 * dt / 3_600_000.0
                flags = 0
                cover = -1
        else:
            flags, cover = _step_kind(F, c, dt)
            delta = v - r0
            wrapped = False
            if delta < 0.0:
                wrap = F[c, F_WRAP]
                if wrap > 0.0 and r0 >= (1.0 - WRAP_BAND) * wrap and v <= WRAP_BAND * wrap:
                    delta = v + wrap - r0
                    wrapped = True
            if delta < 0.0 or delta > _max_step(F, c, dt, v):
                # Rejected (a decrease that is no wrap, or beyond the limit): a candidate
                # for a new baseline, which a run of REBASELINE_AFTER agreeing ones makes.
                n_ev = _event(events, out_ei, out_ef, n_ev, c, t, EV_GLITCH, v)
                if not _candidate(I, F, c, t, v):
                    continue
                code = EV_RESET if F[c, F_CAND0_RAW] < r0 else EV_REBASELINE
                n_ev = _event(
                    events, out_ei, out_ef, n_ev, c, I[c, I_CAND0_T], code, F[c, F_CAND0_RAW]
                )
                n_slot = _rebaseline(
                    I,
                    F,
                    ring_e,
                    ring_f,
                    ring_cov,
                    c,
                    interval_slots,
                    align,
                    month_starts,
                    out_si,
                    out_sf,
                    n_slot,
                )
                # this reading: an ordinary step from the latest candidate
                t0 = I[c, I_CAND_T]
                flags, cover = _step_kind(F, c, t - t0)
                delta = v - F[c, F_CAND_RAW]
            elif wrapped:
                n_ev = _event(events, out_ei, out_ef, n_ev, c, t, EV_WRAP, v)
        # Most readings stay inside the open slot: accumulate here, without calling
        # _spread. (A call that passes arrays costs an atomic incref and decref per
        # array, several times the arithmetic; _spread gives the same result here.)
        # (t0 lies in the open slot, so the step covers part of it: t > slot start.)
        slot = I[c, I_OPEN_SLOT]
        if t < (slot + 1) * SLOT_MS:
            F[c, F_OPEN_ACC] += delta
            if flags != 0:  # only steps that are not measured carry flags
                I[c, I_OPEN_FLAGS] |= flags
                I[c, cover] += t - t0
        else:
            n_slot = _spread(
                I,
                F,
                ring_e,
                ring_f,
                ring_cov,
                c,
                t0,
                t,
                delta,
                flags,
                cover,
                interval_slots,
                align,
                month_starts,
                out_si,
                out_sf,
                n_slot,
            )
        I[c, I_REF_T] = t
        I[c, I_CAND_N] = 0
        F[c, F_REF_RAW] = v
    return n, n_slot, n_ev


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


@njit(cache=True)
def tail_sums(
    data: np.ndarray, base: int, ends: np.ndarray, lengths: np.ndarray, out: np.ndarray
) -> None:
    """``out[k, i]``: the sums over the ``lengths[k, i]`` slots before ``ends[k]`` (slot
    ``base`` is row 0 of ``data``), as ``SiteSeries.tail_sums(ends[k], lengths[k])``
    computes them, with the same float operations in the same order (replay's bulk
    lane, :mod:`agent.core.bulk`: windows bit-identical to the per-interval path's).

    That method adds the windows shortest first, each slot once:
    ``acc = acc + rows[a:b].sum(0)``, and numpy sums a C-ordered block over its first
    axis row after row, so here a segment's rows are added one by one, then the
    segment to the running sum. Prefix sums would be faster and differ in the last
    bits. Here, not in a module of its own, so the compiled core (``aot``) has it too."""
    rows, width = data.shape
    m = lengths.shape[1]
    order = np.empty(m, dtype=np.int64)
    seg = np.empty(width, dtype=np.float64)
    acc = np.empty(width, dtype=np.float64)
    for k in range(ends.shape[0]):
        end = ends[k]
        # the windows by length, ties in their order (Python's sorted() is stable)
        for i in range(m):
            j = i
            while j > 0 and lengths[k, order[j - 1]] > lengths[k, i]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = i
        acc[:] = 0.0
        done = 0
        for o in order:
            n = int(lengths[k, o])
            a = min(max(end - n - base, 0), rows)
            b = min(max(end - done - base, 0), rows)
            if b > a:
                seg[:] = data[a]
                for r in range(a + 1, b):
                    for w in range(width):
                        seg[w] += data[r, w]
                for w in range(width):
                    acc[w] = acc[w] + seg[w]
            done = max(done, n)
            out[k, o] = acc


# The compiled module's entry points instead of the functions above, which then stay
# Python (njit was a no-op): the same source, compiled by numba ahead of time.
if JIT.compiled is not None:
    update = guarded(JIT.compiled, "update")
    range_sums = guarded(JIT.compiled, "range_sums")
    weighted_range_sums = guarded(JIT.compiled, "weighted_range_sums")
    tail_sums = guarded(JIT.compiled, "tail_sums")
