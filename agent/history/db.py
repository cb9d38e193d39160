"""The history's SQLite file: schema, connections, and the rows both sides share."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    ts INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    sub TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    stored_ms INTEGER NOT NULL,
    UNIQUE (kind, device, ts, rev, sub)
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts, id);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    entry BLOB NOT NULL,
    hash TEXT NOT NULL,
    upto INTEGER NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0,
    stored_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_end ON ledger (period_end);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: meta: records with ts at or before this were pruned (retention or size).
PRUNED_BEFORE = "pruned_before_ms"

RECORD_COLUMNS = "id, kind, device, ts, rev, sub, topic, payload, stored_ms"


class HistoryError(Exception):
    """The history cannot be read or written (disk full, damaged, missing); says where."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class NewRecord:
    """A record as published, to be stored: its key and the bytes sent."""

    kind: str
    device: str
    ts: int
    rev: int
    #: What tells apart records of one device at one ts, for kinds that have several
    #: (a device's events: the event and the quantity); "" for the others.
    sub: str
    topic: str
    payload: bytes


@dataclass(frozen=True)
class StoredRecord(NewRecord):
    """A record as stored: its row id (the order it was stored in) and when."""

    id: int = 0
    stored_ms: int = 0

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> StoredRecord:
        rid, kind, device, ts, rev, sub, topic, payload, stored = row
        return cls(
            str(kind), str(device), int(ts), int(rev), str(sub), str(topic), bytes(payload),
            id=int(rid), stored_ms=int(stored),
        )  # fmt: skip


#: sqlite3.h: SQLITE_CONFIG_MEMSTATUS, the switch of SQLite's memory statistics.
_CONFIG_MEMSTATUS = 9
_untracked = False


def _untrack_memory() -> None:
    """Switch off SQLite's memory statistics in this process, before its first connection.

    Why: with them on (SQLite's default), every allocation SQLite makes takes one
    process-wide mutex to count itself. Reading a month of records in 2 threads then
    ran at 1.4x one thread's speed instead of 1.8x, and one thread 10 to 40 % slower
    (docs/performance.md, "The report"). Nothing here reads the statistics (they
    serve sqlite3_memory_used and a soft heap limit, which the agent does not set).

    Python's sqlite3 has no call for sqlite3_config, so it is made through ctypes on
    the library the sqlite3 module is linked with, which is SQLite's public C API; it
    must run while nothing is open (sqlite3_shutdown's rule), so it is made only when
    SQLite says it holds no memory at all, and never again after the first try. Where
    the symbols are not exported (a build with SQLite linked in statically), or the
    statistics are compiled out, nothing changes.
    """
    global _untracked
    if _untracked:
        return
    _untracked = True
    try:
        import _sqlite3
        import ctypes

        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        if lib.sqlite3_memory_used() != 0:
            return  # a connection is open somewhere in the process: leave SQLite be
        if lib.sqlite3_shutdown() == 0:
            lib.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0))
        lib.sqlite3_initialize()
    except (OSError, AttributeError, ImportError):
        return


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection; the writer's creates the file and its schema."""
    _untrack_memory()
    try:
        if readonly:
            if not path.exists():
                raise HistoryError(path, "no history here (has the agent run with this state_dir?)")
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
            return db
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (sqlite3.Error, OSError) as exc:
        raise HistoryError(path, str(exc)) from exc
    try:
        # Incremental vacuum gives pruned pages back to the disk (a new file only).
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        # Every commit holds records: on the disk before the core's snapshot can claim them.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
    except sqlite3.Error as exc:
        db.close()
        raise HistoryError(path, str(exc)) from exc
    return db


@contextlib.contextmanager
def errors(path: Path) -> Iterator[None]:
    """SQLite's errors leave as :class:`HistoryError` naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise HistoryError(path, str(exc)) from exc


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    with errors(path):
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise


def meta(db: sqlite3.Connection, name: str) -> int | None:
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def set_meta(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def used_bytes(db: sqlite3.Connection) -> int:
    """Pages in use (free pages are reused before the file grows)."""
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size
