"""The storage guard: what the disk cannot take is held in memory, published, and reported.

A full or failing ``state_dir`` must not silence a gateway whose broker is up,
must not look healthy, and must not lose what it could still send. The guard
stands between the runtime and the disk outbox and keeps the outbox contract
(``put``, ``take``, ``accept``, ``reject``) whole:

* A write the disk refuses goes to a **memory lane** (a :class:`MemoryOutbox`
  with negative ids) instead of failing. The pump takes from both: the disk's
  messages first (they are older), then the lane's, live first in each. The
  broker's acknowledgement forgets a lane message as it deletes a disk one.
* While the lane holds anything, every new message joins it, behind the older
  ones: the disk never gets a message ahead of one still in memory, so records
  keep their order. The disk is tried again at most once per ``retry_s``.
  When it takes writes again the lane moves to it, oldest first, in chunks
  (one transaction each, records fsync'd); messages in flight at that moment
  are moved too and marked in flight on the disk, so their acknowledgement
  deletes the disk copy and nothing is sent twice.
* Memory is bounded (``memory_bytes``, counted as ``buffer.max_mb`` counts:
  payload, topic and 64 bytes a message). Full, it drops measurements first,
  oldest first, then records, each record with an error in the log; every
  drop is counted in ``lost``.
* A failed delete (``accept``) keeps the acknowledged rows in flight on the
  disk, so they are not sent again, and is retried with the writes.
* A disk outbox that cannot even be opened (a restart on a full disk: SQLite
  cannot create its shared-memory file) is opened later, with the first
  write that succeeds (:meth:`StorageGuard.opening`); until then everything
  goes through memory.
* :meth:`StorageGuard.health` says all of it for ``/api/state``, ``/metrics``,
  the page, ``status`` and systemd. The log says it once when it begins, once a
  minute (or when the cause changes) while it lasts, and once when it ends,
  naming the directory and its free space.

What the runtime must add: the core's snapshot may not be written while a
record exists only here (:meth:`StorageGuard.records_held`): see
``Agent.snapshot``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from agent.runtime.outbox.base import (
    LOST_COUNTER,
    RECORDS,
    Entry,
    Item,
    Kind,
    Outbox,
    OutboxError,
    Stats,
    is_fresh,
)
from agent.runtime.outbox.memory import MemoryOutbox
from agent.status import StorageStatus

log = logging.getLogger("agent.runtime.outbox")

#: What the memory lane may hold, counted as ``buffer.max_mb`` counts: ~37,000
#: measurements of 12 quantities (450 B each: 50 minutes of 12 meters polled every
#: second), or ~60,000 energy records (3.5 days of those 12 meters). Python's
#: objects around each message make it about 1.6 times this in process memory
#: (measured: 730 B for a measurement counted as 450 B), ~27 MB when full.
LANE_MAX_BYTES = 16 * 2**20
#: A failing disk is tried again at most this often.
RETRY_S = 1.0
#: Messages moved from memory to the disk per transaction when it has room again.
MOVE_CHUNK = 500
#: A fault that lasts is said again this often (and whenever its cause changes).
LOG_EVERY_S = 60.0


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def free_bytes(directory: Path | None) -> int | None:
    if directory is None:
        return None
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


class DiskFault:
    """Whether the disk refuses writes: since when, when to try it again, when to say it again.

    The guard's memory lane is what is done about a fault; this is its clock and its
    count, apart so the guard reads as the outbox contract it keeps. A fault is said
    when it begins, when its cause changes, once a minute while it lasts, and at its end.
    """

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self.error: OutboxError | None = None
        #: When the fault began (epoch ms), None while the disk takes writes.
        self.since_ms: int | None = None
        self.next_try = -math.inf
        self.logged_at = -math.inf
        #: Messages moved from memory to the disk since the fault began (said at its end).
        self.moved = 0
        self.failures = 0

    def due(self) -> bool:
        """The disk may be written now: it takes writes, or a try is due."""
        return self.error is None or time.monotonic() >= self.next_try

    def failed(self, exc: OutboxError, say: Callable[[bool], None]) -> None:
        """Count a refusal and wait ``retry_s``; ``say(began)`` when it is to be logged."""
        self.failures += 1
        now = time.monotonic()
        self.next_try = now + self.retry_s
        began = self.error is None
        if began:
            self.since_ms = time.time_ns() // 1_000_000
            self.moved = 0
        changed = self.error is None or self.error.reason != exc.reason
        self.error = exc
        if changed or now - self.logged_at >= LOG_EVERY_S:
            self.logged_at = now
            say(began)

    def recovered(self, directory: Path | None) -> None:
        """The disk took a write: end the fault, and say so if there was one."""
        if self.error is None:
            return
        took = (time.time_ns() // 1_000_000 - (self.since_ms or 0)) / 1000
        log.warning(
            "outbox in %s writable again after %.0f s: stored the %d messages held in memory",
            directory or "memory",
            took,
            self.moved,
        )
        self.error = None
        self.since_ms = None
        self.logged_at = -math.inf


def _say_fault(h: StorageStatus, began: bool, directory: Path | None) -> None:
    """A fault's error line, from what the guard's health says: the page's words in the log."""
    lost = h.lost_total
    log.error(
        "%s the outbox in %s (%s free): %s; %s held in memory (%d records), "
        "sent from there while the broker is up and stored when the disk has room; at "
        "most %s are held, measurements go first%s",
        "cannot write" if began else "still cannot write",
        directory or "the outbox",
        human_bytes(h.free_bytes),
        h.error,
        f"{h.unstored} message{'' if h.unstored == 1 else 's'}",
        h.unstored_records,
        human_bytes(h.memory_max_bytes),
        f"; {lost} lost so far" if lost else "",
    )


