"""The engine: the numba kernel's arrays behind a small Python API.

Everything here is bookkeeping around :mod:`agent.core.kernel` — allocating the
state, growing the output buffers, turning arrays into rows, saving and
restoring the arrays. The numbers are all computed in the kernel. This is the
only module besides the kernel that knows the layout of its state columns
(``I``, ``F``) and output rows: the rest of the core asks through the methods below.

The API the site builds on (all arrays numpy, one element per row):

``Engine(specs, interval_s, *, demand=None, align_offset_slots=0, month_starts_ms=())``
    Channel ``c`` is ``specs[c]``. Intervals are ``interval_s`` long and end at the
    one-minute slots s with ``(s - align_offset_slots) % interval_slots == 0`` (0:
    aligned to UTC; the site passes the UTC minute of local midnight modulo the
    interval, e.g. 30 for hourly intervals in Asia/Kolkata, 15 in Asia/Kathmandu).
    ``demand[c]``: channel ``c`` tracks the 15-minute demand.

``feed(chans, ts, vals) -> Closed``: readings (channel, Unix ms, value; in time
order per channel). ``Closed`` holds everything they closed, each in the order it
happened:

* ``.slots`` (:class:`Slots`): every one-minute slot closed — ``channel``,
  ``slot`` (Unix minute: start ms // 60,000), ``energy`` (native units: kWh, m3,
  units), ``measured_ms`` and ``interpolated_ms`` (how much of the slot's 60,000 ms
  measured and interpolated steps covered; the rest is missing), ``flags``
  (:class:`Flag` bits, PARTIAL in the slot of the first reading when it starts
  before it) and ``demand_kw`` (the 15-minute average power at the slot's end, NaN
  for a channel without demand). The site's exact series are built from these: they
  never depend on the ring still holding a slot.
* ``.records`` (:class:`Records`): every interval closed — ``channel``, ``end_ms``
  (Unix ms), ``energy``, ``flags``, ``measured_ms``, ``interpolated_ms`` (sums over
  its slots; missing = interval − both).
* ``.events`` (:class:`Events`): ``channel``, ``ts`` (Unix ms), ``event``
  (:class:`Event` value) and ``value``: WRAP and GLITCH at the reading's ts with its
  value; RESET (rebaseline down) or REBASELINE (up) at the new baseline's ts and
  value, right after the GLITCH row of the reading that completed the run.

``set_limit(c, max_rate_per_h)``, ``set_wrap(c, wrap)`` (and ``max_rate``,
``wrap``): the glitch limit and wrap range in force, changeable at run time; a
snapshot restore keeps the values in force. ``interval_start_slot(slot)``: the
first slot of the interval holding ``slot`` on this grid. ``has_reference``, ``emitted_end``,
``complete_end``, ``closed_slot_end``, ``demand_peak``, ``range_sums``,
``weighted_range_sums``: the channels' state, see each. ``save``/``restorer``: the
snapshot (:class:`agent.core.snapshot.Part`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import ClassVar, Self

import numpy as np

from agent.core.channels import N_EVENTS, RING, SLOT_MS, ChannelSpec, Flag
from agent.core.jit import JitChoice
from agent.core.snapshot import Snapshot

INT64_MIN = np.iinfo(np.int64).min
#: numba's compiled-code cache, under the agent's state directory.
CACHE_DIR = "numba-cache"
#: The snapshot key of the alignment offset (absent in files of the first format: 0).
ALIGN_KEY = "align_offset_slots"


def load_kernel(cache_dir: Path | None = None) -> ModuleType:
    """Import the numba kernel, with its compiled-code cache in ``cache_dir``.

    numba reads NUMBA_CACHE_DIR once, when it is first imported; the agent keeps
    the cache under its state directory so a read-only install still caches.
    """
    if cache_dir is not None and "numba" not in sys.modules:
        try:
            # Only inside an existing state directory: `replay` on a workstation must not
            # create /var/lib/energy-agent as a side effect.
            cache_dir.mkdir(exist_ok=True)
            writable = os.access(cache_dir, os.W_OK)
        except OSError:
            writable = False  # e.g. `replay` on a workstation without the gateway's state dir
        if writable:
            os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir))
    from agent.core import kernel

    return kernel


class _Rows:
    """Columns of equal length; subclasses list them as dataclass fields."""

    DTYPES: ClassVar[tuple[type, ...]]

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])  # type: ignore[arg-type]

    @classmethod
    def empty(cls) -> Self:
        return cls(*(_frozen(np.empty(0, dtype=d)) for d in cls.DTYPES))

    @classmethod
    def concat(cls, parts: Sequence[Self]) -> Self:
        if len(parts) == 1:
            return parts[0]
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in names))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Records(_Rows):
    """Closed intervals, one row per (channel, interval end)."""

    DTYPES = (np.int64, np.int64, np.float64, np.int64, np.int64, np.int64)
    channel: np.ndarray
    end_ms: np.ndarray
    energy: np.ndarray
    flags: np.ndarray
    measured_ms: np.ndarray
    interpolated_ms: np.ndarray


@dataclass(frozen=True)
class Slots(_Rows):
    """Closed one-minute slots, one row per (channel, slot)."""

    DTYPES = (np.int64, np.int64, np.float64, np.int64, np.int64, np.int64, np.float64)
    channel: np.ndarray
    slot: np.ndarray
    energy: np.ndarray
    measured_ms: np.ndarray
    interpolated_ms: np.ndarray
    flags: np.ndarray
    demand_kw: np.ndarray


@dataclass(frozen=True)
class Events(_Rows):
    """What the corrections did, one row per event (WRAP, GLITCH, RESET, REBASELINE)."""

    DTYPES = (np.int64, np.int64, np.int64, np.float64)
    channel: np.ndarray
    ts: np.ndarray
    event: np.ndarray
    value: np.ndarray


@dataclass(frozen=True)
class Closed:
    """What one ``Engine.feed`` closed."""

    records: Records
    slots: Slots
    events: Events


NOTHING = Closed(Records.empty(), Slots.empty(), Events.empty())


class _Buffers:
    """Where the kernel writes the rows of one call: slot rows (with the interval records
    in them) and event rows, column-major, copied out after each call."""

    def __init__(self, k: ModuleType, capacity: int) -> None:
        self.k = k
        capacity = max(capacity, k.EVENTS_PER_READING)
        self.si = np.empty((k.NS, capacity), dtype=np.int64)
        self.sf = np.empty((k.NSF, capacity), dtype=np.float64)
        self.ei = np.empty((k.NE, capacity), dtype=np.int64)
        self.ef = np.empty(capacity, dtype=np.float64)

    @property
    def capacity(self) -> int:
        return int(self.ef.shape[0])

    def take(self, n: int, m: int) -> Closed:
        """The first ``n`` slot rows and ``m`` event rows, as arrays of their own."""
        k, si, sf, ei = self.k, self.si, self.sf, self.ei
        slots = Slots(
            si[k.S_CHANNEL, :n].copy(),
            si[k.S_SLOT, :n].copy(),
            sf[k.SF_ENERGY, :n].copy(),
            si[k.S_MEASURED, :n].copy(),
            si[k.S_INTERPOLATED, :n].copy(),
            si[k.S_FLAGS, :n].copy(),
            sf[k.SF_DEMAND, :n].copy(),
        )
        iv = np.flatnonzero(si[k.S_IV_END, :n])
        records = Records(
            slots.channel[iv],
            (slots.slot[iv] + 1) * SLOT_MS,
            sf[k.SF_IV_ENERGY, iv],
            si[k.S_IV_FLAGS, iv],
            si[k.S_IV_MEASURED, iv],
            si[k.S_IV_INTERPOLATED, iv],
        )
        events = Events(
            ei[k.E_CHANNEL, :m].copy(),
            ei[k.E_TS, :m].copy(),
            ei[k.E_EVENT, :m].copy(),
            self.ef[:m].copy(),
        )
        return Closed(records, slots, events)


class Engine:
    def __init__(
        self,
        specs: Sequence[ChannelSpec],
        interval_s: int,
        *,
        demand: Sequence[bool] | None = None,
        align_offset_slots: int = 0,
        month_starts_ms: Sequence[int] = (),
        kernel: ModuleType | None = None,
        out_capacity: int = 65_536,
    ) -> None:
        if interval_s * 1000 % SLOT_MS:
            raise ValueError("interval_s must be a whole number of minutes")
        self.k = kernel or load_kernel()
        #: numba, or plain Python and why (:mod:`agent.core.jit`).
        self.jit: JitChoice = self.k.JIT
        self.specs = list(specs)
        self.interval_slots = interval_s * 1000 // SLOT_MS
        self.interval_ms = self.interval_slots * SLOT_MS
        if not 0 <= align_offset_slots < self.interval_slots:
            raise ValueError(
                f"align_offset_slots must be in [0, {self.interval_slots}), "
                f"not {align_offset_slots}"
            )
        self.align_offset_slots = align_offset_slots
        n = len(self.specs)
        k = self.k
        self.I = np.zeros((n, k.NI), dtype=np.int64)
        self.F = np.zeros((n, k.NF), dtype=np.float64)
        self.ring_e = np.zeros((n, RING), dtype=np.float64)
        self.ring_f = np.zeros((n, RING), dtype=np.uint8)
        self.ring_cov = np.zeros((n, RING, 2), dtype=np.uint16)
        self.events = np.zeros((n, N_EVENTS), dtype=np.int64)
        self.I[:, k.I_LAST_SEEN] = INT64_MIN
        self.I[:, k.I_DM_MONTH] = INT64_MIN
        self.F[:, k.F_DM_MAX] = -np.inf
        for c, s in enumerate(self.specs):
            self.I[c, k.I_KIND] = int(s.kind)
            self.F[c, k.F_TOL_ABS] = s.tol_abs
            self.F[c, k.F_TOL_REL] = s.tol_rel
            self.F[c, k.F_MAX_GAP_MS] = s.max_gap_s * 1000.0
            self.set_limit(c, s.max_rate_per_h)
            self.set_wrap(c, s.wrap)
        if demand is not None:
            self.I[:, k.I_DEMAND] = np.asarray(demand, dtype=np.int64)
        self.set_months(month_starts_ms)
        self._out = _Buffers(k, out_capacity)

    def set_months(self, month_starts_ms: Sequence[int]) -> None:
        """Local month starts (Unix ms, ascending) covering the data: demand peaks reset there."""
        slots = np.asarray(month_starts_ms, dtype=np.int64) // SLOT_MS
        self.month_starts = slots if slots.size else np.zeros(1, dtype=np.int64) + INT64_MIN // 2

    # --- settings in force ---------------------------------------------------------------

    def set_limit(self, c: int, max_rate_per_h: float) -> None:
        """Channel ``c``'s glitch limit from now on: the largest plausible increase per
        hour (kW for energy, the largest |P| for power; inf: no limit)."""
        if not max_rate_per_h > 0.0:  # also refuses NaN
            raise ValueError(f"a limit must be positive, not {max_rate_per_h}")
        self.F[c, self.k.F_MAX_RATE] = max_rate_per_h

    def set_wrap(self, c: int, wrap: float) -> None:
        """Channel ``c``'s counter range (2^bits x scale x ratios; 0: it cannot wrap)."""
        if not (math.isfinite(wrap) and wrap >= 0.0):
            raise ValueError(f"a wrap range must be finite and >= 0, not {wrap}")
        self.F[c, self.k.F_WRAP] = wrap

    def max_rate(self, c: int) -> float:
        return float(self.F[c, self.k.F_MAX_RATE])

    def wrap(self, c: int) -> float:
        return float(self.F[c, self.k.F_WRAP])

    # --- feeding -------------------------------------------------------------------------

    def feed(self, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> Closed:
        """Feed readings (in time order per channel); return what they closed."""
        chans = np.ascontiguousarray(chans, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        vals = np.ascontiguousarray(vals, dtype=np.float64)
        parts: list[Closed] = []
        start = 0
        out = self._out
        while True:
            nxt, n_slots, n_events = self.k.update(
                self.I,
                self.F,
                self.ring_e,
                self.ring_f,
                self.ring_cov,
                self.events,
                chans,
                ts,
                vals,
                start,
                self.interval_slots,
                self.align_offset_slots,
                self.month_starts,
                out.si,
                out.sf,
                out.ei,
                out.ef,
            )
            if n_slots or n_events:
                parts.append(out.take(n_slots, n_events))
            if nxt >= chans.shape[0]:
                break
            if n_slots == 0 and n_events == 0:
                # one reading closes more slots than fit: grow the buffers
                out = self._out = _Buffers(self.k, out.capacity * 4)
            start = nxt
        if not parts:
            return NOTHING
        return Closed(
            Records.concat([p.records for p in parts]),
            Slots.concat([p.slots for p in parts]),
            Events.concat([p.events for p in parts]),
        )

    # --- windows over the ring -----------------------------------------------------------

    def range_sums(self, first_slots: Sequence[int], end_slots: Sequence[int]) -> np.ndarray:
        a = np.asarray(first_slots, dtype=np.int64)
        b = np.asarray(end_slots, dtype=np.int64)
        out = np.empty((len(self.specs), a.shape[0]), dtype=np.float64)
        self.k.range_sums(self.I, self.ring_e, a, b, out)
        return out

    def weighted_range_sums(
        self,
        group: np.ndarray,
        weights: np.ndarray,
        first_slots: Sequence[int],
        end_slots: Sequence[int],
    ) -> np.ndarray:
        a = np.asarray(first_slots, dtype=np.int64)
        b = np.asarray(end_slots, dtype=np.int64)
        out = np.empty((len(self.specs), a.shape[0]), dtype=np.float64)
        self.k.weighted_range_sums(
            self.I,
            self.ring_e,
            np.asarray(group, dtype=np.int64),
            np.ascontiguousarray(weights, dtype=np.float64),
            a,
            b,
            out,
        )
        return out

    # --- channel state, for the site ---------------------------------------------------

    def interval_start_slot(self, slot: int) -> int:
        """The first slot of the interval holding ``slot``."""
        return slot - (slot - self.align_offset_slots) % self.interval_slots

    def has_reference(self, c: int) -> bool:
        """Channel ``c`` has accepted a reading: it counts, and closes intervals."""
        return bool(self.I[c, self.k.I_HAS_REF] != 0)

    def first_slot(self, c: int) -> int:
        """The slot of channel ``c``'s first reading (its data starts there)."""
        return int(self.I[c, self.k.I_FIRST_T]) // SLOT_MS

    def emitted_end(self, c: int) -> int:
        """End (Unix ms) of the last interval channel ``c`` has closed, once it has a
        reference (before its first closed interval: the start of its first one)."""
        return int(self.I[c, self.k.I_EMITTED_END])

    def first_ts(self, c: int) -> int:
        """Time (Unix ms) of channel ``c``'s first accepted reading (meaningful once it
        has a reference): windows reaching before it are not full."""
        return int(self.I[c, self.k.I_FIRST_T])

    def complete_end(self) -> int:
        """The latest interval end that every channel with data has closed (0: none has)."""
        k = self.k
        has = self.I[:, k.I_HAS_REF] != 0
        if not has.any():
            return 0
        return int(self.I[has, k.I_EMITTED_END].min())

    def demand_flags(self) -> list[bool]:
        """Per channel, whether it tracks 15-minute demand."""
        return [bool(d) for d in self.I[:, self.k.I_DEMAND]]

    def closed_slot_end(self) -> np.ndarray:
        """Per channel, the first slot not yet closed (slots before it are final)."""
        k = self.k
        return np.where(self.I[:, k.I_HAS_REF] != 0, self.I[:, k.I_OPEN_SLOT], INT64_MIN)

    def demand_peak(self, channel: int) -> tuple[float, int, int] | None:
        """(peak kW, slot it ended at, month index) of the current month, if any."""
        k = self.k
        if self.I[channel, k.I_DM_MONTH] == INT64_MIN:
            return None
        return (
            float(self.F[channel, k.F_DM_MAX]),
            int(self.I[channel, k.I_DM_SLOT]),
            int(self.I[channel, k.I_DM_MONTH]),
        )

    # --- snapshot (agent.core.snapshot.Part) -----------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {
            "I": self.I,
            "F": self.F,
            "ring_e": self.ring_e,
            "ring_f": self.ring_f,
            "ring_cov": self.ring_cov,
            "events": self.events,
        }

    def save(self, snap: Snapshot) -> None:
        """The arrays, in the format :func:`_save` describes."""
        _save(self, snap)

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        """Each channel continues from the row saved under its key: see :func:`_restorer`."""
        return _restorer(self, snap, same_interval=same_interval)


# --- the snapshot's format ------------------------------------------------------------
# Apart from the Engine because the format is a job of its own (the first format's
# columns kept as they were, the added ones beside them, the upgrade of a first-format
# file), while the Engine's is running the kernel. Here, not in another module: only
# this module may know the kernel's columns.


def _save(eng: Engine, snap: Snapshot) -> None:
    """The first format's arrays as they were (``I`` and ``F`` with their first
    columns, so a rollback continues), the columns added since in ``I_ext``/``F_ext``."""
    k = eng.k
    snap.put("keys", [s.key for s in eng.specs])
    snap.put(ALIGN_KEY, eng.align_offset_slots)
    for name, array in eng.state_arrays().items():
        if name in ("I", "F"):
            width = k.NI_V1 if name == "I" else k.NF_V1
            snap.put_array(name, array[:, :width])
            snap.put_array(f"{name}_ext", array[:, width:])
        else:
            snap.put_array(name, array)


def _restorer(eng: Engine, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
    """Each channel continues from the row saved under its key (a new one starts
    fresh). Its settings — kind, limits, wrap, demand — stay those in force now;
    after a change of publish interval or alignment the counter continues and the
    interval bookkeeping restarts at the slot it had open. A file of the first
    format (no coverage) continues too: see :func:`_upgrade_v1`."""
    k = eng.k
    keys = snap.value("keys", lambda v: [str(key) for key in v])
    m = len(keys)
    shapes: dict[str, tuple[int, ...]] = {
        "I": (m, k.NI_V1),
        "F": (m, k.NF_V1),
        "ring_e": (m, RING),
        "ring_f": (m, RING),
        "events": (m, N_EVENTS),
    }
    added = {
        "I_ext": (m, k.NI - k.NI_V1),
        "F_ext": (m, k.NF - k.NF_V1),
        "ring_cov": (m, RING, 2),
    }
    first_format = not any(name in snap.arrays for name in added)
    if not first_format:
        shapes.update(added)
    saved = {name: snap.array(name, shape) for name, shape in shapes.items()}
    align = 0 if first_format else snap.value(ALIGN_KEY, int)
    same_grid = same_interval and align == eng.align_offset_slots
    row_of = {key: j for j, key in enumerate(keys)}

    def restore() -> None:
        for c, spec in enumerate(eng.specs):
            j = row_of.get(spec.key)
            if j is None:
                continue
            _restore_channel(eng, c, {name: a[j] for name, a in saved.items()})
            if not same_grid and eng.has_reference(c):
                opened = eng.interval_start_slot(int(eng.I[c, k.I_OPEN_SLOT]))
                eng.I[c, k.I_EMITTED_END] = opened * SLOT_MS

    return restore


def _restore_channel(eng: Engine, c: int, rows: dict[str, np.ndarray]) -> None:
    k = eng.k
    settings_f = [k.F_WRAP, k.F_MAX_RATE, k.F_TOL_ABS, k.F_TOL_REL, k.F_MAX_GAP_MS]
    keep_f = eng.F[c, settings_f].copy()
    keep_kind, keep_demand = eng.I[c, k.I_KIND], eng.I[c, k.I_DEMAND]
    i_row, f_row = np.zeros(k.NI, dtype=np.int64), np.zeros(k.NF)
    i_row[: k.NI_V1], f_row[: k.NF_V1] = rows["I"], rows["F"]
    if "I_ext" in rows:
        i_row[k.NI_V1 :], f_row[k.NF_V1 :] = rows["I_ext"], rows["F_ext"]
        eng.ring_cov[c] = rows["ring_cov"]
    else:
        eng.ring_cov[c] = _upgrade_v1(k, i_row, f_row, rows["ring_f"])
    eng.I[c], eng.F[c] = i_row, f_row
    eng.ring_e[c], eng.ring_f[c], eng.events[c] = (
        rows["ring_e"],
        rows["ring_f"],
        rows["events"],
    )
    eng.F[c, settings_f] = keep_f  # the settings in force now decide the limits
    eng.I[c, k.I_KIND], eng.I[c, k.I_DEMAND] = keep_kind, keep_demand


def _upgrade_v1(
    k: ModuleType, i_row: np.ndarray, f_row: np.ndarray, ring_f: np.ndarray
) -> np.ndarray:
    """A channel of a first-format snapshot, which kept no coverage and only the latest
    rejected reading: fill in the new columns (in place) and return its coverage ring.

    Coverage of a slot closed before the upgrade (and of the open slot's part so
    far) is read from its flags: interpolated if INTERPOLATED, missing if GAP or
    RESET, measured otherwise; the time before the first reading is missing. A run
    of rejected readings restarts at the latest of them."""
    cov = np.zeros((RING, 2), dtype=np.uint16)
    if i_row[k.I_HAS_REF] == 0:
        return cov
    if i_row[k.I_CAND_N] > 0:
        i_row[k.I_CAND_N] = 1
    i_row[k.I_CAND0_T], f_row[k.F_CAND0_RAW] = i_row[k.I_CAND_T], f_row[k.F_CAND_RAW]
    first_t, open_slot = int(i_row[k.I_FIRST_T]), int(i_row[k.I_OPEN_SLOT])
    slots = np.arange(max(first_t // SLOT_MS, open_slot - RING), open_slot, dtype=np.int64)
    flags = ring_f[slots % RING].astype(np.int64)
    covered = SLOT_MS - np.clip(first_t - slots * SLOT_MS, 0, SLOT_MS)
    interpolated = (flags & Flag.INTERPOLATED) != 0
    missing = ~interpolated & ((flags & (Flag.GAP | Flag.RESET)) != 0)
    cov[slots % RING, 0] = np.where(interpolated | missing, 0, covered)
    cov[slots % RING, 1] = np.where(interpolated, covered, 0)
    so_far = int(i_row[k.I_REF_T]) - max(open_slot * SLOT_MS, first_t)
    open_flags = int(i_row[k.I_OPEN_FLAGS])
    if open_flags & Flag.INTERPOLATED:
        i_row[k.I_OPEN_INTERPOLATED] = so_far
    elif open_flags & (Flag.GAP | Flag.RESET):
        i_row[k.I_OPEN_MISSING] = so_far
    return cov
