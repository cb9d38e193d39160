"""The outbox's contract in memory: the tests' outbox, and the lane of what the disk refused.

One queue per kind, in id order: dropping the oldest measurement, finding the
next record or counting the records held costs the same with ten messages or
thirty thousand. Only the freshness of measurements needs a scan, and only of
the measurements (see :meth:`MemoryOutbox.take`).
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from operator import itemgetter

from agent.runtime.outbox.base import (
    DROP_ORDER,
    DROPPED_COUNTER,
    RECORDS,
    Entry,
    Item,
    Kind,
    Stats,
    log_dropped,
)

_SEQ = itemgetter(0)


class MemoryOutbox:
    """Messages in memory, bounded by ``max_bytes`` as the SQLite outbox is.

    ``negative_ids`` numbers the entries -1, -2, ...: the storage guard's lane
    (:mod:`agent.runtime.outbox.guard`) hands them out beside the disk's ids, which are
    positive, and tells the two apart by the sign. ``name`` and ``counter`` are what
    a drop's log line calls the store and the metric that counts the drops.
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        negative_ids: bool = False,
        name: str = "outbox",
        counter: str = DROPPED_COUNTER,
    ) -> None:
        self.max_bytes = max_bytes
        self.name = name
        self.counter = counter
        self._sign = -1 if negative_ids else 1
        #: kind -> {seq: entry}, oldest first; seq = id * sign, always positive.
        self._queues: dict[Kind, OrderedDict[int, Entry]] = {k: OrderedDict() for k in Kind}
        self._inflight: set[int] = set()
        self._next = 1
        self._bytes = 0
        self._dropped = dict.fromkeys(Kind, 0)
        self._marks: dict[str, int] = {}
        self._lock = threading.Lock()

    def marks(self) -> dict[str, int]:
        with self._lock:
            return dict(self._marks)

    def put(
        self, kind: Kind, topic: str, payload: bytes, *, retain: bool = False, created_ms: int = 0
    ) -> int:
        return self.put_many([Item(kind, topic, payload, retain, created_ms)])[0]

    def put_many(self, items: list[Item], marks: Mapping[str, int] | None = None) -> list[int]:
        ids = []
        with self._lock:
            self._marks.update(marks or {})
            for it in items:
                seq = self._next
                self._next += 1
                entry = Entry(
                    seq * self._sign, it.kind, it.topic, it.payload, it.retain, it.created_ms
                )
                self._make_room(entry.size)
                self._queues[it.kind][seq] = entry
                self._bytes += entry.size
                ids.append(entry.id)
        return ids

    def _make_room(self, need: int) -> None:
        for kind in DROP_ORDER:
            queue = self._queues[kind]
            n = 0
            while self._bytes + need > self.max_bytes:
                seq = next((s for s in queue if s not in self._inflight), None)
                if seq is None:
                    break
                self._bytes -= queue.pop(seq).size
                n += 1
            self._dropped[kind] += n
            log_dropped(self.name, kind, n, self.counter)
            if self._bytes + need <= self.max_bytes:
                return

    def _waiting(self, kind: Kind) -> Iterator[tuple[int, Entry]]:
        return ((s, e) for s, e in self._queues[kind].items() if s not in self._inflight)

    def take(self, limit: int, fresh_from_ms: int | None = None) -> list[Entry]:
        """Records and fresh measurements merged in id order, then the stale measurements.

        Finding the fresh measurements scans the measurement queue: a few milliseconds
        for thirty thousand, and only while a lane that large drains.
        """
        with self._lock:
            records = [self._waiting(k) for k in RECORDS]
            measurements = self._waiting(Kind.MEASUREMENT)
            if fresh_from_ms is None:
                chosen = list(islice(heapq.merge(*records, measurements, key=_SEQ), limit))
            else:
                fresh = ((s, e) for s, e in measurements if e.created_ms >= fresh_from_ms)
                chosen = list(islice(heapq.merge(*records, fresh, key=_SEQ), limit))
                if len(chosen) < limit:
                    stale = (
                        (s, e)
                        for s, e in self._waiting(Kind.MEASUREMENT)
                        if e.created_ms < fresh_from_ms
                    )
                    chosen += islice(stale, limit - len(chosen))
            self._inflight.update(s for s, _ in chosen)
            return [e for _, e in chosen]

    def _seqs(self, ids: Iterable[int]) -> list[int]:
        return [i * self._sign for i in ids]

    def accept(self, ids: list[int]) -> None:
        with self._lock:
            for seq in self._seqs(ids):
                self._inflight.discard(seq)
                for queue in self._queues.values():
                    entry = queue.pop(seq, None)
                    if entry is not None:
                        self._bytes -= entry.size
                        break

    def reject(self, ids: list[int]) -> None:
        with self._lock:
            self._inflight.difference_update(self._seqs(ids))

    def mark_taken(self, ids: list[int]) -> None:
        """In flight without a ``take``: published before they were stored here (the
        storage guard moves what its lane published to the disk); accepted or rejected
        like any taken message."""
        with self._lock:
            self._inflight.update(
                s for s in self._seqs(ids) if any(s in q for q in self._queues.values())
            )

    def stats(self) -> Stats:
        with self._lock:
            heads = [next(iter(q.items())) for q in self._queues.values() if q]
            oldest = min(heads, key=_SEQ)[1].created_ms if heads else None
            depth = sum(len(q) for q in self._queues.values())
            return Stats(depth, self._bytes, oldest, dict(self._dropped))

    # --- for the storage guard ----------------------------------------------------------

    def held(self, kinds: Iterable[Kind] = tuple(Kind)) -> int:
        """How many messages of ``kinds`` are here, in flight or waiting."""
        with self._lock:
            return sum(len(self._queues[k]) for k in kinds)

    def oldest(self, n: int) -> list[tuple[Entry, bool]]:
        """The ``n`` oldest entries of every kind in id order, each with "in flight"."""
        with self._lock:
            merged = heapq.merge(*(q.items() for q in self._queues.values()), key=_SEQ)
            return [(e, s in self._inflight) for s, e in islice(merged, n)]

    def close(self) -> None:
        return None
