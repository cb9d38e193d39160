"""Arrow columns as numpy (timestamps of any Arrow type), and the head of a Parquet file.

Apart from the reader (:mod:`agent.replay.read_arrow`) so that describing a
Parquet file (:mod:`agent.replay.sources`) does not import the reader, which
imports the sources: no import cycle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agent.replay.rows import ReplayInputError
from agent.replay.timestamps import Kind, TsState, classify_many


def parquet_names(path: object) -> list[str]:
    try:
        return list(pq.ParquetFile(str(path)).schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise ReplayInputError(f"cannot read {path} as Parquet: {exc}") from None


def parquet_first_ts(path: Path, ts_column: str, state: TsState) -> int | None:
    """The first good timestamp of a Parquet file, read from its first rows only."""
    f = pq.ParquetFile(str(path))
    if f.metadata.num_rows == 0:
        return None
    for batch in f.iter_batches(batch_size=16, columns=[ts_column]):
        kinds, ints, decs = ts_columns(batch.column(0))
        ms = state.finish(kinds, ints, decs)
        good = ms[kinds != Kind.BAD]
        return int(good[0]) if good.size else None
    return None


def numpy_of(arr: pa.Array, fill: object) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, fill).to_numpy(zero_copy_only=False))


def ts_columns(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kinds, ints, decs) of a timestamp column of any Arrow type."""
    n = len(col)
    kinds = np.zeros(n, dtype=np.int8)
    ints = np.zeros(n, dtype=np.int64)
    decs = np.zeros(n, dtype=np.float64)
    valid = ~numpy_of(col.is_null(), True)
    t = col.type
    if pa.types.is_integer(t):
        ints[:] = numpy_of(col.cast(pa.int64()), 0)
        kinds[valid] = Kind.INT
    elif pa.types.is_floating(t):
        decs[:] = numpy_of(col.cast(pa.float64()), np.nan)
        kinds[valid & np.isfinite(decs)] = Kind.DEC
    elif pa.types.is_timestamp(t):
        ints[:] = numpy_of(pc.cast(col, pa.timestamp("ms", t.tz), safe=False).cast(pa.int64()), 0)
        kinds[valid] = Kind.UTC if t.tz is not None else Kind.NAIVE
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        return _ts_strings(col, valid)
    else:
        return classify_many([None if v is None else str(v) for v in col.to_pylist()])
    return kinds, ints, decs


def _ts_strings(col: pa.Array, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(col)
    for target, kind in (
        (pa.int64(), Kind.INT),
        (pa.timestamp("ms"), Kind.NAIVE),
        (pa.timestamp("ms", "UTC"), Kind.UTC),
    ):
        try:
            cast = pc.cast(col, target)
        except pa.ArrowInvalid:
            continue
        kinds = np.where(valid, kind, Kind.BAD).astype(np.int8)
        return kinds, numpy_of(cast.cast(pa.int64()), 0), np.zeros(n)
    return classify_many(col.to_pylist())
