"""The fast reader: pyarrow's streaming CSV and Parquet readers, columns cast in bulk.

pyarrow (the ``backfill`` extra) was chosen by measurement: its streaming CSV
reader parses a week of 1 Hz readings in about 0.1 s on one core, polars'
batched scan took half as long again, and only pyarrow reports the line
number of a malformed row, decompresses gzip as a stream and reads Parquet in
batches. The CSV reader runs single-threaded (faster here than its threaded
mode, and the line numbers it reports are exact only then).

A batch that casts cleanly never leaves Arrow and numpy; a batch holding a cell
pyarrow does not read (a garbage line, a padded number, ``null``) is decoded
row by row the way the plain-Python reader does, so both judge rows alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from agent.replay.arrow_columns import numpy_of, ts_columns
from agent.replay.assemble import Decoded, long_chunk, wide_chunk
from agent.replay.rows import (
    MISSING,
    BadRow,
    Chunk,
    ReplayInputError,
    Skip,
    Vocabulary,
    parse_value,
)
from agent.replay.sources import Container, Shape, Source, first_undecodable
from agent.replay.timestamps import Kind, TsState

#: The CSV reader's block: it reads some blocks ahead and keeps them, 1 MB blocks held
#: about 25 MB of Arrow memory where 4 MB blocks held 75-110 MB, at the same speed.
BLOCK_BYTES = 1 << 20
PARQUET_BATCH = 65_536
_DICT = pa.dictionary(pa.int32(), pa.string())


def chunks(
    src: Source, vocab: Vocabulary, state: TsState, progress: list[int]
) -> Iterator[tuple[Chunk, list[BadRow]]]:
    batches = _parquet(src, progress) if src.container is Container.PARQUET else _csv(src, progress)
    for batch, lines, bad in batches:
        chunk, more = _decode(src, batch, lines, vocab, state)
        yield chunk, sorted(bad + more)


def _csv(
    src: Source, progress: list[int]
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[BadRow]]]:
    invalid: list[tuple[int, int]] = []  # (line, fields; 0: only blanks, skipped silently)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        blank = not (row.text or "").replace(",", "").strip()
        invalid.append((int(row.number or 0), 0 if blank else int(row.actual_columns)))
        return "skip"

    lower = [n.strip().lower() for n in src.names]
    types = {
        raw: (_DICT if low in ("device", "quantity") and src.shape is Shape.LONG else pa.string())
        for raw, low in zip(src.names, lower, strict=True)
    }
    try:
        raw = pa.OSFile(str(src.path))
        stream = pa.CompressedInputStream(raw, "gzip") if src.gzip else raw
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
        )
        next_line, seen = 2, 0
        for batch in reader:
            progress[0] = raw.tell()
            end = next_line + batch.num_rows
            skipped: list[int] = []
            bad: list[BadRow] = []
            while seen < len(invalid) and invalid[seen][0] < end:
                line, got = invalid[seen]
                skipped.append(line)
                if got:
                    text = f"expected {len(src.names)} fields, got {got}"
                    bad.append(BadRow(src.index, line, text, cause=Skip.FIELDS))
                end += 1
                seen += 1
            lines = np.arange(next_line, end, dtype=np.int64)
            if skipped:
                lines = np.delete(lines, np.asarray(skipped, dtype=np.int64) - next_line)
            next_line = end
            yield batch, lines, bad
        tail = [
            BadRow(src.index, ln, f"expected {len(src.names)} fields, got {got}", cause=Skip.FIELDS)
            for ln, got in invalid[seen:]
            if got
        ]
        if tail:
            yield pa.RecordBatch.from_pylist([], schema=reader.schema), np.empty(0, np.int64), tail
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) and (err := first_undecodable(src.path, src.gzip)) is not None:
            raise err from None
        raise ReplayInputError(f"cannot read {src.path}: {exc}") from None
    except (pa.ArrowException, OSError) as exc:
        raise ReplayInputError(f"cannot read {src.path}: {exc}") from None


def _parquet(
    src: Source, progress: list[int]
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[BadRow]]]:
    try:
        f = pq.ParquetFile(str(src.path))
        total = max(f.metadata.num_rows, 1)
        first = 1
        for batch in f.iter_batches(batch_size=PARQUET_BATCH):
            lines = np.arange(first, first + batch.num_rows, dtype=np.int64)
            first += batch.num_rows
            progress[0] = src.size * (first - 1) // total
            yield batch, lines, []
    except (pa.ArrowException, OSError) as exc:
        raise ReplayInputError(f"cannot read {src.path} as Parquet: {exc}") from None


# --- columns ------------------------------------------------------------------------------


def _values(col: pa.Array, wide: bool) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(values with NaN for "not available", cell holds a reading, row -> why bad)."""
    null = numpy_of(col.is_null(), True)
    bad: dict[int, str] = {}
    try:
        values = numpy_of(pc.cast(col, pa.float64()), np.nan)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        texts = col.cast(pa.string()).to_pylist()
        values = np.full(len(texts), np.nan)
        for i, t in enumerate(texts):
            if t is None or (wide and not t.strip()):
                continue
            try:
                values[i] = parse_value(t)
            except ValueError as exc:
                bad[i] = str(exc)
        present = np.array([t is not None and (bool(t.strip()) or not wide) for t in texts])
        return values, present.astype(bool), bad
    odd = np.flatnonzero(~np.isfinite(values) & ~null)
    textual = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    for i in odd.tolist():
        t = str(col[i].as_py()).strip() if textual else repr(float(values[i]))
        if (t.lower() if textual else t) not in MISSING:
            bad[i] = f"value '{t}' is not a finite number"
    return values, ~null, bad


def _decode(
    src: Source, batch: pa.RecordBatch, lines: np.ndarray, vocab: Vocabulary, state: TsState
) -> tuple[Chunk, list[BadRow]]:
    names = [n.strip().lower() for n in batch.schema.names]
    col = {n: batch.column(i) for i, n in enumerate(names)}
    kinds, ints, decs = ts_columns(col["ts"])

    def text(name: str, i: int) -> str:
        v = col[name][i].as_py()
        return "" if v is None else str(v)

    blank = np.zeros(batch.num_rows, dtype=bool)
    for i in np.flatnonzero(kinds == Kind.BAD).tolist():
        blank[i] = all(not text(n, i).strip() for n in names)
    d = Decoded(lines, kinds, ints, decs, blank, text)
    if src.shape is Shape.LONG:
        d.dev = _codes(col["device"], vocab.device_code)
        d.qty = _codes(col["quantity"], vocab.quantity_code)
        d.value, _, d.value_bad = _values(col["value"], wide=False)
        return long_chunk(src.index, d, vocab, state, src.row_unit)
    columns, present = [], []
    for j in range(1, len(names)):
        values, has, bad = _values(batch.column(j), wide=True)
        columns.append(values)
        present.append(has)
        for i, reason in bad.items():
            d.cell_bad[(i, j - 1)] = reason
    d.columns, d.present = columns, present
    return wide_chunk(
        src.index, d, src.keys, [s.strip() for s in src.names[1:]], state, src.row_unit
    )


def _codes(col: pa.Array, code: Callable[[str | None], int]) -> np.ndarray:
    """Per row, the code of its text (device or quantity); -1 for unknown or empty."""
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    dictionary = col.dictionary.to_pylist()
    table = np.array([code(t) for t in dictionary] + [-1], dtype=np.int64)
    idx = numpy_of(col.indices.cast(pa.int64()), len(dictionary))
    out: np.ndarray = table[idx]
    return out
