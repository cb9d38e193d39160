"""Reading the history: pages of records for the page and `report`, the ledger's rows,
and the whole of it for ``history export``.

Works on any connection to the file: the agent's own (the sealer reads what it
has just written) or a read-only one (``HistoryReader.open``), which SQLite's WAL
mode lets run beside the agent's writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.history import db as hdb
from agent.history.db import RECORD_COLUMNS, HistoryError, StoredRecord

#: Records per page of ``GET /api/history`` unless asked for fewer.
PAGE = 500


@dataclass(frozen=True)
class LedgerRow:
    seq: int
    period_start: int
    period_end: int
    entry: dict[str, Any]
    raw: bytes
    hash: str
    upto: int
    queued: bool


@dataclass(frozen=True, slots=True)
class EnergySum:
    """One device's records of one quality in one bucket (see HistoryReader.energy_sums)."""

    device: str
    #: The bucket's index from the start asked for.
    bucket: int
    quality: str
    energy_kwh: float
    co2_kg: float
    #: Seconds of the intervals with an energy (their ``interval_s`` summed).
    seconds: int
    #: Seconds of every interval, with an energy or not.
    all_seconds: int
    #: Start of the earliest interval, end of the latest (Unix ms).
    first_ms: int
    last_ms: int


def _num(x: object) -> float:
    return float(x) if isinstance(x, int | float) else 0.0


@dataclass(frozen=True)
class Page:
    records: list[StoredRecord]
    #: Give it back as ``cursor`` for the next page; None on the last one.
    next_cursor: str | None


def parse_cursor(text: str) -> tuple[int, int]:
    """``"TS.ID"`` of the last record of a page; ValueError if it is not one."""
    ts, sep, rid = text.partition(".")
    if not sep or not ts.lstrip("-").isdigit() or not rid.isdigit():
        raise ValueError(f"cursor '{text[:40]}' is not one this server gave (TS.ID)")
    return int(ts), int(rid)


def _ledger_row(row: tuple[Any, ...]) -> LedgerRow:
    seq, start, end, raw, h, upto, queued = row
    return LedgerRow(
        int(seq), int(start), int(end), json.loads(raw), bytes(raw), str(h), int(upto), bool(queued)
    )


_LEDGER_COLUMNS = "seq, period_start, period_end, entry, hash, upto, queued"


