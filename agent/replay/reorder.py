"""The reorder window: rows may arrive out of time order, by a bounded amount.

Rows wait here until the input has moved ``window`` past the end of their
one-minute slot; then the slot is released, sorted by time (rows of one
instant stay in input order) and cleared of duplicates. A row for a slot
already released is too late: it is reported and skipped, never slipped in
out of order. Memory is the window's rows plus the chunk in hand, whatever the
size of the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from agent.core.channels import SLOT_MS
from agent.replay.rows import BadRow, Chunk, Skip

INT64_MIN = int(np.iinfo(np.int64).min)
INT64_MAX = int(np.iinfo(np.int64).max)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def span(ms: int) -> str:
    """15 min, 2 h, 45 s: a window's length as people say it."""
    s = ms / 1000
    if s >= 3600 and s % 3600 == 0:
        return f"{int(s // 3600)} h"
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)} min"
    return f"{s:g} s"


@dataclass
class Batch:
    """Released rows, sorted by (ts, arrival): what the core gets next."""

    ts: np.ndarray
    key: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


class Reorder:
    def __init__(self, window_ms: int, names: dict[int, str], units: dict[int, str]) -> None:
        self.window_ms = window_ms
        #: source index -> how to name it in a message about another file's row
        self.names = names
        #: source index -> "line" or "row" (Parquet)
        self.units = units
        self.released_upto = INT64_MIN  # rows before this have gone to the core
        self._parts: list[tuple[np.ndarray, ...]] = []  # ts, key, value, line, source, seq
        self._seq = 0
        self.late = 0
        self.duplicates = 0

    def add(self, chunk: Chunk, newest: int) -> tuple[list[BadRow], int]:
        """Take a chunk of one file whose newest time so far is ``newest``; return the rows
        that are too late (bad) and the file's newest time after the chunk.

        A row is too late when it is more than the window older than the newest row
        before it in its file (row by row, so the verdict never depends on where the
        reader happened to cut its chunks), or older than what was released already.
        """
        n = len(chunk)
        if not n:
            return [], newest
        seq = np.arange(self._seq, self._seq + n, dtype=np.int64)
        self._seq += n
        running = np.maximum.accumulate(np.maximum(chunk.ts, newest))
        before = np.concatenate([[newest], running[:-1]])
        late = (chunk.ts < before - self.window_ms) | (chunk.ts < self.released_upto)
        newest = int(running[-1])
        bad: list[BadRow] = []
        if late.any():
            self.late += int(late.sum())
            for i in np.flatnonzero(late).tolist():
                bad.append(
                    BadRow(
                        chunk.source,
                        int(chunk.line[i]),
                        f"ts {iso(int(chunk.ts[i]))} is out of order by more than the "
                        f"reorder window ({span(self.window_ms)}): this file had reached "
                        f"{iso(int(before[i]))}",
                        self.units[chunk.source],
                        Skip.LATE,
                    )
                )
            keep = ~late
            chunk = chunk.take(np.flatnonzero(keep))
            seq = seq[keep]
        src = np.full(len(chunk), chunk.source, dtype=np.int64)
        self._parts.append((chunk.ts, chunk.key, chunk.value, chunk.line, src, seq))
        return bad, newest

    def release(self, upto: int | None) -> tuple[Batch, list[BadRow]]:
        """Rows of every slot that ends at or before ``upto`` (all of them: None)."""
        boundary = INT64_MAX if upto is None else (upto // SLOT_MS) * SLOT_MS
        empty = Batch(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
        if boundary <= self.released_upto or not self._parts:
            return empty, []
        cols = [np.concatenate(c) for c in zip(*self._parts, strict=True)]
        ts = cols[0]
        out = ts < boundary
        if out.all():
            self._parts = []
        else:
            rest = ~out
            self._parts = [tuple(c[rest] for c in cols)]
            cols = [c[out] for c in cols]
        self.released_upto = boundary
        if not cols[0].size:
            return empty, []
        ts, key, value, line, src, seq = cols
        if not bool(np.all(ts[1:] >= ts[:-1])):
            order = np.lexsort((seq, ts))
            ts, key, value, line, src = ts[order], key[order], value[order], line[order], src[order]
        bad: list[BadRow] = []
        if not bool(np.all(ts[1:] > ts[:-1])):
            ts, key, value, bad = self._dedupe(ts, key, value, line, src)
        return Batch(ts, key, value), bad

    def _dedupe(
        self, ts: np.ndarray, key: np.ndarray, value: np.ndarray, line: np.ndarray, src: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[BadRow]]:
        """The first row of a (ts, device, quantity) is used, later ones reported."""
        pos = np.arange(ts.shape[0])
        order = np.lexsort((pos, key, ts))
        same = (ts[order][1:] == ts[order][:-1]) & (key[order][1:] == key[order][:-1])
        if not same.any():
            return ts, key, value, []
        n = order.shape[0]
        starts = np.concatenate([[True], ~same])
        first_of = order[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
        dup_pos = order[1:][same]
        orig = first_of[1:][same]
        bad = []
        for d, o in zip(dup_pos.tolist(), orig.tolist(), strict=True):
            where = "" if src[d] == src[o] else f"{self.names[int(src[o])]} "
            unit = self.units[int(src[d])]
            bad.append(
                BadRow(
                    int(src[d]),
                    int(line[d]),
                    f"duplicate of {where}{self.units[int(src[o])]} {int(line[o])} "
                    "(same ts, device, quantity)",
                    unit,
                    Skip.DUPLICATE,
                )
            )
        self.duplicates += len(bad)
        keep = np.ones(ts.shape[0], dtype=bool)
        keep[dup_pos] = False
        return ts[keep], key[keep], value[keep], bad
