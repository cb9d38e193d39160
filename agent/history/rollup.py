"""The quarter-hour rollup: every energy record's numbers, summed per device and
quarter hour, written beside the record in the same transaction.

Why: a month's report over every record reads, decodes and sums 8.6 million
payloads for 200 meters at 60 s (about a minute on a gateway); over the rollup
it reads 15 times fewer rows that are already numbers (docs/performance.md).

A row's key is (``bq``, ``sq``, device, carrier): ``bq`` the quarter hour that
holds the record's ts, the interval's *end* (``(ts - 1) // QUARTER_MS``: a record
ending 10:15:00 is in the 10:00 block, as ``start < ts <= end`` files it), so a
period of whole quarter hours is a range of ``bq``; ``sq`` the quarter hour that
holds the interval's *start* (``(ts - interval_s * 1000) // QUARTER_MS``), where
the report places the interval: its local day, hour, tariff band, and the
15-minute block of the peak demand. An interval of 60, 300 or 900 s aligned to
the clock has ``sq == bq``; an hour's record (ending 11:00) has ``sq`` the 10:00
block and ``bq`` the 10:45 one, and like every interval longer than 15 minutes it
gives no peak demand (``n_long``), as the report has always done.

The sums of a row are folded in ts order, one record after another, by
:func:`fold`, the same function the report applies to records read one by one:
the two paths do the same float additions in the same order, so the figures are
identical to the last bit, not only to the printed digit. A record that arrives
older than the row's newest, or replaces one, makes the row summed again from its
records.

Schema version (``meta.rollup_version``): a history written before the rollup is
back-filled by the writer when it first opens it (:func:`ensure`); the report
reads the rollup only from a file that carries the version, records otherwise.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

QUARTER_MS = 900_000
ENERGY = "energy"
VERSION = 1
#: meta: the rollup's version; absent, the rollup is not to be read.
ROLLUP_VERSION = "rollup_version"
#: Qualities whose interval's time is not covered by readings (docs/core.md); an
#: interpolated interval is not covered either, and is counted apart.
MISSING = frozenset({"gap", "reset"})
INTERPOLATED = "interpolated"

#: The sums of a row, in column order. Counts are held as floats while summed (exact
#: below 2**53) and stored as integers.
SUMS = (
    "records", "kwh", "co2_kg", "m3", "units", "unmetered_kwh", "n_unmetered",
    "covered_s", "interpolated_s", "interpolated_kwh", "missing_s", "short_kwh",
    "n_short", "n_long", "n_interpolated", "n_missing",
)  # fmt: skip
(RECORDS, KWH, CO2, M3, UNITS, UNMETERED, N_UNMETERED, COVERED_S, INTERP_S, INTERP_KWH,
 MISSING_S, SHORT_KWH, N_SHORT, N_LONG, N_INTERP, N_MISSING) = range(len(SUMS))  # fmt: skip
_COUNTS = frozenset(
    {RECORDS, N_UNMETERED, COVERED_S, INTERP_S, MISSING_S, N_SHORT, N_LONG, N_INTERP, N_MISSING}
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rollup (
    bq INTEGER NOT NULL,
    sq INTEGER NOT NULL,
    device TEXT NOT NULL,
    carrier TEXT NOT NULL,
    {", ".join(f"{name} {'INTEGER' if i in _COUNTS else 'REAL'} NOT NULL" for i, name in enumerate(SUMS))},
    last_ts INTEGER NOT NULL,
    PRIMARY KEY (bq, sq, device, carrier)
) WITHOUT ROWID;
"""  # noqa: E501
_COLS = ", ".join(SUMS)
_UPSERT = (
    f"INSERT OR REPLACE INTO rollup (bq, sq, device, carrier, {_COLS}, last_ts) "
    f"VALUES ({', '.join('?' * (len(SUMS) + 5))})"
)


class BadRecord(ValueError):
    """An energy payload without the fields the rollup sums."""


@dataclass(frozen=True, slots=True)
class Quarter:
    """One rollup row: a device's records of one (bq, sq), summed."""

    bq: int
    sq: int
    device: str
    carrier: str
    sums: list[float]


def blank() -> list[float]:
    return [0.0] * len(SUMS)


def keys(ts: int, interval_s: int) -> tuple[int, int]:
    """(bq, sq) of a record: the quarters holding its end and its start."""
    return (ts - 1) // QUARTER_MS, (ts - interval_s * 1000) // QUARTER_MS


def fold(
    v: list[float],
    interval_s: int,
    quality: str,
    kwh: float,
    co2: float,
    m3: float | None,
    units: float | None,
    unmetered: float | None,
) -> None:
    """Add one record to the sums ``v`` (the report's arithmetic on a record)."""
    v[RECORDS] += 1
    v[KWH] += kwh
    v[CO2] += co2
    v[M3] += m3 or 0.0
    v[UNITS] += units or 0.0
    if unmetered is not None:
        v[UNMETERED] += unmetered
        v[N_UNMETERED] += 1
    if quality == INTERPOLATED:
        v[INTERP_S] += interval_s
        v[INTERP_KWH] += kwh
        v[N_INTERP] += 1
    elif quality in MISSING:
        v[MISSING_S] += interval_s
        v[N_MISSING] += 1
    else:
        v[COVERED_S] += interval_s
    if interval_s <= 900:
        v[SHORT_KWH] += kwh
        v[N_SHORT] += 1
    else:
        v[N_LONG] += 1


