"""The agent's data path from a poll's messages to the outbox: one transaction per tick.

Apart from the agent's wiring (:mod:`agent.runtime.agent`) because it is one rule
with its own state (what waits for the next transaction, which devices' seq moved,
the tick's timer), and the order inside it is what a restart after ``kill -9``
relies on: the outbox (with its marks) first, then the history, both before any
snapshot (see :mod:`agent.runtime.snapshots`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from agent.contract.kinds import Message, MessageKind
from agent.core.site import SiteCore
from agent.runtime.ledger import HISTORY_KINDS, LedgerJob
from agent.runtime.outbox import Item, StorageGuard, item_of
from agent.runtime.snapshots import SEQ_MARK, CoreSnapshots

#: Messages that a restart from an older snapshot would make again, differently.
_CLOSING = (MessageKind.ENERGY, MessageKind.EVENTS)


class TickCommit:
    """Stores what the polls of a tick produced in one outbox transaction (see :meth:`commit`)."""

    def __init__(
        self,
        site: SiteCore,
        outbox: StorageGuard,
        snapshots: CoreSnapshots,
        ledger: LedgerJob,
        *,
        wake: asyncio.Event,
        tick_s: float,
        seen: Callable[[Sequence[Message]], None],
    ) -> None:
        self.site = site
        self.outbox = outbox
        self.snapshots = snapshots
        self.ledger = ledger
        #: The pump's wake-up: set once what it may send is stored.
        self.wake = wake
        self.tick_s = tick_s
        #: Sees every message handed to :meth:`store` (the alarms' coverage).
        self._seen = seen
        #: Messages waiting for the next outbox transaction (see ``commit``).
        self._pending: list[Item] = []
        #: The records among them, for the history.
        self._records: list[Message] = []
        #: Devices whose measurement seq moved since the last commit.
        self.seq_moved: set[str] = set()
        self._commit_at: asyncio.TimerHandle | None = None

    def store(self, messages: list[Message]) -> None:
        """Queue ``messages`` for the next tick's transaction (now, outside an event loop)."""
        if not messages:
            return
        items = []
        for m in messages:
            if not self.snapshots.stored.keep(m):
                continue  # an interval stored before a kill -9, derived again
            # An event moved a counter's reference (a rebaseline) like a closed interval.
            self.snapshots.closed_since |= m.kind in _CLOSING
            if m.kind in HISTORY_KINDS:
                self._records.append(m)
            items.append(item_of(m))
        self._seen(messages)
        self._pending += items
        if self._commit_at is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the job (tests, tools): store now
                self.commit()
                return
            # On the next tick of a fixed clock, not a delay after the first message:
            # however the polls are spread, at most one commit per tick.
            tick = self.tick_s
            self._commit_at = loop.call_at((loop.time() // tick + 1) * tick, self.commit)

    def commit(self) -> None:
        """Store what the polls of the last tick produced, in one transaction.

        Group commit on a fixed tick (``buffer.tick_s``): with one transaction per
        poll, the outbox, the pump's and paho's wake-ups were most of what the
        agent added to a bare poller's CPU when polls were spread (50 meters on
        one bus: one every 20 ms). Nothing is published before it is stored (the
        pump reads only the outbox), unless the disk refuses it: then the guard
        holds it in memory and the pump publishes it from there. The tick adds at
        most ``tick_s`` to a message's way to the broker.
        """
        if self._commit_at is not None:
            self._commit_at.cancel()
            self._commit_at = None
        if not self._pending:
            return
        items, self._pending = self._pending, []
        records, self._records = self._records, []
        # The seq of each device's last measurement, in the same transaction: after
        # kill -9 the numbering continues from what was stored, not from the last
        # snapshot (which would repeat seq numbers with other values). A disk that
        # refuses them gets them with its next write (the guard keeps them).
        marks = {SEQ_MARK + d: self.site.by_id[d].seq for d in self.seq_moved}
        # The last interval of each kind and device, for the same reason (StoredIntervals).
        marks.update(self.snapshots.stored.marks(records))
        self.outbox.put_many(items, marks)
        # The history after the outbox, both before any snapshot (see agent.history).
        self.ledger.add(records)
        self.seq_moved.clear()
        self.wake.set()
