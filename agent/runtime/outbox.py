"""Store-and-forward: every message is written here before it is published.

The outbox is a transaction, as Telegraf's buffer: ``take`` a batch (it is now
in flight and not taken again), then ``accept`` what the broker acknowledged
(deleted) or ``reject`` the batch (back to the queue, in its original order).
A crash between the two loses nothing: a batch that was neither accepted nor
rejected is still on disk and is sent again after a restart; the records'
idempotent keys make the duplicate harmless.

Bounded by size. When full, raw measurements go first (oldest first), then
intensity records; energy records, the authoritative ones, go last and only
with a loud warning. Two implementations share one contract test suite:
:class:`MemoryOutbox` (tests, and gateways without a disk) and
:class:`SqliteOutbox` (WAL, survives ``kill -9`` and power loss).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Kind(IntEnum):
    """What a message is; decides what is dropped first when the outbox is full."""

    MEASUREMENT = 0
    INTENSITY = 1
    STATUS = 2
    ENERGY = 3


#: Drop order when full: first the cheapest to lose.
DROP_ORDER = (Kind.MEASUREMENT, Kind.INTENSITY, Kind.STATUS, Kind.ENERGY)


@dataclass(frozen=True)
class Entry:
    id: int
    kind: Kind
    topic: str
    payload: bytes
    retain: bool
    created_ms: int

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + 64


@dataclass(frozen=True)
class Item:
    """A message to store: what ``put`` takes, several at once in ``put_many``."""

    kind: Kind
    topic: str
    payload: bytes
    retain: bool = False
    created_ms: int = 0


@dataclass(frozen=True)
class Stats:
    depth: int
    bytes: int
    oldest_ms: int | None
    dropped: dict[Kind, int]


class Outbox(Protocol):
    def put(
        self, kind: Kind, topic: str, payload: bytes, *, retain: bool = False, created_ms: int = 0
    ) -> int: ...

    def put_many(self, items: list[Item]) -> list[int]: ...

    def take(self, limit: int) -> list[Entry]: ...

    def accept(self, ids: list[int]) -> None: ...

    def reject(self, ids: list[int]) -> None: ...

    def stats(self) -> Stats: ...

    def close(self) -> None: ...


class MemoryOutbox:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._queue: OrderedDict[int, Entry] = OrderedDict()
        self._inflight: set[int] = set()
        self._next = 1
        self._bytes = 0
        self._dropped = dict.fromkeys(Kind, 0)
        self._lock = threading.Lock()

    def put(
        self, kind: Kind, topic: str, payload: bytes, *, retain: bool = False, created_ms: int = 0
    ) -> int:
        with self._lock:
            entry = Entry(self._next, kind, topic, payload, retain, created_ms)
            self._next += 1
            self._make_room(entry.size)
            self._queue[entry.id] = entry
            self._bytes += entry.size
            return entry.id

    def put_many(self, items: list[Item]) -> list[int]:
        return [
            self.put(i.kind, i.topic, i.payload, retain=i.retain, created_ms=i.created_ms)
            for i in items
        ]

    def _make_room(self, need: int) -> None:
        for kind in DROP_ORDER:
            if self._bytes + need <= self.max_bytes:
                return
            for eid in [
                e.id for e in self._queue.values() if e.kind is kind and e.id not in self._inflight
            ]:
                if self._bytes + need <= self.max_bytes:
                    return
                self._bytes -= self._queue.pop(eid).size
                self._dropped[kind] += 1
                if kind is Kind.ENERGY:
                    log.error("outbox full: dropped energy record %d", eid)

    def take(self, limit: int) -> list[Entry]:
        with self._lock:
            out: list[Entry] = []
            for eid, e in self._queue.items():
                if len(out) >= limit:
                    break
                if eid not in self._inflight:
                    out.append(e)
                    self._inflight.add(eid)
            return out

    def accept(self, ids: list[int]) -> None:
        with self._lock:
            for eid in ids:
                self._inflight.discard(eid)
                e = self._queue.pop(eid, None)
                if e is not None:
                    self._bytes -= e.size

    def reject(self, ids: list[int]) -> None:
        with self._lock:
            for eid in ids:
                self._inflight.discard(eid)

    def stats(self) -> Stats:
        with self._lock:
            oldest = next(iter(self._queue.values())).created_ms if self._queue else None
            return Stats(len(self._queue), self._bytes, oldest, dict(self._dropped))

    def close(self) -> None:
        return None


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
CREATE TABLE IF NOT EXISTS dropped (kind INTEGER PRIMARY KEY, n INTEGER NOT NULL);
"""


class SqliteOutbox:
    """SQLite in WAL mode, synchronous=FULL: a put that returned is on disk."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._bytes = int(row[0])

    def put(
        self, kind: Kind, topic: str, payload: bytes, *, retain: bool = False, created_ms: int = 0
    ) -> int:
        return self.put_many([Item(kind, topic, payload, retain, created_ms)])[0]

    def put_many(self, items: list[Item]) -> list[int]:
        """One transaction (one fsync) for all: a poll's messages cost one disk flush."""
        ids: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            added = 0
            try:
                for it in items:
                    size = len(it.payload) + len(it.topic) + 64
                    self._make_room(size + added)
                    cur = self._db.execute(
                        "INSERT INTO outbox (kind, topic, payload, retain, created_ms, size) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (int(it.kind), it.topic, it.payload, int(it.retain), it.created_ms, size),
                    )
                    assert cur.lastrowid is not None
                    ids.append(cur.lastrowid)
                    added += size
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += added
            return ids

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
                if kind is Kind.ENERGY:
                    log.error("outbox full: dropped %d energy records", len(victims))

    def take(self, limit: int) -> list[Entry]:
        with self._lock:
            out: list[Entry] = []
            after = 0
            while len(out) < limit:
                rows = self._db.execute(
                    "SELECT id, kind, topic, payload, retain, created_ms FROM outbox "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit + len(self._inflight)),
                ).fetchall()
                if not rows:
                    break
                for rid, kind, topic, payload, retain, created in rows:
                    after = rid
                    if rid in self._inflight:
                        continue
                    out.append(Entry(rid, Kind(kind), topic, bytes(payload), bool(retain), created))
                    self._inflight.add(rid)
                    if len(out) >= limit:
                        break
            return out

    def accept(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                sizes = 0
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    row = self._db.execute(
                        f"SELECT COALESCE(SUM(size), 0) FROM outbox WHERE id IN ({marks})", chunk
                    ).fetchone()
                    sizes += int(row[0])
                    self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes -= sizes
            self._inflight.difference_update(ids)

    def reject(self, ids: list[int]) -> None:
        with self._lock:
            self._inflight.difference_update(ids)

    def stats(self) -> Stats:
        with self._lock:
            depth, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_ms) FROM outbox"
            ).fetchone()
            dropped = dict.fromkeys(Kind, 0)
            for kind, n in self._db.execute("SELECT kind, n FROM dropped"):
                dropped[Kind(kind)] = int(n)
            return Stats(int(depth), self._bytes, None if oldest is None else int(oldest), dropped)

    def close(self) -> None:
        with self._lock:
            self._db.close()
