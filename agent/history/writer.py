"""The agent's side of the history: records in as they are published, the ledger's
entries, pruning (by the rules of :mod:`agent.history.bound`), and what it says
about itself.

Durability is the outbox's: every commit is fsync'd (``synchronous=FULL``; only
records come here, once per interval, not per poll) before ``put`` returns, and
the agent's core snapshot is not written while a record waits here in memory
(:meth:`History.held`), so a crash makes the core derive those intervals again
rather than lose them.

Why a file of its own rather than tables in the outbox's transactions: the
outbox is a queue that empties; the history grows to months and is pruned by
its own rules, read by the page, ``report`` and exports while the agent writes.
Consistency between the two needs no shared transaction: both are written
before the snapshot may claim a record, and a crash between the two writes
makes the restarted core emit those records again, which the history stores as
the newest version of their key (as InfluxDB keeps the last write), so both end
holding the same.

A disk that refuses writes: records wait in memory (:data:`MAX_PENDING`, oldest
dropped beyond, each drop an error), tried again every second, and are stored
in order when it takes writes again; records the broker acknowledged from the
outbox's memory lane meanwhile reach the history all the same, because this
queue does not depend on the outbox's.
"""

from __future__ import annotations

import collections
import logging
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.contract import MessageKind, TopicRef
from agent.history import bound, rollup
from agent.history import db as hdb
from agent.history.db import HistoryError, NewRecord
from agent.history.reader import HistoryReader
from agent.runtime.throttle import LogThrottle, repeats
from agent.status import HistoryStatus

log = logging.getLogger(__name__)

#: Records held in memory while the disk refuses them (~300 B each): two days of
#: 50 meters at 60 s intervals.
MAX_PENDING = 150_000
RETRY_S = 1.0


#: Kinds with several records of one device at one ts, and the fields that tell them
#: apart (the database's tags of the point): a reading that wrapped and was a glitch.
DISTINCT_BY: dict[MessageKind, tuple[str, ...]] = {MessageKind.EVENTS: ("event", "quantity")}


def new_record(ref: TopicRef, topic: str, payload: Mapping[str, Any], encoded: bytes) -> NewRecord:
    """A published record as the history keeps it: its key and the bytes sent (its
    canonical lines are worked out from them when a period is sealed)."""
    return NewRecord(
        ref.kind.value,
        ref.device or "",
        int(payload["ts"]),
        int(payload.get("rev", 0)),
        "/".join(str(payload.get(name, "")) for name in DISTINCT_BY.get(ref.kind, ())),
        topic,
        encoded,
    )


