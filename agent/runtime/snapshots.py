"""The core's snapshot on disk: what a start continues from, and when it may be written.

The snapshot says which intervals the core has emitted, so it is only as good
as the outbox behind it: written past a record that is not on disk, a restart
after ``kill -9`` would never emit that record; written too rarely, a restart
emits intervals again with other numbers. The rules for both are here, apart
from the agent's data path (:mod:`agent.runtime.agent`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agent.contract.kinds import Message, MessageKind
from agent.core.site import SiteCore
from agent.core.snapshot import SnapshotError
from agent.runtime.outbox import RECORDS, StorageGuard
from agent.runtime.throttle import LogThrottle, repeats

log = logging.getLogger(__name__)

SNAPSHOT = "core-snapshot.npz"
#: Outbox marks holding each device's last measurement seq.
SEQ_MARK = "seq:"
#: Outbox marks holding, per kind of interval record and device, the last interval stored.
RECORD_MARK = "last:"
#: Records of an interval (``ts`` its end): a running core makes each once; only a core
#: restarted from a snapshot older than the record makes it again.
INTERVAL_KINDS = frozenset({MessageKind.ENERGY, MessageKind.INTENSITY})


class StoredIntervals:
    """The last interval stored per record kind and device: what a restart must not repeat.

    The snapshot is written after the records (see :meth:`CoreSnapshots.save`), so a
    kill -9 in between restarts the core from a state that has not emitted records
    the outbox holds; it derives those intervals again from the meters' counters,
    with other numbers and quality, and the database would get two points for one
    interval. The marks are committed in the records' own transaction (as the
    measurements' seq), so they say exactly what is stored; a record for an
    interval at or before its mark is dropped (but a site record's revision, which
    is meant to follow its interval, see docs/core.md). The energy it carried is in the
    stored record; the restarted core's next interval holds its share of the gap.
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        #: Records dropped as already stored (since the start).
        self.dropped = 0

    @staticmethod
    def _key(m: Message) -> str | None:
        if m.kind not in INTERVAL_KINDS:
            return None
        return f"{RECORD_MARK}{m.kind.value}/{m.device or ''}"

    def keep(self, m: Message) -> bool:
        """False for a record of an interval already stored (a restarted core's)."""
        key = self._key(m)
        if key is None or m.payload.get("rev"):
            # A revision (rev >= 1) is late data changing a published site record: it
            # is about an older interval by definition, and the last one is the truth.
            return True
        ts = int(m.payload["ts"])
        if ts <= self.last.get(key, ts - 1):
            self.dropped += 1
            return False
        self.last[key] = ts
        return True

    def marks(self, records: list[Message]) -> dict[str, int]:
        """The marks to commit with ``records``."""
        out: dict[str, int] = {}
        for m in records:
            key = self._key(m)
            if key is not None:
                out[key] = max(out.get(key, 0), int(m.payload["ts"]))
        return out


class CoreSnapshots:
    """Loads the snapshot at start, writes it when due and allowed, says what is lost at exit."""

    def __init__(
        self,
        site: SiteCore,
        outbox: StorageGuard,
        state_dir: Path,
        *,
        commit: Callable[[], None],
        throttle: LogThrottle,
        held_elsewhere: Callable[[], int] = lambda: 0,
    ) -> None:
        self.site = site
        self.outbox = outbox
        #: Records held in memory by another store the snapshot must not run ahead of
        #: (the history: agent.runtime.ledger).
        self._held_elsewhere = held_elsewhere
        self.path = state_dir / SNAPSHOT
        self._commit = commit
        self._log_throttle = throttle
        #: Energy records (or events) were stored since the last snapshot.
        self.closed_since = False
        #: A device answered for the first time since the last snapshot: its counter's
        #: starting point must be on disk, or a kill -9 before the next snapshot loses
        #: the energy from there to the restart.
        self.new_baseline = False
        #: The last failure to write, if it has not been written since.
        self.error = ""
        #: The intervals the outbox holds records of (see StoredIntervals).
        self.stored = StoredIntervals()

    @property
    def due(self) -> bool:
        """Something happened that a restart must not repeat or lose (see the flags)."""
        return self.closed_since or self.new_baseline

    def restore(self) -> None:
        """Continue the core from the snapshot, and each device's seq from the outbox."""
        try:
            if self.site.load_snapshot(self.path):
                log.info("continuing counters from %s", self.path)
            for name, value in self.outbox.marks().items():
                info = self.site.by_id.get(name.removeprefix(SEQ_MARK))
                if name.startswith(SEQ_MARK) and info is not None:
                    info.seq = max(info.seq, value)
                elif name.startswith(RECORD_MARK):
                    self.stored.last[name] = value
        except SnapshotError as exc:
            # A damaged snapshot must not keep the gateway down: keep it for inspection and
            # start the counters afresh (the first interval is then marked partial).
            aside = self.path.with_name(self.path.name + ".corrupt")
            self.path.replace(aside)
            log.error("%s; moved to %s, starting the core afresh", exc, aside)

    def save(self) -> bool:
        """Save the core's state unless a record it emitted exists only in memory; True if saved.

        The snapshot says which intervals were emitted, so their records must be on
        disk first, or a restart after kill -9 would never emit them. While the disk
        refuses writes a record may be held in memory (the outbox's guard): then the
        snapshot waits until the record is stored or the broker acknowledged it (one
        that is up does so within milliseconds). Written past such a record, a crash
        would lose it for good; held back, a crash restarts from the older snapshot
        and the core derives those intervals again from the meters' counters (the
        downtime spread evenly, marked interpolated), so no energy is lost. The
        price: a record that reached the broker from memory may come again from the
        restarted core with other (interpolated) numbers, if the disk took no
        snapshot after it; the sum over the intervals is the same. A record that
        memory itself had to drop (full, with the broker away for days) no longer
        holds the snapshot back: it is lost, and said and counted when it goes.

        Held back or refused by the disk, the snapshot keeps its reasons
        (``closed_since``, ``new_baseline``) and the housekeeping tries again
        every second.
        """
        self._commit()
        if self.outbox.records_held() or self._held_elsewhere():
            return False
        directory = self.path.parent
        try:
            self.site.save_snapshot(self.path)
        except OSError as exc:
            self.error = f"cannot write the core snapshot in {directory}: {exc}"
            if (n := self._log_throttle.due(self.error)) is not None:
                log.error("%s; trying again every second%s", self.error, repeats(n))
            return False
        if self.error:
            log.warning("core snapshot written again in %s", directory)
            self.error = ""
        self.closed_since = self.new_baseline = False
        return True

    def close(self) -> int:
        """The last word on a full disk: store what memory holds if the disk takes it now,
        then the snapshot the drain or the store allowed, then count what is lost.

        Returns the number of messages that were neither stored nor sent.
        """
        self.outbox.retry(force=True)
        if self.due:
            self.save()
        self.outbox.close()
        lost = self.outbox.lost_at_close
        records = sum(lost[k] for k in RECORDS)
        if records:
            log.error(
                "%d of them are records: the core's snapshot was not written past them, so "
                "the next start derives those intervals again from the meters' counters "
                "(marked interpolated)",
                records,
            )
        return sum(lost.values())