def _say_lost(left: Mapping[Kind, int], directory: Path | None, error: OutboxError | None) -> None:
    """The one error line of an exit that loses messages, with the number of each kind."""
    log.error(
        "exiting with %d messages neither stored nor acknowledged by the broker: "
        "%s; they are lost (%s: %s, %s free)",
        sum(left.values()),
        ", ".join(f"{k.name.lower()} {n}" for k, n in left.items() if n),
        directory or "the outbox",
        error.reason if error is not None else "not stored",
        human_bytes(free_bytes(directory)),
    )


class StorageGuard:
    """An :class:`Outbox` over ``disk`` that never fails a write (see the module's doc)."""

    def __init__(
        self,
        disk: Outbox | None,
        directory: Path | None,
        *,
        memory_bytes: int = LANE_MAX_BYTES,
        retry_s: float = RETRY_S,
        open_disk: Callable[[], Outbox] | None = None,
    ) -> None:
        if disk is None and open_disk is None:
            raise ValueError("a StorageGuard needs a disk outbox or a way to open one")
        self._disk = disk
        self._open_disk = open_disk
        self.directory = directory
        self.retry_s = retry_s
        self.lane = MemoryOutbox(
            memory_bytes, negative_ids=True, name="memory lane", counter=LOST_COUNTER
        )
        #: Marks (measurement seqs) not yet on the disk: stored with the next write.
        self._marks: dict[str, int] = {}
        #: Lane id -> disk id, for messages moved to the disk while in flight.
        self._moved: dict[int, int] = {}
        #: Disk ids acknowledged by the broker whose delete failed (in flight on disk).
        self._unaccepted: list[int] = []
        #: The disk's refusals: when to try again, when to say so (see DiskFault).
        self._fault = DiskFault(retry_s)
        #: What the exit lost, per kind (see :meth:`close`).
        self.lost_at_close = dict.fromkeys(Kind, 0)

    @classmethod
    def opening(
        cls,
        open_disk: Callable[[], Outbox],
        directory: Path | None,
        *,
        memory_bytes: int = LANE_MAX_BYTES,
        retry_s: float = RETRY_S,
    ) -> StorageGuard:
        """A guard over the outbox ``open_disk`` opens now, or later if it cannot now."""
        guard = cls(
            None, directory, memory_bytes=memory_bytes, retry_s=retry_s, open_disk=open_disk
        )
        try:
            guard._opened()
        except OutboxError as exc:
            guard._failed(exc)
        return guard

    def _opened(self) -> Outbox:
        """The disk outbox, opened now if it was not yet (OutboxError if it cannot be)."""
        if self._disk is None:
            assert self._open_disk is not None
            self._disk = self._open_disk()
        return self._disk

    # --- writes ---------------------------------------------------------------------------

    def put(
        self, kind: Kind, topic: str, payload: bytes, *, retain: bool = False, created_ms: int = 0
    ) -> int:
        return self.put_many([Item(kind, topic, payload, retain, created_ms)])[0]

    def put_many(self, items: list[Item], marks: Mapping[str, int] | None = None) -> list[int]:
        """On the disk if it takes them (after anything held in memory), else in memory."""
        self._marks.update(marks or {})
        if self._fault.due():
            try:
                self._store_held()
                self._delete_acked()
                ids = self._opened().put_many(items, self._marks)
            except OutboxError as exc:
                ids = self.lane.put_many(items)
                self._failed(exc)  # after: its log line counts them
                return ids
            self._marks.clear()
            self._recovered()
            return ids
        return self.lane.put_many(items)

    def retry(self, *, force: bool = False) -> bool:
        """Try the disk again if a try is due (the housekeeping's tick) or ``force``d
        (the exit); True if it takes writes."""
        if self._fault.error is not None and (force or self._fault.due()):
            self._fault.next_try = -math.inf
            self.put_many([])
        return self._fault.error is None

    def _store_held(self) -> None:
        """Move the lane to the disk, oldest first; what moved stays moved if a chunk fails."""
        disk = self._opened()
        while chunk := self.lane.oldest(MOVE_CHUNK):
            items = [Item(e.kind, e.topic, e.payload, e.retain, e.created_ms) for e, _ in chunk]
            disk_ids = disk.put_many(items, self._marks)
            self._marks.clear()
            self.lane.accept([e.id for e, _ in chunk])
            taken = []
            for (entry, in_flight), disk_id in zip(chunk, disk_ids, strict=True):
                if in_flight:
                    self._moved[entry.id] = disk_id
                    taken.append(disk_id)
            disk.mark_taken(taken)
            self._fault.moved += len(chunk)

    def _delete_acked(self) -> None:
        if self._unaccepted:
            self._opened().accept(self._unaccepted)
            self._unaccepted = []

    def _failed(self, exc: OutboxError) -> None:
        self._fault.failed(exc, lambda began: _say_fault(self.health(), began, self.directory))

    def _recovered(self) -> None:
        self._fault.recovered(self.directory)

    # --- the pump's side ------------------------------------------------------------------

    def take(self, limit: int, fresh_from_ms: int | None = None) -> list[Entry]:
        """The disk's batch, then the lane's, live first; at most ``limit``."""
        disk: list[Entry] = []
        try:
            if self._disk is not None:
                disk = self._disk.take(limit, fresh_from_ms)
        except OutboxError as exc:  # a read failed: the lane still goes out
            self._failed(exc)
        if not self.lane.held():
            return disk
        lane = self.lane.take(limit, fresh_from_ms)
        both = disk + lane  # disk ids are older than every lane id
        first = [e for e in both if is_fresh(e.kind, e.created_ms, fresh_from_ms)]
        stale = [e for e in both if not is_fresh(e.kind, e.created_ms, fresh_from_ms)]
        ordered = first + stale
        self.reject([e.id for e in ordered[limit:]])
        return ordered[:limit]

    def accept(self, ids: list[int]) -> None:
        """Forget acknowledged lane messages, delete acknowledged disk ones (later, if the
        disk refuses the delete now: they stay in flight, never sent again)."""
        lane_ids = []
        for i in ids:
            disk_id = i if i > 0 else self._moved.pop(i, None)
            if disk_id is None:
                lane_ids.append(i)
            else:
                self._unaccepted.append(disk_id)
        self.lane.accept(lane_ids)
        if self._fault.due():
            try:
                self._delete_acked()
            except OutboxError as exc:
                self._failed(exc)

    def reject(self, ids: list[int]) -> None:
        lane_ids, disk_ids = [], []
        for i in ids:
            disk_id = i if i > 0 else self._moved.pop(i, None)
            if disk_id is None:
                lane_ids.append(i)
            else:
                disk_ids.append(disk_id)
        self.lane.reject(lane_ids)
        if self._disk is not None:  # disk ids exist only once it is open
            self._disk.reject(disk_ids)

    def mark_taken(self, ids: list[int]) -> None:
        self.lane.mark_taken([i for i in ids if i < 0])
        if self._disk is not None:
            self._disk.mark_taken([i for i in ids if i > 0])

    # --- what it says ---------------------------------------------------------------------

    def marks(self) -> dict[str, int]:
        """The stored marks and those waiting for the disk; only these without a disk."""
        stored = {}
        try:
            if self._disk is not None:
                stored = self._disk.marks()
        except OutboxError as exc:
            self._failed(exc)
        return {**stored, **self._marks}

    def records_held(self) -> int:
        """Records that exist only in memory: neither durable nor acknowledged."""
        return self.lane.held(RECORDS)

    def stats(self) -> Stats:
        """Both stores as one: what waits to be sent (acknowledged rows not yet deleted
        are not waiting); ``dropped`` is the disk's, the lane's drops are in ``lost``."""
        disk = Stats(0, 0, None, dict.fromkeys(Kind, 0))
        try:
            if self._disk is not None:
                disk = self._disk.stats()
        except OutboxError as exc:
            self._failed(exc)
        lane = self.lane.stats()
        oldest = disk.oldest_ms if disk.oldest_ms is not None else lane.oldest_ms
        depth = max(0, disk.depth - len(self._unaccepted)) + lane.depth
        return Stats(depth, disk.bytes + lane.bytes, oldest, disk.dropped)

    def health(self) -> StorageStatus:
        lane = self.lane.stats()
        fault = self._fault
        return StorageStatus(
            ok=fault.error is None,
            error=None if fault.error is None else fault.error.reason,
            since_ms=fault.since_ms,
            directory=None if self.directory is None else str(self.directory),
            free_bytes=free_bytes(self.directory),
            unstored=lane.depth,
            unstored_records=self.lane.held(RECORDS),
            unstored_bytes=lane.bytes,
            memory_max_bytes=self.lane.max_bytes,
            failures=fault.failures,
            lost={k.name.lower(): lane.dropped[k] + self.lost_at_close[k] for k in Kind},
        )

    def close(self) -> None:
        """Store what memory holds (one last try, due or not), then close the disk.

        Never raises. What can be neither stored nor was acknowledged is lost: counted,
        and said in one error line with the number of each kind.
        """
        try:
            self._store_held()
            self._delete_acked()
            if self._marks:
                self._opened().put_many([], self._marks)
        except OutboxError as exc:
            self._failed(exc)
        else:
            self._recovered()
        left = {k: self.lane.held([k]) for k in Kind}
        if any(left.values()):
            for k, n in left.items():
                self.lost_at_close[k] += n
            _say_lost(left, self.directory, self._fault.error)
        if self._disk is not None:
            self._disk.close()
