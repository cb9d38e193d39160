"""The history and the ledger inside `run`: records in, entries out, and what they say.

The agent hands every record it stores to :meth:`LedgerJob.add` (in the same
commit as the outbox), asks :meth:`LedgerJob.tick` once a second for entries to
publish, and may not snapshot the core while :meth:`LedgerJob.held` is not zero.
Sealing a period reads, hashes and signs every record in it (173 ms for an hour
of 50 meters here, seconds on a gateway's core): it runs on a worker thread, and
the records stored meanwhile wait in memory (counted in ``held``) until it is
done, so the history's connection has one user at a time and no poll waits.
The ledger runs when ``cryptography`` is importable and the gateway has a key
(``energy-agent keys init``); otherwise the history still runs and the ledger
is off, said once at start and in the page's status.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agent.config.models import AgentConfig
from agent.contract import Message, MessageKind, TopicRef, Topics, encode
from agent.history import HISTORY_FILE, History, HistoryError
from agent.history.db import NewRecord
from agent.history.writer import new_record
from agent.ledger import KEY_FILE, LedgerKeyError, crypto_missing
from agent.ledger.canonical import group_of
from agent.ledger.errors import no_key
from agent.runtime.outbox import Item, Kind
from agent.runtime.throttle import LogThrottle, repeats
from agent.status import LedgerStatus

#: The kinds of message the history keeps: every record the ledger seals.
HISTORY_KINDS = frozenset(k for k in MessageKind if group_of(k) is not None)

if TYPE_CHECKING:
    from agent.ledger.sealer import Sealed, Sealer

log = logging.getLogger(__name__)

#: The history is pruned (age, size) this often.
PRUNE_EVERY_S = 3600.0


class LedgerJob:
    def __init__(self, config: AgentConfig, topics: Topics) -> None:
        self.config = config
        self.topics = topics
        self.history = History(
            config.state_dir / HISTORY_FILE,
            max_bytes=int(config.history.max_mb * 2**20),
            retention_months=config.history.retention_months,
        )
        #: Once started with a key (the import needs cryptography).
        self.sealer: Sealer | None = None
        #: Seqs handed out as items and not yet marked queued in the history.
        self._unmarked: list[int] = []
        #: A seal runs on its worker thread: records stored meanwhile wait here.
        self._sealing = False
        self._waiting: list[NewRecord] = []
        #: Why the ledger is off ("" while it runs).
        self.off_reason = "not started"
        #: Why the last seal failed (None: it did not); an alarm rule watches it.
        self.seal_error: str | None = None
        self._pruned_at = -math.inf
        self._throttle = LogThrottle(60.0)

    # --- start and stop ------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Item]:
        """Begin or continue the chain; the entries to publish now (a crash may have left
        one stored and not queued). The ledger stays off, said once, if it cannot run."""
        self._prune(now_ms)
        key = self.config.state_dir / KEY_FILE
        if not key.exists() and importlib.util.find_spec("cryptography") is not None:
            # Nothing to sign with: `cryptography` (~6 MB resident) stays unloaded.
            return self._off(str(no_key(key)))
        missing = crypto_missing()
        if missing is not None:
            return self._off(missing)
        from agent.ledger.sealer import LedgerOff, Sealer

        sealer = Sealer(
            self.history,
            self.config.state_dir,
            site=self.config.site.id,
            gateway=self.config.gateway.id,
            period_s=self.config.ledger.period_s,
            delay_s=self.config.seal_delay_s,
        )
        try:
            sealed = sealer.start(now_ms)
        except (LedgerOff, HistoryError) as exc:
            return self._off(str(exc))
        self.sealer = sealer
        self.off_reason = ""
        assert sealer.key is not None and sealer.last is not None
        log.info(
            "ledger: periods of %d s, sealed %.0f s after their end, key %s, last entry %d",
            self.config.ledger.period_s,
            self.config.seal_delay_s,
            sealer.key.public.key_id,
            sealer.last.seq,
        )
        return self._items(sealed)

    def _off(self, reason: str) -> list[Item]:
        self.off_reason = reason
        log.warning("ledger off: %s (the history of records still runs)", reason)
        return []

    def close(self) -> None:
        self.history.close()

    # --- records in, entries out -----------------------------------------------------------

    def add(self, records: Sequence[Message]) -> None:
        """Records the agent stored in the outbox: into the history (see History.put)."""
        if not records:
            return
        site, gateway = self.topics.site, self.topics.gateway
        new = [
            new_record(
                TopicRef(m.kind, site, gateway, m.device), m.topic, m.payload, encode(m.payload)
            )
            for m in records
        ]
        if self._sealing:
            self._waiting += new
        else:
            self.history.put(new)

    def held(self) -> int:
        """Records only in memory: the history's (a full disk) and those waiting for a seal."""
        return self.history.held() + len(self._waiting)

    async def tick(self, now_ms: int, commit: Callable[[], None]) -> list[Item]:
        """Once a second: store what waits, prune now and then, seal what is due.

        ``commit`` stores the agent's pending records first: a period's cover must see
        all of them. Nothing is sealed while records wait in memory (a full disk). The
        seal itself runs on a worker thread (see the module's doc).
        """
        self.history.retry()
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self._prune(now_ms)
        sealer = self.sealer
        if sealer is None or not sealer.due(now_ms):
            return []
        commit()
        if self.history.held():
            return []
        self._sealing = True
        try:
            sealed = await asyncio.to_thread(sealer.seal, now_ms)
            self.seal_error = None
        except (HistoryError, LedgerKeyError) as exc:
            self.seal_error = str(exc)
            if (n := self._throttle.due(str(exc))) is not None:
                log.error(
                    "ledger: cannot seal now: %s; trying again each second%s", exc, repeats(n)
                )
            return []
        finally:
            self._sealing = False
            waiting, self._waiting = self._waiting, []
            if waiting:
                self.history.put(waiting)
        return self._items(sealed)

    def _prune(self, now_ms: int) -> None:
        self._pruned_at = time.monotonic()
        try:
            self.history.prune(now_ms)
        except HistoryError as exc:
            if (n := self._throttle.due(str(exc))) is not None:
                log.error("history: cannot prune: %s%s", exc, repeats(n))

    def _items(self, sealed: Sequence[Sealed]) -> list[Item]:
        topic = self.topics.topic(MessageKind.LEDGER)
        self._unmarked += [s.seq for s in sealed]
        return [Item(Kind.LEDGER, topic, s.payload, created_ms=s.sealed_ms) for s in sealed]

    def queued(self) -> None:
        """The entries handed out are in the outbox (or its memory lane) now."""
        seqs, self._unmarked = self._unmarked, []
        if not seqs:
            return
        try:
            self.history.mark_queued(seqs)
        except HistoryError as exc:  # queued again after a restart: the same bytes
            if (n := self._throttle.due(str(exc))) is not None:
                log.warning("history: cannot mark entries queued: %s%s", exc, repeats(n))

    # --- what it says ----------------------------------------------------------------------

    def status(self) -> LedgerStatus:
        sealer = self.sealer
        last = sealer.last if sealer is not None else None
        key = sealer.key if sealer is not None else None
        return LedgerStatus(
            on=sealer is not None,
            reason=self.off_reason or None,
            seq=None if last is None else last.seq,
            sealed_through=None if last is None else last.period_end,
            period_s=self.config.ledger.period_s,
            key_id=None if key is None else key.public.key_id,
            history=self.history.stats(),
            error=self.seal_error,
        )
