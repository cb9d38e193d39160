"""The outbox on disk: SQLite in WAL mode, fsync'd where a power cut would lose a record."""

from __future__ import annotations

import contextlib
import heapq
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

from agent.runtime.outbox.base import (
    DROP_ORDER,
    DROPPED_COUNTER,
    RECORDS,
    Entry,
    Item,
    Kind,
    OutboxError,
    Stats,
    Sync,
    entry_size,
    is_fresh,
    log_dropped,
)

log = logging.getLogger("agent.runtime.outbox")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
CREATE INDEX IF NOT EXISTS outbox_fresh ON outbox (created_ms) WHERE kind = 0;
CREATE TABLE IF NOT EXISTS dropped (kind INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COLUMNS = "id, kind, topic, payload, retain, created_ms"

Row = tuple[int, int, str, bytes, int, int]


class SqliteOutbox:
    """SQLite in WAL mode; what must survive a power cut is fsync'd before it counts.

    A transaction that holds a record (energy, intensity, status) is committed with
    ``synchronous=FULL``: ``put_many`` returns only when it is on the disk, so the
    core's snapshot taken after it can never claim a record the disk does not
    have. Measurements alone are committed with ``synchronous=NORMAL`` (in WAL
    mode: consistent, survives ``kill -9``, but the last transactions may roll
    back on a power cut) and made durable by the next FULL commit, which a
    running agent makes at most ``sync_interval_s`` later (it writes at every
    poll; ``close`` checkpoints): a power cut loses at most that much raw data,
    as if the meters had not been polled. Deletes (``accept``) are never fsync'd: a
    delete lost in a power cut only sends an acknowledged message again.

    Depth, bytes and drop counts are kept in memory (counted once at open), so
    ``stats`` costs nothing on an hour of backlog: the live page asks twice a second.
    """

    def __init__(self, path: Path, max_bytes: int, *, sync_interval_s: float = 1.0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.sync_interval_s = sync_interval_s
        self._synchronous = ""
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._depth = self._bytes = 0
        self._dropped: dict[Kind, int] = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # read-only, not ours: the disk refuses, as when full
            raise OutboxError(path, str(exc)) from exc
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(path, str(exc)) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._set_sync("FULL")
            self._reload_counters()
        except sqlite3.Error as exc:  # a full disk (no room for the WAL's files), damage
            self._db.close()
            raise OutboxError(path, str(exc)) from exc
        self._last_sync = time.monotonic()

    def _set_sync(self, level: str) -> None:
        if level != self._synchronous:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    @contextlib.contextmanager
    def _transaction(self, sync: Sync) -> Iterator[None]:
        """One write transaction (the caller holds the lock); SQLite errors leave as
        :class:`OutboxError`."""
        now = time.monotonic()
        try:
            # SQLite fixes the level outside a transaction.
            if sync is Sync.NOW or (
                sync is Sync.SOON and now - self._last_sync >= self.sync_interval_s
            ):
                self._set_sync("FULL")
                self._last_sync = now
            else:
                self._set_sync("NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(self.path, str(exc)) from exc
        # The counters as they were: a rollback undoes the drops made for room. Restored,
        # not counted again: on a full disk every retry fails, and a count is a scan.
        saved = (self._depth, self._bytes, dict(self._dropped))
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):  # already rolled back by SQLite
                self._db.execute("ROLLBACK")
            self._depth, self._bytes, self._dropped = saved
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(self.path, str(exc)) from exc
            raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A read (the caller holds the lock); a damaged file leaves as :class:`OutboxError`."""
        try:
            yield
        except sqlite3.Error as exc:
            raise OutboxError(self.path, str(exc)) from exc

    def put(
        self, kind: Kind, topic: str, payload: bytes, *, retain: bool = False, created_ms: int = 0
    ) -> int:
        return self.put_many([Item(kind, topic, payload, retain, created_ms)])[0]

    def put_many(self, items: list[Item], marks: Mapping[str, int] | None = None) -> list[int]:
        """One transaction (at most one fsync) for all: callers group what they can.

        ``marks`` are counters stored in the same transaction (the measurements'
        ``seq`` per device), so after ``kill -9`` they match what the outbox holds.
        """
        if not items and not marks:
            return []
        ids: list[int] = []
        added = 0
        sync = Sync.NOW if any(it.kind in RECORDS for it in items) else Sync.SOON
        with self._lock:
            with self._transaction(sync):
                for it in items:
                    size = entry_size(it.topic, it.payload)
                    self._make_room(size + added)
                    cur = self._db.execute(
                        "INSERT INTO outbox (kind, topic, payload, retain, created_ms, size) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (int(it.kind), it.topic, it.payload, int(it.retain), it.created_ms, size),
                    )
                    assert cur.lastrowid is not None
                    ids.append(cur.lastrowid)
                    added += size
                if marks:
                    self._db.executemany(
                        "INSERT INTO marks (name, value) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                        list(marks.items()),
                    )
            self._bytes += added
            self._depth += len(ids)
        return ids

    def marks(self) -> dict[str, int]:
        with self._lock, self._reading():
            return {name: int(v) for name, v in self._db.execute("SELECT name, value FROM marks")}

    def _reload_counters(self) -> None:
        """Count once at open; kept in memory from then on."""
        depth, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
        ).fetchone()
        self._depth, self._bytes = int(depth), int(size)
        self._dropped = dict.fromkeys(Kind, 0)
        for kind, n in self._db.execute("SELECT kind, n FROM dropped"):
            self._dropped[Kind(kind)] = int(n)

    def _make_room(self, need: int) -> None:
        for kind in DROP_ORDER:
            while self._bytes + need > self.max_bytes:
                rows = self._db.execute(
                    "SELECT id, size FROM outbox WHERE kind = ? ORDER BY id LIMIT 256",
                    (int(kind),),
                ).fetchall()
                rows = [r for r in rows if r[0] not in self._inflight]
                if not rows:
                    break
                freed = 0
                victims = []
                for rid, size in rows:
                    if self._bytes - freed + need <= self.max_bytes:
                        break
                    victims.append(rid)
                    freed += size
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(v,) for v in victims])
                self._db.execute(
                    "INSERT INTO dropped (kind, n) VALUES (?, ?) "
                    "ON CONFLICT(kind) DO UPDATE SET n = n + excluded.n",
                    (int(kind), len(victims)),
                )
                self._bytes -= freed
                self._depth -= len(victims)
                self._dropped[kind] += len(victims)
                log_dropped("outbox", kind, len(victims), DROPPED_COUNTER)

    def take(self, limit: int, fresh_from_ms: int | None = None) -> list[Entry]:
        with self._lock, self._reading():
            if self._depth <= len(self._inflight):
                # Everything stored is in flight (the counters are exact): no query. The
                # pump asks again after every batch, so this is one read a tick saved.
                return []
            rows = _choose(self._db, self._inflight, self._depth, limit, fresh_from_ms)
            self._inflight.update(r[0] for r in rows)
            return [
                Entry(rid, Kind(kind), topic, bytes(payload), bool(retain), created)
                for rid, kind, topic, payload, retain, created in rows
            ]

    def accept(self, ids: list[int]) -> None:
        if not ids:
            return
        sizes = deleted = 0
        with self._lock:
            # Never fsync'd: a delete lost in a power cut only sends a message once more.
            with self._transaction(Sync.NEVER):
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    n, size = self._db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox "
                        f"WHERE id IN ({marks})",
                        chunk,
                    ).fetchone()
                    sizes += int(size)
                    deleted += int(n)
                    self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
            self._bytes -= sizes
            self._depth -= deleted
            self._inflight.difference_update(ids)

    def reject(self, ids: list[int]) -> None:
        with self._lock:
            self._inflight.difference_update(ids)

    def mark_taken(self, ids: list[int]) -> None:
        """In flight without a ``take`` (see :meth:`MemoryOutbox.mark_taken`)."""
        with self._lock:
            self._inflight.update(ids)

    def stats(self) -> Stats:
        with self._lock, self._reading():
            row = self._db.execute("SELECT created_ms FROM outbox ORDER BY id LIMIT 1").fetchone()
            oldest = None if row is None else int(row[0])
            return Stats(self._depth, self._bytes, oldest, dict(self._dropped))

    def close(self) -> None:
        """Checkpoint and close; never raises, so a full disk cannot turn a clean stop
        into a traceback. A checkpoint that fails costs nothing: what was committed is
        in the WAL, and the next open replays it."""
        with self._lock:
            try:
                if self._depth or self._synchronous != "FULL":
                    # What NORMAL commits left unsynced goes to the disk now.
                    self._db.execute("PRAGMA wal_checkpoint(FULL)")
            except sqlite3.Error as exc:
                log.warning(
                    "outbox %s: checkpoint at close failed (%s); what was stored stays in "
                    "its write-ahead log and is read back at the next start",
                    self.path,
                    exc,
                )
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.warning("outbox %s: close failed (%s)", self.path, exc)


# --- the reads: which rows a take sends --------------------------------------------------


def _ids(
    db: sqlite3.Connection,
    inflight: Set[int],
    where: str,
    params: tuple[int, ...],
    limit: int,
    index: str = "",
) -> list[int]:
    """Up to ``limit`` ids matching ``where`` not in flight, in id order.

    Ids only: each lane is answered from its index without reading the rows, so
    skipping the window in flight costs little; the rows are read once, chosen.
    """
    out: list[int] = []
    after = 0
    source = f"outbox INDEXED BY {index}" if index else "outbox"
    while len(out) < limit:
        ids = [
            r[0]
            for r in db.execute(
                f"SELECT id FROM {source} WHERE {where} AND id > ? ORDER BY id LIMIT ?",
                (*params, after, limit - len(out) + len(inflight)),
            )
        ]
        if not ids:
            break
        after = ids[-1]
        out += [i for i in ids if i not in inflight][: limit - len(out)]
    return out


def _rows(db: sqlite3.Connection, ids: list[int]) -> list[Row]:
    """The rows of ``ids``, in that order."""
    found: dict[int, Row] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id IN ({marks})", chunk):
            found[row[0]] = row
    return [found[i] for i in ids if i in found]


def _choose(
    db: sqlite3.Connection,
    inflight: Set[int],
    depth: int,
    limit: int,
    fresh_from_ms: int | None,
) -> list[Row]:
    """The rows a take sends: in id order, or (``fresh_from_ms``) live first.

    Apart from :class:`SqliteOutbox` because it only reads: the outbox's counters
    and its window in flight are all it needs of the outbox's state.
    """
    if fresh_from_ms is None:
        return _rows(db, _ids(db, inflight, "1", (), limit))
    if depth - len(inflight) <= limit:  # all of it fits: one query
        rows = _rows(db, _ids(db, inflight, "1", (), limit))
        rows.sort(key=lambda r: not is_fresh(Kind(r[1]), r[5], fresh_from_ms))
        return rows
    # Each lane on its index, (kind, id) or the partial one of fresh
    # measurements; merged by id, so records keep their order.
    lanes = [_ids(db, inflight, "kind = ?", (int(k),), limit) for k in RECORDS]
    lanes.append(
        _ids(db, inflight, "kind = 0 AND created_ms >= ?", (fresh_from_ms,), limit, "outbox_fresh")
    )
    ids = list(heapq.merge(*lanes))[:limit]
    if len(ids) < limit:
        # The backlog, oldest first: walk (kind, id), never sort the backlog.
        ids += _ids(
            db,
            inflight,
            "kind = 0 AND created_ms < ?",
            (fresh_from_ms,),
            limit - len(ids),
            index="outbox_kind",
        )
    return _rows(db, ids)
