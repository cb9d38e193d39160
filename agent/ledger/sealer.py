"""Sealing the ledger on the gateway: one signed entry per closed period (docs/ledger.md).

The entry for period P = [start, end) is made at ``end + delay`` (the delay lets
late meters and the site hold publish P's records first) and covers P's
records as the history holds them then. A record stored later for an older
period (a meter back from an outage closing its gap late, a revision of a site
record, a record the core emitted again after a restart) makes the next entry
cover that old period again, in full: the newest cover of a period always
describes exactly what the history, and the database, should hold for it.
Closed entries never change.

Order of writes, for crashes: an entry is stored in the history (fsync'd)
before it goes to the outbox, and marked queued after; an entry found stored
but not queued at the next start is queued again (the same bytes: a duplicate
is harmless). So a kill -9 at any point leaves the chain without a gap and
without two entries of one seq.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.contract import MessageKind, TopicRef
from agent.history.reader import LedgerRow
from agent.history.writer import History
from agent.ledger import entry as le
from agent.ledger import jcs, keys
from agent.ledger.canonical import Digest, Group, Line, digest, group_of, lines_of, period_of

log = logging.getLogger(__name__)

#: Entries made per call at most: a gateway back after a long stop catches up over a
#: few seconds instead of stalling its event loop.
MAX_PER_CALL = 100


class LedgerOff(Exception):
    """The ledger cannot run (no key, a key that does not fit the chain); says why and how."""


@dataclass(frozen=True)
class Sealed:
    seq: int
    payload: bytes
    sealed_ms: int


def covers_of(
    history: History, site: str, gateway: str, units: list[tuple[int, int]]
) -> list[dict[str, Any]]:
    """The cover of each period: its records' two digests, as the history holds them now,
    hashed from the bytes that were published."""
    out = []
    for start, end in units:
        lines: dict[Group, list[Line]] = {Group.ENERGY: [], Group.SITE: []}
        for r in history.reader.between(start, end):
            kind = MessageKind(r.kind)
            group = group_of(kind)
            if group is None:
                continue
            ref = TopicRef(kind, site, gateway, r.device or None)
            lines[group] += lines_of(ref, json.loads(r.payload))
        out.append(cover_json(start, end, digest(lines[Group.ENERGY]), digest(lines[Group.SITE])))
    return out


def cover_json(start: int, end: int, energy: Digest, site: Digest) -> dict[str, Any]:
    return {"start": start, "end": end, "energy": energy.as_json(), "site": site.as_json()}


class Sealer:
    def __init__(
        self,
        history: History,
        state_dir: Path,
        *,
        site: str,
        gateway: str,
        period_s: int,
        delay_s: float,
    ) -> None:
        self.history = history
        self.state_dir = state_dir
        self.site = site
        self.gateway = gateway
        self.period_ms = period_s * 1000
        self.delay_ms = int(delay_s * 1000)
        self.key: keys.SigningKey | None = None
        self._certs: list[dict[str, Any]] = []
        self._not_before = 0
        self.last: LedgerRow | None = None

    # --- start ---------------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Sealed]:
        """Load the key, continue the chain (or begin it); the entries to queue now
        (LedgerOff: the ledger cannot run, and why)."""
        try:
            self.key = keys.load(self.state_dir / keys.KEY_FILE)
        except keys.LedgerKeyError as exc:
            raise LedgerOff(str(exc)) from None
        reader = self.history.reader
        self.last = reader.last_entry()
        if self.last is None:
            sealed = self._genesis(now_ms)
        else:
            self._continue_from(self.last.entry)
            sealed = []
        # Seal nothing before the core has had the delay to re-derive the intervals of a
        # downtime from the meters' counters: they then land in their own periods' entries.
        self._not_before = now_ms + self.delay_ms
        queued = [Sealed(r.seq, r.raw, int(r.entry["sealed_ms"])) for r in reader.unqueued()]
        return queued + [s for s in sealed if s.seq not in {q.seq for q in queued}]

    def _continue_from(self, last: Mapping[str, Any]) -> None:
        assert self.key is not None
        announced = last.get("next_key")
        expected = announced["key_id"] if announced else last["key_id"]
        if announced and self.key.public.key_id != expected:
            nxt = keys.pending(self.state_dir)
            if nxt is not None and nxt.public.key_id == expected:
                keys.promote(self.state_dir, nxt)  # a crash came between the two
                self.key = nxt
        self._certs = le.certs_after(last)
        if self.key.public.key_id != expected:
            log.warning(
                "ledger: %s holds key %s, but the chain's next entry is expected from key %s "
                "(the key was replaced, not rotated); the chain continues with the new key, "
                "which verifiers must trust explicitly (energy-agent keys export)",
                self.state_dir / keys.KEY_FILE,
                self.key.public.key_id,
                expected,
            )
            self._certs = []

    def _genesis(self, now_ms: int) -> list[Sealed]:
        first = now_ms // self.period_ms * self.period_ms
        upto = self.history.reader.max_id()
        return [self._store(0, first, first, [], le.GENESIS_PREV, upto=upto, now_ms=now_ms)]

    # --- sealing -------------------------------------------------------------------------

    def next_end(self) -> int | None:
        """The end of the next period to seal: the first period boundary after the last
        entry's end (one period on; shorter once, after ``period_s`` was changed)."""
        if self.last is None:
            return None
        return (self.last.period_end // self.period_ms + 1) * self.period_ms

    def due(self, now_ms: int) -> bool:
        end = self.next_end()
        return end is not None and now_ms >= max(end + self.delay_ms, self._not_before)

    def seal(self, now_ms: int) -> list[Sealed]:
        """Every period due now (at most MAX_PER_CALL). The caller stores the outbox's
        pending records first: a cover describes the history as it is."""
        out: list[Sealed] = []
        while len(out) < MAX_PER_CALL and self.due(now_ms):
            last = self.last
            end = self.next_end()
            assert last is not None and end is not None
            start = last.period_end
            reader = self.history.reader
            late = sorted({self._unit_of(ts) for ts in reader.late_ts(last.upto, start)})
            upto = reader.max_id()
            covers = covers_of(self.history, self.site, self.gateway, [*late, (start, end)])
            out.append(
                self._store(last.seq + 1, start, end, covers, last.hash, upto=upto, now_ms=now_ms)
            )
        return out

    def _unit_of(self, ts: int) -> tuple[int, int]:
        """The period a late record belongs to: its entry's, or (before the chain) the
        aligned period of ``period_s``."""
        unit = self.history.reader.unit_of(ts)
        if unit is not None:
            return unit
        start = period_of(ts, self.period_ms)
        return start, start + self.period_ms

    def _store(
        self,
        seq: int,
        start: int,
        end: int,
        covers: list[dict[str, Any]],
        prev: str,
        *,
        upto: int,
        now_ms: int,
    ) -> Sealed:
        assert self.key is not None
        nxt = keys.pending(self.state_dir)
        next_key = None
        if nxt is not None and nxt.public.key_id != self.key.public.key_id:
            next_key = le.make_cert(self.key, self.site, self.gateway, seq, nxt.public)
        entry = le.build(
            site=self.site,
            gateway=self.gateway,
            seq=seq,
            period_start=start,
            period_end=end,
            covers=covers,
            prev=prev,
            key=self.key,
            certs=self._certs,
            sealed_ms=now_ms,
            next_key=next_key,
        )
        raw = jcs.canonical(entry)
        h = le.entry_hash(entry)
        self.history.add_entry(entry, raw, h, upto)
        self.last = LedgerRow(seq, start, end, entry, raw, h, upto, False)
        self._certs = le.certs_after(entry)
        if nxt is not None and next_key is not None:
            keys.promote(self.state_dir, nxt)
            log.info(
                "ledger: entry %d announced key %s, which signs from now on", seq, nxt.public.key_id
            )
            self.key = nxt
        return Sealed(seq, raw, now_ms)
