"""Verifying gateways' ledger entries at the bridge (docs/ledger.md, "At the bridge").

A ledger message is written to the database like any other (measurement
``ledger``) and acknowledged; then the writer hands it here, to a thread of its
own with a bounded queue, so verification never holds up the data path. After
``verify_after_s`` (the records of the period may be written by another bridge
of the group) an entry is checked:

1. its key: trusted for the gateway in ``ledger.trust``, directly or through the
   key certificates the entry carries (``signature_wrong``,
   ``key_rotation_invalid``), and its signature;
2. its chain link: ``prev`` against the previous entry, from this bridge's memory
   or from the ``ledger`` point another bridge wrote (``chain_broken``; not there
   after the retries: ``entry_missing``);
3. every cover: the gateway's ``energy`` points of the period read back from the
   database (:mod:`agent.store`) and hashed; a mismatch is read again up to
   ``retries`` times before it counts (``record_changed``, ``record_missing``,
   ``extra_record``). A period a newer entry covers again is that entry's to
   check. More records than the cover counts may be late records the next entry
   will cover: that verdict waits for an entry sealed after the check.

Only the energy hash is checked here: the database keeps one revision of a site
record, the ledger hashes every revision (``verify`` checks both from the
gateway's history or an export). The verdict is written to the ``ledger``
point of the entry's period (``verified``, ``records``, ``reason``) and counted
in ``/metrics``; a failing gateway is logged once an hour with the reason.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.bridge.deadletters import LogThrottle
from agent.bridge.lineproto import line
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.writer import WriteFailed
from agent.config.bridge import BridgeLedger
from agent.ledger import entry as le
from agent.ledger.canonical import Digest, Group, digest, lines_of_points
from agent.ledger.entry import Failure, Keyring, Reason
from agent.ledger.verify import compare
from agent.store import PointStore, StoreError

log = logging.getLogger(__name__)

#: Entries remembered per gateway for chain links and newer covers.
MEMORY = 512
#: Longest wait for a newer entry before "more records than covered" counts.
EXTRA_WAIT_S = 26 * 3600.0


@dataclass(order=True)
class _Job:
    due: float
    order: int
    entry: dict[str, Any] = field(compare=False)
    attempts: int = field(default=0, compare=False)
    #: Set once more records than covered were found: wait for a newer entry.
    extra_since_ms: int | None = field(default=None, compare=False)
    #: The newer entry came (or never will): the next look decides.
    final: bool = field(default=False, compare=False)


@dataclass
class _Gateway:
    keyring: Keyring
    hashes: collections.OrderedDict[int, str] = field(default_factory=collections.OrderedDict)
    covered_by: dict[int, int] = field(default_factory=dict)
    newest_end: int = 0


class _Retry(Exception):
    """Not decided yet: look again later."""


class LedgerVerifier(threading.Thread):
    def __init__(
        self,
        settings: BridgeLedger,
        store: PointStore,
        metrics: BridgeMetrics,
        write: Callable[[bytes], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="ledger-verifier", daemon=True)
        from agent.ledger.keys import PublicKey

        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._write = write
        self._clock = clock
        self._gateways = {
            name: _Gateway(Keyring([PublicKey.from_b64(k)])) for name, k in settings.trust.items()
        }
        self._jobs: list[_Job] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._log = LogThrottle(burst=1, window_s=3600.0)
        metrics.ledger_pending.set_function(lambda: len(self._jobs))

    # --- the writer's side ------------------------------------------------------------------

    def submit(self, payload: bytes) -> None:
        """An entry the database has accepted; never blocks (a full queue skips it)."""
        try:
            entry = json.loads(payload)
            name = f"{entry['site']}/{entry['gateway']}"
        except (ValueError, KeyError, TypeError):
            return  # validated before it was written: cannot happen
        gw = self._gateways.get(name)
        if gw is None:
            self.metrics.ledger_entries.labels("untrusted").inc()
            allowed, _ = self._log.allow(f"untrusted {name}")
            if allowed:
                log.warning(
                    "ledger entries of %s are not verified: no key for it in ledger.trust "
                    "(energy-agent keys export on that gateway)",
                    name,
                )
            return
        with self._cond:
            if len(self._jobs) >= self.settings.queue:
                self.metrics.ledger_entries.labels("skipped").inc()
                allowed, left = self._log.allow("queue full")
                if allowed:
                    log.warning("ledger verification queue full: entries skipped (%d before)", left)
                return
            self._remember(gw, entry)
            due = self._clock() + self.settings.verify_after_s
            heapq.heappush(self._jobs, _Job(due, next(self._order), entry))
            self._cond.notify()

    @staticmethod
    def _remember(gw: _Gateway, entry: Mapping[str, Any]) -> None:
        seq = int(entry["seq"])
        gw.hashes[seq] = le.entry_hash(entry)
        while len(gw.hashes) > MEMORY:
            gw.hashes.popitem(last=False)
        for c in entry["covers"]:
            start = int(c["start"])
            gw.covered_by[start] = max(gw.covered_by.get(start, -1), seq)
        if len(gw.covered_by) > 4 * MEMORY:
            for start in sorted(gw.covered_by)[: len(gw.covered_by) - 4 * MEMORY]:
                del gw.covered_by[start]
        gw.newest_end = max(gw.newest_end, int(entry["period_end"]))

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    # --- the thread -------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._jobs or self._jobs[0].due > self._clock()):
                    wait = None if not self._jobs else self._jobs[0].due - self._clock()
                    self._cond.wait(wait)
                if self._stopping:
                    return
                job = heapq.heappop(self._jobs)
            self._process(job)

    def _process(self, job: _Job) -> None:
        entry = job.entry
        name = f"{entry['site']}/{entry['gateway']}"
        gw = self._gateways[name]
        started = time.perf_counter()
        try:
            failure, records = self._check(gw, job)
        except _Retry:
            job.attempts += 1
            with self._cond:
                heapq.heappush(self._jobs, job)
            return
        except StoreError as exc:  # the database is down: try again, never a verdict
            allowed, _ = self._log.allow("store")
            if allowed:
                log.warning("ledger: cannot read the database back (%s); trying again", exc)
            job.due = self._clock() + self.settings.verify_after_s
            with self._cond:
                heapq.heappush(self._jobs, job)
            return
        finally:
            self.metrics.ledger_seconds.inc(time.perf_counter() - started)
        self._verdict(entry, name, failure, records)

    def _check(self, gw: _Gateway, job: _Job) -> tuple[Failure | None, int]:
        """The verdict, or _Retry (with ``job.due`` moved on) when it is not decided yet."""
        entry = job.entry
        failure = gw.keyring.check(entry)
        if failure is not None:
            return failure, 0
        gw.keyring.follow(entry)
        failure = self._link(gw, entry)
        if failure is not None:
            if failure.reason is Reason.ENTRY_MISSING and job.attempts < self.settings.retries:
                job.due = self._clock() + self.settings.verify_after_s
                raise _Retry
            return failure, 0
        records = 0
        worst: Failure | None = None
        for cover in entry["covers"]:
            if gw.covered_by.get(int(cover["start"]), -1) > int(entry["seq"]) or self._newer_cover(
                entry, cover
            ):
                continue  # a newer entry covers this period: checked there
            got = self._digest(entry, cover)
            records += got.records
            mismatch = compare(Group.ENERGY, cover["energy"], got)
            if mismatch is not None and worst is None:
                worst = mismatch
        if worst is None:
            return None, records
        if job.attempts < self.settings.retries:
            job.due = self._clock() + self.settings.verify_after_s
            raise _Retry
        if worst.reason is Reason.EXTRA_RECORD and self._await_newer(gw, job):
            raise _Retry
        return worst, records

    def _await_newer(self, gw: _Gateway, job: _Job) -> bool:
        """More records than covered: they may be late ones, which an entry sealed after
        this check covers again. True (look again later) until such an entry exists and
        had ``verify_after_s`` to be written, or EXTRA_WAIT_S passed without one."""
        if job.final:
            return False
        now_ms = time.time_ns() // 1_000_000
        if job.extra_since_ms is None:
            job.extra_since_ms = now_ms
        waited_out = now_ms - job.extra_since_ms > EXTRA_WAIT_S * 1000
        if waited_out or gw.newest_end > job.extra_since_ms or self._newer_in_db(job):
            job.final = True
            job.due = self._clock() + self.settings.verify_after_s
        else:
            job.due = self._clock() + max(self.settings.verify_after_s, 60.0)
        return True

    def _newer_in_db(self, job: _Job) -> bool:
        e = job.entry
        since = job.extra_since_ms or 0
        pts = self.store.points("ledger", e["site"], e["gateway"], since, since + 10 * 86_400_000)
        return any("seq" in p.fields for p in pts)

    def _newer_cover(self, entry: Mapping[str, Any], cover: Mapping[str, Any]) -> bool:
        """The database says a newer entry covers this period (another bridge saw it)."""
        end = int(cover["end"])
        pts = self.store.points("ledger", entry["site"], entry["gateway"], end - 1, end)
        return any(float(p.fields.get("covered_by", -1)) > int(entry["seq"]) for p in pts)

    def _link(self, gw: _Gateway, entry: Mapping[str, Any]) -> Failure | None:
        seq = int(entry["seq"])
        if seq == 0:
            if entry["prev"] == le.GENESIS_PREV:
                return None
            return Failure(Reason.CHAIN_BROKEN, "entry 0's prev is not 64 zeros")
        known = gw.hashes.get(seq - 1)
        if known is not None:
            if known == entry["prev"]:
                return None
            return Failure(Reason.CHAIN_BROKEN, f"prev is not the hash of entry {seq - 1}")
        start = int(entry["period_start"])
        for p in self.store.points("ledger", entry["site"], entry["gateway"], start - 1, start):
            if int(p.fields.get("seq", -1)) != seq - 1:
                continue
            if int(p.fields.get("hash48", -1)) == le.short(entry["prev"]):
                return None
            return Failure(Reason.CHAIN_BROKEN, f"prev is not the hash of entry {seq - 1}")
        return Failure(
            Reason.ENTRY_MISSING, f"entry {seq - 1} (ending at {start}) is not in the database"
        )

    def _digest(self, entry: Mapping[str, Any], cover: Mapping[str, Any]) -> Digest:
        pts = self.store.points(
            "energy", entry["site"], entry["gateway"], int(cover["start"]), int(cover["end"])
        )
        return digest(lines_of_points(pts))

    # --- verdicts ---------------------------------------------------------------------------

    def _verdict(
        self, entry: Mapping[str, Any], name: str, failure: Failure | None, records: int
    ) -> None:
        site, gateway = str(entry["site"]), str(entry["gateway"])
        ok = failure is None
        self.metrics.ledger_entries.labels("verified" if ok else "failed").inc()
        self.metrics.ledger_records.inc(records)
        self.metrics.ledger_verified.labels(site, gateway).set(1 if ok else 0)
        self.metrics.ledger_seq.labels(site, gateway).set(int(entry["seq"]))
        if failure is not None:
            self.metrics.ledger_failures.labels(failure.reason.value).inc()
            allowed, left = self._log.allow(f"failed {name}")
            if allowed:
                more = f" ({left} more failures in the last hour)" if left else ""
                log.error("ledger of %s, entry %s: %s%s", name, entry["seq"], failure, more)
        fields: dict[str, int] = {
            "verified": int(ok),
            "records": records,
            "reason": 0 if failure is None else failure.reason.code,
        }
        body = line("ledger", {"site": site, "gateway": gateway}, fields, int(entry["period_end"]))
        for attempt in range(3):
            try:
                self._write(body.encode())
                return
            except WriteFailed as exc:
                if attempt == 2:
                    log.warning(
                        "ledger verdict of %s entry %s not written: %s", name, entry["seq"], exc
                    )
                else:
                    time.sleep(1.0)
