"""The history's bounds: its age (``history.retention_months``) and its size
(``history.max_mb``) — what pruning drops, and the warning when the size cannot
hold the age.

Apart from the writer because it is a job of its own with its own rules: whole
UTC days go, oldest first; a ledger entry goes with its period but the newest
stays (the chain continues from it); the rollup's quarter hours go with their
records. The writer stores and keeps the state the status shows (bytes used,
the warning); these functions decide, on the writer's connection.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.history import db as hdb
from agent.history import rollup
from agent.history.reader import HistoryReader

log = logging.getLogger(__name__)

#: The size warning starts at this share of ``history.max_mb``; pruning at the bound
#: frees down to PRUNE_TO.
WARN_AT = 0.8
PRUNE_TO = 0.9
DAY_MS = 86_400_000


def months_before(ts_ms: int, months: int) -> int:
    """The same UTC day-of-month ``months`` earlier (clamped), at 00:00 UTC."""
    d = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    y, m = divmod(d.year * 12 + d.month - 1 - months, 12)
    day = min(d.day, calendar.monthrange(y, m + 1)[1])
    return int(dt.datetime(y, m + 1, day, tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Limits:
    """``history.max_mb`` (in bytes) and ``history.retention_months``."""

    max_bytes: int
    retention_months: int


def prune(
    db: sqlite3.Connection, reader: HistoryReader, path: Path, limits: Limits, now_ms: int
) -> tuple[int, int]:
    """Drop what is older than the retention, then the oldest days while over the size
    bound; returns the new horizon (records at or before it are gone) and the bytes
    used after."""
    with hdb.errors(path):
        horizon = hdb.meta(db, hdb.PRUNED_BEFORE) or 0
        cutoff = months_before(now_ms, limits.retention_months) // DAY_MS * DAY_MS
        if cutoff > horizon:
            horizon = drop_through(db, path, cutoff)
        used = hdb.used_bytes(db)
        while used > limits.max_bytes:
            oldest = reader.oldest_ts()
            if oldest is None:
                break
            horizon = drop_through(db, path, (oldest - 1) // DAY_MS * DAY_MS + DAY_MS)
            used = hdb.used_bytes(db)
            if used <= limits.max_bytes * PRUNE_TO:
                break
        db.execute("PRAGMA incremental_vacuum")
    return horizon, used


def drop_through(db: sqlite3.Connection, path: Path, day_end: int) -> int:
    """Records with ts <= day_end, and the entries of periods ending by then (the
    newest entry stays: the chain continues from it)."""
    with hdb.transaction(db, path):
        n = db.execute("DELETE FROM records WHERE ts <= ?", (day_end,)).rowcount
        rollup.prune(db, day_end)
        db.execute(
            "DELETE FROM ledger WHERE period_end <= ? AND seq < (SELECT MAX(seq) FROM ledger)",
            (day_end,),
        )
        hdb.set_meta(db, hdb.PRUNED_BEFORE, day_end)
    if n:
        log.info("history: pruned %d records up to %d", n, day_end)
    return day_end


def size_warning(
    reader: HistoryReader, path: Path, limits: Limits, now_ms: int, used: int
) -> str | None:
    """Said as soon as the rate of this gateway shows it, not when the disk is full:
    near the bound, or a bound that holds fewer months than the retention."""
    max_bytes, retention_months = limits.max_bytes, limits.retention_months
    mb = max_bytes / 2**20
    if used >= max_bytes * WARN_AT:
        return (
            f"history {path} uses {used / 2**20:.0f} of {mb:.0f} MB (history.max_mb): "
            "the oldest records are pruned when it is full; raise max_mb (the disk "
            "permitting) to keep them"
        )
    oldest = reader.oldest_ts()
    span = now_ms - oldest if oldest is not None else 0
    if span >= DAY_MS and used > 0:
        months_held = max_bytes / used * span / (30.44 * DAY_MS)
        if months_held < retention_months:
            return (
                f"history {path}: at this gateway's rate, history.max_mb ({mb:.0f} MB) "
                f"holds about {months_held:.0f} months, less than retention_months "
                f"({retention_months}); the oldest are pruned when it is full"
            )
    return None