class History:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        retention_months: int,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.retention_months = retention_months
        self.max_pending = max_pending
        self._db: sqlite3.Connection | None = None
        self._reader: HistoryReader | None = None
        self._pending: collections.deque[NewRecord] = collections.deque()
        self._error: str | None = None
        self._next_try = -math.inf
        self._throttle = LogThrottle(60.0)
        self._warned = LogThrottle(86_400.0)
        self.lost = 0
        self.replaced = 0
        self.failures = 0
        self._used: int | None = None
        self._warning: str | None = None

    # --- the connection ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            db = hdb.connect(self.path, readonly=False)
            try:
                with hdb.errors(self.path):
                    rollup.ensure(db)
            except HistoryError:
                db.close()
                raise
            self._db = db
            self._reader = HistoryReader(self._db, self.path)
        return self._db

    @property
    def reader(self) -> HistoryReader:
        """Reads through the writer's own connection (sees what it wrote)."""
        self._open()
        assert self._reader is not None
        return self._reader

    def close(self) -> None:
        if self._pending:
            self.retry(force=True)
        if self._pending:
            log.error(
                "history %s: exiting with %d records not stored (%s); the next start "
                "derives them again from the meters' counters",
                self.path,
                len(self._pending),
                self._error,
            )
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.warning("history %s: close failed (%s)", self.path, exc)
            self._db = None

    # --- records -------------------------------------------------------------------------

    def put(self, records: Sequence[NewRecord]) -> None:
        """Store, or hold in memory until the disk takes them (see the module's doc)."""
        self._pending.extend(records)
        over = len(self._pending) - self.max_pending
        if over > 0:
            for _ in range(over):
                self._pending.popleft()
            self.lost += over
            log.error(
                "history %s: %d records dropped from memory (%d held, the disk refuses "
                "writes: %s); they are published but not in the history",
                self.path,
                over,
                len(self._pending),
                self._error,
            )
        self.retry()

    def held(self) -> int:
        """Records waiting in memory: the core's snapshot must not claim them."""
        return len(self._pending)

    def retry(self, *, force: bool = False) -> bool:
        """Store what waits, if a try is due; True when nothing waits."""
        if not self._pending:
            return True
        if self._error is not None and not force and time.monotonic() < self._next_try:
            return False
        try:
            db = self._open()
            with hdb.transaction(db, self.path):
                for r in self._pending:
                    self._insert(db, r)
        except HistoryError as exc:
            self._failed(exc)
            return False
        n = len(self._pending)
        self._pending.clear()
        if self._error is not None:
            log.warning("history %s writable again: stored the %d records held", self.path, n)
            self._error = None
        return True

    def _failed(self, exc: HistoryError) -> None:
        self.failures += 1
        self._next_try = time.monotonic() + RETRY_S
        self._error = exc.reason
        if (n := self._throttle.due(exc.reason)) is not None:
            log.error(
                "cannot write the history %s: %s; %d records held in memory, stored when "
                "the disk takes writes%s",
                self.path,
                exc.reason,
                len(self._pending),
                repeats(n),
            )

    def _insert(self, db: sqlite3.Connection, r: NewRecord) -> None:
        key = (r.kind, r.device, r.ts, r.rev, r.sub)
        row = (*key, r.topic, r.payload, time.time_ns() // 1_000_000)
        cur = db.execute(
            "INSERT OR IGNORE INTO records (kind, device, ts, rev, sub, topic, payload, "
            "stored_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        if cur.rowcount == 1:
            if r.kind == rollup.ENERGY:
                rollup.add(db, r.device, r.ts, r.payload, again=False)
            return
        old = db.execute(
            "SELECT payload FROM records WHERE kind = ? AND device = ? AND ts = ? AND rev = ? "
            "AND sub = ?",
            key,
        ).fetchone()
        if old is not None and bytes(old[0]) == r.payload:
            return  # the same record again: stored once
        # Another record under the same key: the core emitted it again after a restart
        # from an older snapshot. The newest is what was sent last (and what InfluxDB
        # keeps); a new row id makes the ledger cover its period again.
        db.execute(
            "DELETE FROM records WHERE kind = ? AND device = ? AND ts = ? AND rev = ? AND sub = ?",
            key,
        )
        db.execute(
            "INSERT INTO records (kind, device, ts, rev, sub, topic, payload, stored_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        if r.kind == rollup.ENERGY:
            rollup.add(db, r.device, r.ts, r.payload, again=True)
        self.replaced += 1
        if (n := self._throttle.due("replaced")) is not None:
            log.warning(
                "history: the %s record of %s at %d was emitted again with other numbers "
                "(the core continued from an older snapshot); the newer replaces it%s",
                r.kind,
                r.device or "the site",
                r.ts,
                repeats(n),
            )

    # --- the ledger's entries --------------------------------------------------------------

    def add_entry(self, entry: Mapping[str, Any], raw: bytes, entry_hash: str, upto: int) -> None:
        """Store an entry (fsync'd) before it is published: HistoryError if it cannot be."""
        db = self._open()
        with hdb.transaction(db, self.path):
            db.execute(
                "INSERT INTO ledger (seq, period_start, period_end, entry, hash, upto, queued, "
                "stored_ms) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    int(entry["seq"]),
                    int(entry["period_start"]),
                    int(entry["period_end"]),
                    raw,
                    entry_hash,
                    upto,
                    time.time_ns() // 1_000_000,
                ),
            )

    def mark_queued(self, seqs: Sequence[int]) -> None:
        """The entries are in the outbox; never fsync'd (lost, they are queued again)."""
        db = self._open()
        with hdb.errors(self.path):
            db.executemany("UPDATE ledger SET queued = 1 WHERE seq = ?", [(s,) for s in seqs])

    # --- size and age ----------------------------------------------------------------------

    def prune(self, now_ms: int) -> int:
        """Drop what is older than the retention, then the oldest days while over the size
        bound (:func:`agent.history.bound.prune`); returns the new horizon (records at or
        before it are gone)."""
        limits = bound.Limits(self.max_bytes, self.retention_months)
        horizon, used = bound.prune(self._open(), self.reader, self.path, limits, now_ms)
        self._used = used
        self._warning = bound.size_warning(self.reader, self.path, limits, now_ms, used)
        if self._warning is not None and (n := self._warned.due("size")) is not None:
            log.warning("%s%s", self._warning, repeats(n))
        return horizon

    def stats(self) -> HistoryStatus:
        oldest = pruned = None
        if self._db is not None:
            try:
                oldest = self.reader.oldest_ts()
                pruned = self.reader.pruned_before()
            except HistoryError:
                pass  # the failure is the error below, or shows at the next write
        return HistoryStatus(
            ok=self._error is None,
            error=self._error,
            path=str(self.path),
            used_bytes=self._used,
            max_bytes=self.max_bytes,
            oldest_ts=oldest,
            pruned_before=pruned,
            pending=len(self._pending),
            lost=self.lost,
            warning=self._warning,
        )