class HistoryReader:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: Path) -> HistoryReader:
        """A read-only view of the file (HistoryError if there is none)."""
        return cls(hdb.connect(path, readonly=True), path)

    def close(self) -> None:
        self.db.close()

    # --- records -----------------------------------------------------------------------

    def page(
        self,
        start_ms: int,
        end_ms: int,
        *,
        device: str | None = None,
        kind: str | None = None,
        not_kind: str | None = None,
        only_kind: str | None = None,
        cursor: str | None = None,
        limit: int = PAGE,
    ) -> Page:
        """Records with ``start < ts <= end`` (an interval's record is filed under its end),
        oldest first, at most ``limit``; ValueError for a cursor that is not one."""
        where = ["ts > ?", "ts <= ?"]
        params: list[Any] = [start_ms, end_ms]
        if cursor is not None:
            ts, rid = parse_cursor(cursor)
            # One lower bound, the cursor's, is what lets the ts index seek to the page:
            # with the cursor inside an OR beside "ts > start", each page scanned the span
            # from its start (a month's records page by page: minutes, growing with the
            # square of the span).
            where = ["ts >= ?", "ts <= ?", "(ts > ? OR id > ?)"]
            params = [max(ts, start_ms + 1), end_ms, ts, rid]
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        # Filters the ts index still leads (``+``): a kind's rows are most of a span's.
        if not_kind is not None:
            where.append("+kind != ?")
            params.append(not_kind)
        if only_kind is not None:
            where.append("+kind = ?")
            params.append(only_kind)
        sql = (
            f"SELECT {RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)} "
            "ORDER BY ts, id LIMIT ?"
        )
        with hdb.errors(self.path):
            rows = [StoredRecord.of(r) for r in self.db.execute(sql, (*params, limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = f"{rows[-1].ts}.{rows[-1].id}" if more and rows else None
        return Page(rows, nxt)

    def between(self, start_ms: int, end_ms: int) -> list[StoredRecord]:
        """Every record of ``start < ts <= end``: one period's, for sealing and verifying."""
        with hdb.errors(self.path):
            return [
                StoredRecord.of(r)
                for r in self.db.execute(
                    f"SELECT {RECORD_COLUMNS} FROM records WHERE ts > ? AND ts <= ?",
                    (start_ms, end_ms),
                )
            ]

    def energy_sums(self, start_ms: int, end_ms: int, bucket_ms: int) -> list[EnergySum]:
        """Each device's ``energy`` records of ``start < ts <= end`` summed per bucket of
        ``bucket_ms`` from ``start`` (a record in the bucket holding its end) and per
        quality, the newest revision of each interval: the page's 24 h and 30 days.

        SQLite reads the fields out of the JSON and sums them, so only the sums cross
        into Python: 30 days of one-minute records of 12 meters (518,400 rows, 164 MiB)
        are 1,440 sums, read in ~4 s on a 2-core machine at load 5 (rows into Python
        and summed there: 11.7 s); 24 hours in 0.2 s."""
        sql = """
            SELECT device, (ts - 1 - :start) / :bucket AS i, json_extract(p, '$.quality') AS q,
                SUM(json_extract(p, '$.energy_kwh')),
                SUM(json_extract(p, '$.co2_kg')),
                SUM(CASE WHEN json_extract(p, '$.energy_kwh') IS NOT NULL
                    THEN json_extract(p, '$.interval_s') END),
                SUM(json_extract(p, '$.interval_s')),
                MIN(ts - 1000 * json_extract(p, '$.interval_s')),
                MAX(ts)
            FROM (
                SELECT device, ts, MAX(rev), CAST(payload AS TEXT) AS p FROM records
                WHERE kind = 'energy' AND ts > :start AND ts <= :end GROUP BY device, ts
            )
            GROUP BY device, i, q
        """
        args = {"start": start_ms, "end": end_ms, "bucket": bucket_ms}
        with hdb.errors(self.path):
            rows = self.db.execute(sql, args).fetchall()
        return [
            EnergySum(
                str(dev),
                int(i),
                str(q),
                _num(kwh),
                _num(co2),
                int(seconds or 0),
                int(all_seconds or 0),
                int(first),
                int(last),
            )
            for dev, i, q, kwh, co2, seconds, all_seconds, first, last in rows
        ]

    def iter_records(
        self,
        start_ms: int,
        end_ms: int,
        *,
        not_kind: str | None = None,
        only_kind: str | None = None,
    ) -> Iterator[StoredRecord]:
        """``between`` for any span, a page at a time: an export of months."""
        cursor: str | None = None
        while True:
            page = self.page(
                start_ms, end_ms, not_kind=not_kind, only_kind=only_kind, cursor=cursor,
                limit=5000,
            )  # fmt: skip
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def max_id(self) -> int:
        with hdb.errors(self.path):
            row = self.db.execute("SELECT MAX(id) FROM records").fetchone()
        return int(row[0] or 0)

    def late_ts(self, after_id: int, through_ms: int) -> list[int]:
        """The distinct ts of records stored after row ``after_id`` with ts at or before
        ``through_ms``: records for periods already sealed, which an entry covers again.

        Read by row id (NOT INDEXED): only the rows stored since the last entry, a
        period's. SQLite's own choice, the ts index up to ``through_ms``, read every
        record of the history before it at every seal (0.25-0.36 s a seal with a month of
        200 meters in memory, 33-41 s with a year read from disk: docs/performance.md)."""
        with hdb.errors(self.path):
            rows = self.db.execute(
                "SELECT DISTINCT ts FROM records NOT INDEXED WHERE id > ? AND ts <= ? ORDER BY ts",
                (after_id, through_ms),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def unit_of(self, ts_ms: int) -> tuple[int, int] | None:
        """The period (start, end) of the entry whose own period holds a record at ``ts``."""
        with hdb.errors(self.path):
            row = self.db.execute(
                "SELECT period_start, period_end FROM ledger WHERE period_end >= ? "
                "AND period_start < ? ORDER BY period_end LIMIT 1",
                (ts_ms, ts_ms),
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def oldest_ts(self) -> int | None:
        with hdb.errors(self.path):
            row = self.db.execute("SELECT MIN(ts) FROM records").fetchone()
        return None if row[0] is None else int(row[0])

    def newest_ts(self) -> int | None:
        with hdb.errors(self.path):
            row = self.db.execute("SELECT MAX(ts) FROM records").fetchone()
        return None if row[0] is None else int(row[0])

    def pruned_before(self) -> int | None:
        with hdb.errors(self.path):
            return hdb.meta(self.db, hdb.PRUNED_BEFORE)

    # --- the ledger --------------------------------------------------------------------

    def last_entry(self) -> LedgerRow | None:
        with hdb.errors(self.path):
            row = self.db.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else _ledger_row(row)

    def entries(self, from_seq: int = 0) -> Iterator[LedgerRow]:
        with hdb.errors(self.path):
            rows = self.db.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq >= ? ORDER BY seq", (from_seq,)
            ).fetchall()
        for row in rows:
            yield _ledger_row(row)

    def first_entry_after(self, ts_ms: int) -> int | None:
        """The seq of the first entry whose period ends after ``ts_ms``."""
        with hdb.errors(self.path):
            row = self.db.execute(
                "SELECT MIN(seq) FROM ledger WHERE period_end > ?", (ts_ms,)
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def unqueued(self) -> list[LedgerRow]:
        """Entries stored but not yet handed to the outbox (a crash in between)."""
        with hdb.errors(self.path):
            rows = self.db.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE queued = 0 ORDER BY seq"
            ).fetchall()
        return [_ledger_row(r) for r in rows]


def require(path: Path) -> HistoryReader:
    """The reader of a gateway's history for the CLI; HistoryError says what is missing."""
    if not path.exists():
        raise HistoryError(path, "no history here: has `energy-agent run` run with this state_dir?")
    return HistoryReader.open(path)
