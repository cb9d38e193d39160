"""Store-and-forward: every message is written here before it is published.

The outbox is a transaction, as Telegraf's buffer: ``take`` a batch (it is now
in flight and not taken again), then ``accept`` what the broker acknowledged
(deleted) or ``reject`` the batch (back to the queue, in its original order).
A crash between the two loses nothing: a batch that was neither accepted nor
rejected is still on disk and is sent again after a restart; the records'
idempotent keys make the duplicate harmless.

Live data first. After an outage the backlog is hours of measurements; a plant
engineer still wants to see the press that is running now. ``take`` therefore
hands out, in id order, every record (energy, intensity, status) and every
*fresh* measurement (created at or after ``fresh_from_ms``) before the stale
measurements of the backlog, which fill what the caller's rate leaves. Records
are never reordered among themselves, so energy stays in order per device and
the last retained status stays the last.

Bounded by size. When full, raw measurements go first (oldest first), then
intensity records; energy records, the authoritative ones, go last. A record
(intensity, status, energy) is never dropped silently: each drop is counted and
logged as an error. Two implementations share one contract test suite:
:class:`MemoryOutbox` (tests, and the lane below) and
:class:`SqliteOutbox` (WAL, survives ``kill -9`` and power loss).

A disk that refuses writes (full, failing) is the :class:`StorageGuard`'s: the
runtime's outbox is a guard over the SQLite one, which holds what the disk
refuses in a bounded memory lane, publishes it from there, stores it when the
disk has room again, and reports the fault (``guard.py``).
"""

from agent.runtime.outbox.base import (
    DROP_ORDER,
    OF_KIND,
    RECORDS,
    Entry,
    Item,
    Kind,
    Outbox,
    OutboxError,
    Stats,
    Sync,
    entry_size,
    item_of,
)
from agent.runtime.outbox.guard import LANE_MAX_BYTES, StorageGuard
from agent.runtime.outbox.memory import MemoryOutbox
from agent.runtime.outbox.sqlite import SqliteOutbox

__all__ = [
    "DROP_ORDER",
    "LANE_MAX_BYTES",
    "OF_KIND",
    "RECORDS",
    "Entry",
    "Item",
    "Kind",
    "MemoryOutbox",
    "Outbox",
    "OutboxError",
    "SqliteOutbox",
    "Stats",
    "StorageGuard",
    "Sync",
    "entry_size",
    "item_of",
]
