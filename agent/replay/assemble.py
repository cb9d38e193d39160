"""Decoded columns to a :class:`Chunk` and its bad rows: the one place rows are judged.

Both readers (pyarrow's and the plain-Python one) decode a batch of rows into
the same arrays and hand them here, so a row is accepted, or rejected with the
same words, whichever reader read it. The checks run in a fixed order (the
timestamp, the device, the quantity, the pair, the value) and a row is reported
for the first that fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.replay.rows import NQ, BadRow, Chunk, Skip, Vocabulary, ts_problem
from agent.replay.timestamps import INT64_MIN, TsState, TsUnit

#: The original text of a cell, for messages only: (column, row) -> text.
TextAt = Callable[[str, int], str]


@dataclass
class Decoded:
    """One batch, decoded column by column (row ``i`` of every array is one input row)."""

    lines: np.ndarray  # int64
    kinds: np.ndarray  # timestamps, see timestamps.Kind
    ints: np.ndarray
    decs: np.ndarray
    blank: np.ndarray  # bool: an empty row, skipped without a word
    text: TextAt
    #: long format: device and quantity codes (-1: unknown), values (NaN: not available)
    dev: np.ndarray | None = None
    qty: np.ndarray | None = None
    value: np.ndarray | None = None
    #: row -> why its value is bad (long format) / (row, column index) -> why (wide)
    value_bad: dict[int, str] = field(default_factory=dict)
    #: wide format: one value array per column and which cells hold a value
    columns: Sequence[np.ndarray] = ()
    present: Sequence[np.ndarray] = ()
    cell_bad: dict[tuple[int, int], str] = field(default_factory=dict)


def _ts(d: Decoded, state: TsState) -> np.ndarray:
    kinds = np.where(d.blank, 0, d.kinds).astype(np.int8)
    return state.finish(kinds, d.ints, d.decs)


def _bad_ts(d: Decoded, i: int, state: TsState) -> str:
    return ts_problem(d.text("ts", i), state.unit is TsUnit.S)


def long_chunk(
    source: int, d: Decoded, vocab: Vocabulary, state: TsState, unit: str = "line"
) -> tuple[Chunk, list[BadRow]]:
    assert d.dev is not None and d.qty is not None and d.value is not None
    ts = _ts(d, state)
    dev, qty = d.dev, d.qty
    known = (dev >= 0) & (qty >= 0)
    allowed = np.zeros(len(ts), dtype=bool)
    allowed[known] = vocab.allowed[dev[known], qty[known]]
    value_ok = np.ones(len(ts), dtype=bool)
    if d.value_bad:
        value_ok[list(d.value_bad)] = False
    good = (ts != INT64_MIN) & allowed & value_ok & ~d.blank
    bad: list[BadRow] = []
    for i in np.flatnonzero(~good & ~d.blank).tolist():
        if ts[i] == INT64_MIN:
            cause, reason = Skip.TIMESTAMP, _bad_ts(d, i, state)
        elif not allowed[i]:
            problem = vocab.key_problem(d.text("device", i), d.text("quantity", i))
            cause, reason = problem or (Skip.QUANTITY, "?")
        else:
            cause, reason = Skip.VALUE, d.value_bad[i]
        bad.append(BadRow(source, int(d.lines[i]), reason, unit, cause))
    idx = np.flatnonzero(good)
    chunk = Chunk(source, ts[idx], dev[idx] * NQ + qty[idx], d.value[idx], d.lines[idx])
    return chunk, bad


def wide_chunk(
    source: int,
    d: Decoded,
    keys: Sequence[int],
    names: Sequence[str],
    state: TsState,
    unit: str = "line",
) -> tuple[Chunk, list[BadRow]]:
    """Row-major: each row's cells in column order, as the long file listing them would."""
    ts = _ts(d, state)
    bad: list[BadRow] = []
    ts_ok = (ts != INT64_MIN) & ~d.blank
    for i in np.flatnonzero((ts == INT64_MIN) & ~d.blank).tolist():
        bad.append(BadRow(source, int(d.lines[i]), _bad_ts(d, i, state), unit, Skip.TIMESTAMP))
    for (i, j), reason in sorted(d.cell_bad.items()):
        if ts_ok[i]:
            text = f"column '{names[j]}': {reason}"
            bad.append(BadRow(source, int(d.lines[i]), text, unit, Skip.VALUE))
    n, k = len(ts), len(keys)
    if k == 0 or n == 0:
        empty = np.empty(0, dtype=np.int64)
        return Chunk(source, empty, empty, np.empty(0), empty), bad
    present = np.stack(list(d.present), axis=1) & ts_ok[:, None]
    for i, j in d.cell_bad:
        present[i, j] = False
    rows, cols = np.nonzero(present)  # row-major order
    values = np.stack(list(d.columns), axis=1)[rows, cols]
    key = np.asarray(keys, dtype=np.int64)[cols]
    return Chunk(source, ts[rows], key, values, d.lines[rows]), bad


def empty_ts(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64)
