"""Which files, in which shape, in which order.

Inputs are files or directories (their ``*.csv``, ``*.csv.gz``, ``*.parquet``
files, in name order below each directory). Each file is CSV or Parquet (told
by its content, not its name), gzip-compressed or not, and in one of two shapes:

* **long**: ``ts,device,quantity,value``, one reading per row (columns in any
  order and case);
* **wide**: ``ts`` and one column per ``device.quantity``, one instant per row,
  as loggers and SCADA exports write it. An empty cell is "no reading".

Files are read in the order of their first timestamp (a peek at the first rows),
and read side by side where their times overlap (one file per meter over the
same month), so the rows reach the core in time order either way.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from agent.replay.rows import COLUMNS, ReplayInputError, Vocabulary
from agent.replay.timestamps import Kind, TsState, classify

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
#: Rows looked at to find a file's first timestamp.
PEEK_ROWS = 200


class Container(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


class Shape(StrEnum):
    LONG = "long"
    WIDE = "wide"


@dataclass
class Source:
    index: int
    path: Path
    container: Container
    gzip: bool
    shape: Shape
    names: list[str]  # header / column names, as written
    size: int
    #: wide: per value column, its key and its name
    keys: list[int] = field(default_factory=list)
    first_ts: int | None = None

    @property
    def row_unit(self) -> str:
        return "row" if self.container is Container.PARQUET else "line"


def expand(inputs: Sequence[Path]) -> list[Path]:
    """Files named, and the data files inside directories named (recursively, by name)."""
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES)
            )
            if not found:
                raise ReplayInputError(
                    f"{p}: no data files in this directory (looked for {', '.join(SUFFIXES)})"
                )
            out += found
        else:
            out.append(p)
    return out


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4)
    except OSError as exc:
        raise ReplayInputError(f"cannot read {path}: {exc.strerror}") from None


def open_text(path: Path, compressed: bool) -> io.TextIOWrapper:
    """The file as text: UTF-8 (a BOM, as Excel writes, is no part of the header)."""
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return io.TextIOWrapper(path.open("rb"), encoding="utf-8-sig", newline="")


def not_utf8(path: Path, exc: UnicodeDecodeError) -> ReplayInputError:
    return ReplayInputError(
        f"{path} is not UTF-8 text (undecodable byte 0x{exc.object[exc.start]:02x}); "
        "save it as UTF-8"
    )


def first_undecodable(path: Path, compressed: bool) -> ReplayInputError | None:
    """Find the first byte that is not UTF-8 (for pyarrow's less specific complaint)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    opener = gzip.open if compressed else open
    with opener(path, "rb") as f:
        while block := f.read(1 << 20):
            try:
                dec.decode(block)
            except UnicodeDecodeError as exc:
                return not_utf8(path, exc)
    return None


def describe(index: int, path: Path, vocab: Vocabulary, tz: ZoneInfo) -> Source:
    """Open a file far enough to know its container, shape and first timestamp."""
    head = _head(path)
    size = path.stat().st_size
    if head.startswith(PARQUET_MAGIC):
        try:
            from agent.replay.arrow_columns import parquet_first_ts, parquet_names
        except ImportError:
            raise ReplayInputError(
                f"{path}: reading Parquet needs pyarrow: pip install 'energy-agent[backfill]'"
            ) from None

        names = parquet_names(path)
        src = Source(index, path, Container.PARQUET, False, Shape.LONG, names, size)
        _shape(src, vocab)
        ts_column = next(n for n in names if n.strip().lower() == "ts")
        src.first_ts = parquet_first_ts(path, ts_column, TsState(tz))
        return src
    compressed = head.startswith(GZIP_MAGIC)
    try:
        with open_text(path, compressed) as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise ReplayInputError(
                    f"{path} is empty; expected a header {','.join(COLUMNS)}"
                ) from None
            src = Source(index, path, Container.CSV, compressed, Shape.LONG, header, size)
            _shape(src, vocab)
            src.first_ts = _peek_csv(src, reader, TsState(tz))
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ReplayInputError(f"cannot read {path}: {exc}") from None
    return src


def _shape(src: Source, vocab: Vocabulary) -> None:
    names = [n.strip().lower() for n in src.names]
    if sorted(names) == sorted(COLUMNS):
        src.shape = Shape.LONG
        return
    if len(names) >= 2 and names[0] == "ts" and all("." in n for n in names[1:]):
        src.shape = Shape.WIDE
        for raw in src.names[1:]:
            dev, _, q = raw.strip().rpartition(".")
            problem = vocab.key_problem(dev, q)
            if problem is not None:
                raise ReplayInputError(f"{src.path}: column '{raw.strip()}': {problem[1]}")
            src.keys.append(vocab.key_of(dev, q))
        if len(set(src.keys)) != len(src.keys):
            raise ReplayInputError(f"{src.path}: a device.quantity column appears twice")
        return
    raise ReplayInputError(
        f"{src.path}: header must name the columns {','.join(COLUMNS)} "
        f"(found: {','.join(src.names)})"
        + (
            ""
            if not any("." in n for n in names)
            else "; or, one instant per row: ts and one column per device.quantity"
        )
    )


def _peek_csv(src: Source, rows: Iterator[list[str]], state: TsState) -> int | None:
    col = [n.strip().lower() for n in src.names].index("ts")
    for k, fields in enumerate(rows):
        if k >= PEEK_ROWS:
            break
        if len(fields) != len(src.names):
            continue
        kind, i, d = classify(fields[col])
        if kind is not Kind.BAD:
            ms = state.finish(
                np.array([kind], dtype=np.int8), np.array([i]), np.array([d], dtype=np.float64)
            )
            return int(ms[0])
    return None


def order(sources: list[Source]) -> list[Source]:
    """By first timestamp (files without one first: they are read, and reported, at once)."""
    return sorted(sources, key=lambda s: (s.first_ts is not None, s.first_ts or 0, s.index))