#: (interval_s, carrier, quality, kWh, CO2, m3, units, unmetered) of a record.
Numbers = tuple[int, str, str, float, float, float | None, float | None, float | None]


def numbers(p: dict[str, Any]) -> Numbers:
    """(interval_s, carrier, quality, kWh, CO2, m3, units, unmetered) of a payload, with
    the conversions the report applies to it (sources.row_of_payload)."""

    def opt(name: str) -> float | None:
        x = p.get(name)
        return None if x is None else float(x)

    try:
        return (
            int(p["interval_s"]), str(p["carrier"]), str(p["quality"]), float(p["energy_kwh"]),
            float(p["co2_kg"]), opt("volume_m3"), opt("units"), opt("unmetered_kwh"),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRecord(repr(exc)) from None


# --- the writer's side -------------------------------------------------------------------


def ensure(db: sqlite3.Connection) -> int:
    """Create the table; back-fill it from the records when the file has none of this
    version (a history written before the rollup). Returns the records folded."""
    db.executescript(SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE name = ?", (ROLLUP_VERSION,)).fetchone()
    if row is not None and int(row[0]) == VERSION:
        return 0
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("DELETE FROM rollup")
        n = 0
        rows = db.execute(
            "SELECT device, ts, payload FROM records WHERE kind = ? ORDER BY ts, id", (ENERGY,)
        )
        for q in fold_stream(_decoded(rows)):
            _write(db, q, 0)
            n += q_records(q)
        _set_version(db)
        db.execute("COMMIT")
    except (BadRecord, ValueError) as exc:
        db.execute("ROLLBACK")  # no version: the report reads this file's records
        log.error("history: no quarter-hour rollup, an energy record is unreadable (%s)", exc)
        return 0
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if n:
        log.info("history: the quarter-hour rollup back-filled from %d energy records", n)
    return n


def q_records(q: Quarter) -> int:
    return int(q.sums[RECORDS])


def _decoded(rows: Iterable[tuple[str, int, bytes]]) -> Iterator[tuple[str, int, Numbers]]:
    for device, ts, payload in rows:
        yield str(device), int(ts), numbers(json.loads(payload))


def fold_stream(rows: Iterable[tuple[str, int, Numbers]]) -> Iterator[Quarter]:
    """Quarters of (device, ts, numbers) in ts order (each device's records in ts order
    is what matters), by (bq, sq, device, carrier): how the rollup is made and how the
    report sums records read one by one."""
    folder = Folder()
    for device, ts, n in rows:
        yield from folder.push(device, ts, n)
    yield from folder.finish()


class Folder:
    """:func:`fold_stream` a record at a time: a quarter hour's rows come out, in key
    order, when the first record of a later one goes in (records in ts order)."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, str, str], list[float]] = {}
        self.current: int | None = None

    def push(self, device: str, ts: int, n: Numbers) -> list[Quarter]:
        interval_s, carrier, quality, kwh, co2, m3, units, unmetered = n
        bq, sq = keys(ts, interval_s)
        done: list[Quarter] = []
        if bq != self.current:
            done = self.finish()
            self.current = bq
        v = self.open.get((sq, device, carrier))
        if v is None:
            v = self.open[(sq, device, carrier)] = blank()
        fold(v, interval_s, quality, kwh, co2, m3, units, unmetered)
        return done

    def finish(self) -> list[Quarter]:
        if self.current is None:
            return []
        done = list(_flush(self.current, self.open))
        self.current = None
        return done


def _flush(bq: int, open_: dict[tuple[int, str, str], list[float]]) -> Iterator[Quarter]:
    for (sq, device, carrier), v in sorted(open_.items()):
        yield Quarter(bq, sq, device, carrier, v)
    open_.clear()


def _set_version(db: sqlite3.Connection) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (ROLLUP_VERSION, VERSION),
    )


def _write(db: sqlite3.Connection, q: Quarter, last_ts: int) -> None:
    sums = [int(x) if i in _COUNTS else x for i, x in enumerate(q.sums)]
    db.execute(_UPSERT, (q.bq, q.sq, q.device, q.carrier, *sums, last_ts))


def add(db: sqlite3.Connection, device: str, ts: int, payload: bytes, *, again: bool) -> None:
    """Fold a stored energy record into its row, inside the caller's transaction;
    ``again``: it replaced a record under its key (the row is summed anew)."""
    try:
        interval_s, carrier, quality, *values = numbers(json.loads(payload))
    except (BadRecord, ValueError) as exc:
        # The report reads records for this file from now on (and says what is wrong).
        db.execute("DELETE FROM meta WHERE name = ?", (ROLLUP_VERSION,))
        log.error("history: energy record of %s at %d unreadable (%s): rollup off", device, ts, exc)
        return
    bq, sq = keys(ts, interval_s)
    row = db.execute(
        f"SELECT {_COLS}, last_ts FROM rollup WHERE bq = ? AND sq = ? AND device = ? "
        "AND carrier = ?",
        (bq, sq, device, carrier),
    ).fetchone()
    if again or (row is not None and int(row[-1]) >= ts):
        _refold(db, bq, device)
        return
    v = blank() if row is None else [float(x) for x in row[:-1]]
    fold(v, interval_s, quality, *values)  # type: ignore[arg-type]
    _write(db, Quarter(bq, sq, device, carrier, v), ts)


def _refold(db: sqlite3.Connection, bq: int, device: str) -> None:
    """Sum a device's rows of quarter ``bq`` again from its records in ts order (a late or
    replaced record). Every row of the device in that quarter, not only the new record's:
    a record replaced by one of another carrier or interval leaves its old row empty."""
    rows = db.execute(
        "SELECT device, ts, payload FROM records WHERE kind = ? AND device = ? AND ts > ? "
        "AND ts <= ? ORDER BY ts, id",
        (ENERGY, device, bq * QUARTER_MS, (bq + 1) * QUARTER_MS),
    ).fetchall()
    db.execute("DELETE FROM rollup WHERE bq = ? AND device = ?", (bq, device))
    for q in fold_stream(_decoded(rows)):
        _write(db, q, max(int(r[1]) for r in rows))


def prune(db: sqlite3.Connection, through_ms: int) -> None:
    """Rows whose records are all at or before ``through_ms`` (a quarter-hour bound)."""
    db.execute("DELETE FROM rollup WHERE bq < ?", (through_ms // QUARTER_MS,))


# --- the reader's side -------------------------------------------------------------------


def readable(db: sqlite3.Connection, start_ms: int, end_ms: int) -> bool:
    """The rollup answers for ``start < ts <= end``: it exists in this version and the
    bounds are whole quarter hours."""
    if start_ms % QUARTER_MS or end_ms % QUARTER_MS:
        return False
    try:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (ROLLUP_VERSION,)).fetchone()
    except sqlite3.OperationalError:
        return False
    return row is not None and int(row[0]) == VERSION


#: The sums as doubles, counts too (SQLite converts them: exact below 2**53).
_REALS = ", ".join(f"CAST({c} AS REAL)" if i in _COUNTS else c for i, c in enumerate(SUMS))


def read(db: sqlite3.Connection, start_ms: int, end_ms: int) -> Iterator[Quarter]:
    """The rows of records with ``start < ts <= end``, by (bq, sq, device, carrier)."""
    rows = db.execute(
        f"SELECT bq, sq, device, carrier, {_REALS} FROM rollup WHERE bq >= ? AND bq < ? "
        "ORDER BY bq, sq, device, carrier",
        (start_ms // QUARTER_MS, end_ms // QUARTER_MS),
    )
    for row in rows:
        yield Quarter(row[0], row[1], row[2], row[3], list(row[4:]))


class Check:
    """The rollup of a span against its records as the ledger's verification reads them
    (in ts order): a row the records do not sum to (the table edited, or a fault) is
    counted, and the report then sums the records instead, so the figures are always
    those of the records the ledger vouches for."""

    def __init__(self, db: sqlite3.Connection, start_ms: int, end_ms: int) -> None:
        self._rows = read(db, start_ms, end_ms)
        self._next = next(self._rows, None)
        self._folder = Folder()
        self.differ = 0
        #: The first row that differs: (bq, sq, device, carrier).
        self.first: tuple[int, int, str, str] | None = None
        #: Every record was seen (the verification read them all).
        self.complete = False

    def record(self, device: str, ts: int, payload: dict[str, Any]) -> None:
        try:
            n = numbers(payload)
        except BadRecord:
            self._differs((ts // QUARTER_MS, ts // QUARTER_MS, device, ""))
            return
        for q in self._folder.push(device, ts, n):
            self._match(q)

    def finish(self) -> None:
        for q in self._folder.finish():
            self._match(q)
        while self._next is not None:
            self._differs(_key(self._next))
            self._next = next(self._rows, None)
        self.complete = True

    def _match(self, q: Quarter) -> None:
        key = _key(q)
        while self._next is not None and _key(self._next) < key:
            self._differs(_key(self._next))
            self._next = next(self._rows, None)
        if self._next is not None and _key(self._next) == key:
            if self._next.sums != q.sums:
                self._differs(key)
            self._next = next(self._rows, None)
        else:
            self._differs(key)

    def _differs(self, key: tuple[int, int, str, str]) -> None:
        self.differ += 1
        if self.first is None:
            self.first = key


@dataclass
class Checked:
    """A :class:`Check`'s outcome when the records were summed elsewhere (the ledger's
    bulk verification, :mod:`agent.ledger.bulk`): every record seen."""

    differ: int
    first: tuple[int, int, str, str] | None
    complete: bool = True


def _key(q: Quarter) -> tuple[int, int, str, str]:
    return q.bq, q.sq, q.device, q.carrier
