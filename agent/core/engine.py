"""The engine: the numba kernel's arrays behind a small Python API.

Everything here is bookkeeping around :mod:`agent.core.kernel` — allocating the
state, growing the output buffer, turning arrays into records, saving and
restoring the arrays. The numbers are all computed in the kernel. This is the
only module besides the kernel that knows the layout of its state columns
(``I``, ``F``): the rest of the core asks through the methods below.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from agent.core.channels import N_EVENTS, RING, SLOT_MS, ChannelKind, ChannelSpec
from agent.core.jit import JitChoice
from agent.core.snapshot import Snapshot

INT64_MIN = np.iinfo(np.int64).min
#: numba's compiled-code cache, under the agent's state directory.
CACHE_DIR = "numba-cache"


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


@dataclass(frozen=True)
class Records:
    """Closed intervals, one row per (channel, interval end)."""

    channel: np.ndarray
    end_ms: np.ndarray
    energy: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return int(self.channel.shape[0])


class Engine:
    def __init__(
        self,
        specs: Sequence[ChannelSpec],
        interval_s: int,
        *,
        demand: Sequence[bool] | None = None,
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
        n = len(self.specs)
        k = self.k
        self.I = np.zeros((n, k.NI), dtype=np.int64)
        self.F = np.zeros((n, k.NF), dtype=np.float64)
        self.ring_e = np.zeros((n, RING), dtype=np.float64)
        self.ring_f = np.zeros((n, RING), dtype=np.uint8)
        self.events = np.zeros((n, N_EVENTS), dtype=np.int64)
        self.I[:, k.I_LAST_SEEN] = INT64_MIN
        self.I[:, k.I_DM_MONTH] = INT64_MIN
        self.F[:, k.F_DM_MAX] = -np.inf
        for c, s in enumerate(self.specs):
            self.I[c, k.I_KIND] = k.KIND_POWER if s.kind is ChannelKind.POWER else k.KIND_COUNTER
            self.F[c, k.F_WRAP] = s.wrap
            self.F[c, k.F_MAX_RATE] = s.max_rate_per_h
            self.F[c, k.F_TOL_ABS] = s.tol_abs
            self.F[c, k.F_TOL_REL] = s.tol_rel
            self.F[c, k.F_MAX_GAP_MS] = s.max_gap_s * 1000.0
        if demand is not None:
            self.I[:, k.I_DEMAND] = np.asarray(demand, dtype=np.int64)
        self.set_months(month_starts_ms)
        self._out_c = np.empty(out_capacity, dtype=np.int64)
        self._out_end = np.empty(out_capacity, dtype=np.int64)
        self._out_e = np.empty(out_capacity, dtype=np.float64)
        self._out_f = np.empty(out_capacity, dtype=np.int64)

    def set_months(self, month_starts_ms: Sequence[int]) -> None:
        """Local month starts (Unix ms, ascending) covering the data: demand peaks reset there."""
        slots = np.asarray(month_starts_ms, dtype=np.int64) // SLOT_MS
        self.month_starts = slots if slots.size else np.zeros(1, dtype=np.int64) + INT64_MIN // 2

    def feed(self, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> Records:
        """Feed readings (in time order per channel); return the intervals they closed."""
        chans = np.ascontiguousarray(chans, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        vals = np.ascontiguousarray(vals, dtype=np.float64)
        parts: list[Records] = []
        start = 0
        while True:
            nxt, n_out = self.k.update(
                self.I,
                self.F,
                self.ring_e,
                self.ring_f,
                self.events,
                chans,
                ts,
                vals,
                start,
                self.interval_slots,
                self.month_starts,
                self._out_c,
                self._out_end,
                self._out_e,
                self._out_f,
            )
            if n_out:
                parts.append(
                    Records(
                        self._out_c[:n_out].copy(),
                        self._out_end[:n_out].copy(),
                        self._out_e[:n_out].copy(),
                        self._out_f[:n_out].copy(),
                    )
                )
            if nxt >= chans.shape[0]:
                break
            if n_out == 0:
                # one reading closes more intervals than fit: grow the buffer
                self._grow(int(self._out_c.shape[0]) * 4)
            start = nxt
        if not parts:
            return Records(
                *(np.empty(0, dtype=d) for d in (np.int64, np.int64, np.float64, np.int64))
            )
        if len(parts) == 1:
            return parts[0]
        return Records(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("channel", "end_ms", "energy", "flags")
            )
        )

    def _grow(self, capacity: int) -> None:
        self._out_c = np.empty(capacity, dtype=np.int64)
        self._out_end = np.empty(capacity, dtype=np.int64)
        self._out_e = np.empty(capacity, dtype=np.float64)
        self._out_f = np.empty(capacity, dtype=np.int64)

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

    def has_reference(self, c: int) -> bool:
        """Channel ``c`` has accepted a reading: it counts, and closes intervals."""
        return bool(self.I[c, self.k.I_HAS_REF] != 0)

    def emitted_end(self, c: int) -> int:
        """End (Unix ms) of the last interval channel ``c`` has closed, once it has a
        reference (before its first closed interval: the start of its first one)."""
        return int(self.I[c, self.k.I_EMITTED_END])

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
            "events": self.events,
        }

    def save(self, snap: Snapshot) -> None:
        snap.put("keys", [s.key for s in self.specs])
        for name, array in self.state_arrays().items():
            snap.put_array(name, array)

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        """Each channel continues from the row saved under its key (a new one starts
        fresh). Its settings — kind, limits, demand — stay those of the config in force
        now; after a change of publish interval the counter continues and the interval
        bookkeeping restarts at the slot it had open."""
        keys = snap.value("keys", lambda v: [str(key) for key in v])
        row_of = {key: j for j, key in enumerate(keys)}
        saved = {
            name: snap.array(name, (len(keys), *current.shape[1:]))
            for name, current in self.state_arrays().items()
        }

        def restore() -> None:
            for c, spec in enumerate(self.specs):
                j = row_of.get(spec.key)
                if j is not None:
                    self._restore_channel(c, {name: a[j] for name, a in saved.items()})
                    if not same_interval and self.has_reference(c):
                        opened = int(self.I[c, self.k.I_OPEN_SLOT]) * SLOT_MS
                        ms = self.interval_ms
                        self.I[c, self.k.I_EMITTED_END] = opened // ms * ms

        return restore

    def _restore_channel(self, c: int, rows: dict[str, np.ndarray]) -> None:
        k = self.k
        settings_f = [k.F_WRAP, k.F_MAX_RATE, k.F_TOL_ABS, k.F_TOL_REL, k.F_MAX_GAP_MS]
        keep_f = self.F[c, settings_f].copy()
        keep_kind, keep_demand = self.I[c, k.I_KIND], self.I[c, k.I_DEMAND]
        for name, array in self.state_arrays().items():
            array[c] = rows[name]
        self.F[c, settings_f] = keep_f  # the config in force now decides the limits
        self.I[c, k.I_KIND], self.I[c, k.I_DEMAND] = keep_kind, keep_demand
