"""The reader without pyarrow: Python's csv module, streamed in chunks.

Where pyarrow has no wheel (32-bit ARM gateways) a backfill still works, a few
times slower, in the same bounded memory. Parquet needs pyarrow.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator

import numpy as np

from agent.replay.assemble import Decoded, long_chunk, wide_chunk
from agent.replay.rows import BadRow, Chunk, ReplayInputError, Skip, Vocabulary, parse_value
from agent.replay.sources import Container, Shape, Source, not_utf8, open_text
from agent.replay.timestamps import TsState, classify_many

CHUNK_ROWS = 65_536


def chunks(
    src: Source, vocab: Vocabulary, state: TsState, progress: list[int]
) -> Iterator[tuple[Chunk, list[BadRow]]]:
    """Chunks of good rows and the bad ones, in file order; ``progress[0]``: bytes read."""
    if src.container is Container.PARQUET:
        raise ReplayInputError(
            f"{src.path}: reading Parquet needs pyarrow: pip install 'energy-agent[backfill]'"
        )
    try:
        with open_text(src.path, src.gzip) as f:
            reader = csv.reader(f)
            next(reader)  # the header, checked by sources.describe
            while True:
                rows: list[list[str]] = []
                lines: list[int] = []
                bad: list[BadRow] = []
                for fields in reader:
                    if not fields or all(not x.strip() for x in fields):
                        continue
                    if len(fields) != len(src.names):
                        bad.append(
                            BadRow(
                                src.index,
                                reader.line_num,
                                f"expected {len(src.names)} fields, got {len(fields)}",
                                cause=Skip.FIELDS,
                            )
                        )
                        continue
                    rows.append(fields)
                    lines.append(reader.line_num)
                    if len(rows) >= CHUNK_ROWS:
                        break
                progress[0] = _position(f)
                if not rows and not bad:
                    return
                chunk, more = _decode(src, rows, lines, vocab, state)
                yield chunk, sorted(bad + more)
    except UnicodeDecodeError as exc:
        raise not_utf8(src.path, exc) from None
    except (OSError, EOFError) as exc:
        raise ReplayInputError(f"cannot read {src.path}: {exc}") from None


def _position(f: io.TextIOWrapper) -> int:
    """Bytes of the file read so far (compressed bytes for gzip), for the progress bar."""
    buf = f.buffer
    inner = getattr(buf, "fileobj", None) if isinstance(buf, gzip.GzipFile) else None
    inner = inner or getattr(buf, "raw", None)
    tell = getattr(inner, "tell", None)
    return int(tell()) if tell is not None else 0


def _decode(
    src: Source, rows: list[list[str]], lines: list[int], vocab: Vocabulary, state: TsState
) -> tuple[Chunk, list[BadRow]]:
    names = [n.strip().lower() for n in src.names]
    col = {n: i for i, n in enumerate(names)}
    n = len(rows)
    kinds, ints, decs = classify_many([r[col["ts"]] for r in rows])

    def text(name: str, i: int) -> str:
        return rows[i][col[name]]

    d = Decoded(np.asarray(lines, dtype=np.int64), kinds, ints, decs, np.zeros(n, bool), text)
    if src.shape is Shape.LONG:
        d.dev = np.array([vocab.device_code(r[col["device"]]) for r in rows], dtype=np.int64)
        d.qty = np.array([vocab.quantity_code(r[col["quantity"]]) for r in rows], dtype=np.int64)
        d.value = np.empty(n, dtype=np.float64)
        for i, r in enumerate(rows):
            try:
                d.value[i] = parse_value(r[col["value"]])
            except ValueError as exc:
                d.value[i] = np.nan
                d.value_bad[i] = str(exc)
        return long_chunk(src.index, d, vocab, state)
    columns, present = [], []
    for j in range(1, len(names)):
        vals = np.full(n, np.nan)
        has = np.zeros(n, dtype=bool)
        for i, r in enumerate(rows):
            cell = r[j].strip()
            if not cell:
                continue
            try:
                vals[i] = parse_value(cell)
                has[i] = True
            except ValueError as exc:
                d.cell_bad[(i, j - 1)] = str(exc)
        columns.append(vals)
        present.append(has)
    d.columns, d.present = columns, present
    return wide_chunk(src.index, d, src.keys, [s.strip() for s in src.names[1:]], state)
