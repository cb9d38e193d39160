"""The outbox's vocabulary: kinds of message, entries, the contract every store keeps."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path
from typing import Protocol

from agent.contract.build import encode
from agent.contract.kinds import KINDS, Message, MessageKind

log = logging.getLogger("agent.runtime.outbox")


class OutboxError(Exception):
    """The outbox cannot store or delete (disk full, I/O error, damaged file).

    ``reason`` is SQLite's words without the path ("database or disk is full"): the
    storage guard says each cause once a minute, not each failed transaction.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Kind(IntEnum):
    """What a message is; decides what is dropped first when the outbox is full.

    One member per :class:`agent.contract.kinds.OutboxClass`, by name: the contract
    says which class each kind of message is (:data:`OF_KIND`)."""

    MEASUREMENT = 0
    INTENSITY = 1
    STATUS = 2
    ENERGY = 3
    #: A ledger entry (docs/ledger.md): dropped last, a missing one is a gap in the chain.
    LEDGER = 4


#: Drop order when full: first the cheapest to lose.
DROP_ORDER = (Kind.MEASUREMENT, Kind.INTENSITY, Kind.STATUS, Kind.ENERGY, Kind.LEDGER)


class Sync(Enum):
    """When a write transaction reaches the disk (fsync)."""

    NOW = "now"  #: before the commit returns
    SOON = "soon"  #: with the next fsync, at most ``sync_interval_s`` later
    NEVER = "never"  #: whenever the next fsync happens (a lost delete only re-sends)


#: The outbox kind of each of the contract's message kinds.
OF_KIND: Mapping[MessageKind, Kind] = {k: Kind[s.outbox.name] for k, s in KINDS.items()}

#: Kinds that are records: never reordered, and on disk (fsync) before ``put`` returns.
RECORDS = (Kind.INTENSITY, Kind.STATUS, Kind.ENERGY, Kind.LEDGER)


def entry_size(topic: str, payload: bytes) -> int:
    """What a message counts against ``buffer.max_mb``: its bytes plus the row's overhead."""
    return len(payload) + len(topic) + 64


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
        return entry_size(self.topic, self.payload)


@dataclass(frozen=True)
class Item:
    """A message to store: what ``put`` takes, several at once in ``put_many``."""

    kind: Kind
    topic: str
    payload: bytes
    retain: bool = False
    created_ms: int = 0


def item_of(message: Message) -> Item:
    """A built message as it is stored: its kind says its outbox kind and retain flag."""
    return Item(
        OF_KIND[message.kind],
        message.topic,
        encode(message.payload),
        retain=message.kind.spec.retained,
        created_ms=int(message.payload["ts"]),
    )


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

    def put_many(self, items: list[Item], marks: Mapping[str, int] | None = None) -> list[int]: ...

    def marks(self) -> dict[str, int]: ...

    def take(self, limit: int, fresh_from_ms: int | None = None) -> list[Entry]: ...

    def accept(self, ids: list[int]) -> None: ...

    def reject(self, ids: list[int]) -> None: ...

    def mark_taken(self, ids: list[int]) -> None: ...

    def stats(self) -> Stats: ...

    def close(self) -> None: ...


#: The metric that counts what a full outbox dropped (see agent.http.metrics).
DROPPED_COUNTER = "energy_agent_buffer_dropped_total"
#: The metric that counts what was neither stored nor sent (the storage guard's).
LOST_COUNTER = "energy_agent_messages_lost_total"


def log_dropped(where: str, kind: Kind, n: int, counter: str) -> None:
    """A record dropped for room is an error in the log, not only a counter."""
    if kind in RECORDS and n:
        log.error(
            "%s full: dropped %d %s record%s (%s counts them)",
            where,
            n,
            kind.name.lower(),
            "" if n == 1 else "s",
            counter,
        )


def is_fresh(kind: Kind, created_ms: int, fresh_from_ms: int | None) -> bool:
    return fresh_from_ms is None or kind is not Kind.MEASUREMENT or created_ms >= fresh_from_ms
