"""The rollup's check in the bulk verification: the quarter-hour rows of a block against
the sums of its energy records (agent/ledger/bulk.py; :class:`agent.history.rollup.Check`
is the record-by-record twin, and the counts and the first row found are its own).

The records are folded by the kernel (:func:`agent.ledger.bulk_kernel.fold`: the
additions of :func:`agent.history.rollup.fold`, in its order), so a row equal to its
records is equal in every bit, and any other is counted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from agent.history import rollup

#: A rollup row's key: (bq, sq, device, carrier).
QuarterKey = tuple[int, int, str, str]
WIDTH = len(rollup.SUMS)


@dataclass(frozen=True)
class Records:
    """A block's records as the kernel read them: time, interval, device rank, carrier,
    quality class, numbers and which are given, and which rows are energy records."""

    ts: np.ndarray
    ival: np.ndarray
    rank: np.ndarray
    carrier: np.ndarray
    quality: np.ndarray
    vals: np.ndarray
    has: np.ndarray
    energy: np.ndarray


@dataclass(frozen=True)
class Rows:
    """The rollup's rows of a block, in its key's order."""

    bq: np.ndarray
    sq: np.ndarray
    devices: list[str]
    carriers: list[str]
    sums: np.ndarray


def rows_of(db: sqlite3.Connection, lo: int, hi: int) -> Rows | None:
    """The rollup's rows with ``lo <= bq < hi``. Keys and counts come as text
    (``group_concat``, exact for integers), the doubles as rows: a third of the Python
    objects of a plain SELECT. Both reads in one transaction, each row's (bq, sq) in both;
    None if they still disagree."""
    counts = [c for i, c in enumerate(rollup.SUMS) if i in rollup._COUNTS]
    reals = [c for i, c in enumerate(rollup.SUMS) if i not in rollup._COUNTS]
    where = "FROM rollup WHERE bq >= ? AND bq < ?"
    db.execute("BEGIN")
    try:
        head = db.execute(
            "SELECT count(*), group_concat(bq), group_concat(sq), "
            "group_concat(device, char(10)), group_concat(carrier, char(10)), "
            + ", ".join(f"group_concat({c})" for c in counts)
            + f" {where}",
            (lo, hi),
        ).fetchone()
        values = db.execute(f"SELECT bq, sq, {', '.join(reals)} {where}", (lo, hi)).fetchall()
    finally:
        db.execute("COMMIT")
    n = int(head[0])
    if n == 0:
        return Rows(np.empty(0, np.int64), np.empty(0, np.int64), [], [], np.empty((0, WIDTH)))

    def ints(text: str) -> np.ndarray:
        return np.fromstring(text, dtype=np.int64, sep=",")

    bq, sq = ints(head[1]), ints(head[2])
    devices, cars = head[3].split("\n"), head[4].split("\n")
    got = np.array(values, np.float64).reshape(len(values), 2 + len(reals))
    if (
        len(values) != n or len(devices) != n or len(cars) != n
        or not np.array_equal(got[:, 0], bq) or not np.array_equal(got[:, 1], sq)
    ):  # fmt: skip
        return None
    sums = np.empty((n, WIDTH), np.float64)
    k_count = k_real = 0
    for i in range(WIDTH):
        if i in rollup._COUNTS:
            column = ints(head[5 + k_count])
            if column.shape[0] != n:
                return None
            sums[:, i] = column
            k_count += 1
        else:
            sums[:, i] = got[:, 2 + k_real]
            k_real += 1
    return Rows(bq, sq, devices, cars, sums)


def _folded(k: ModuleType, r: Records) -> tuple[np.ndarray, np.ndarray]:
    """The records' sums per (bq, sq, device rank, carrier), in key order."""
    q = rollup.QUARTER_MS
    bq = (r.ts - 1) // q
    sq = (r.ts - r.ival * 1000) // q
    # The energy records only, in their order (a stable sort keeps it per key).
    order = np.flatnonzero(r.energy)
    order = order[np.lexsort((r.carrier[order], r.rank[order], sq[order], bq[order]))]
    keys = np.empty((order.shape[0], 4), np.int64)
    sums = np.empty((order.shape[0], WIDTH), np.float64)
    g = k.fold(order, bq, sq, r.rank, r.carrier, r.ival, r.quality, r.vals, r.has, keys, sums)
    return keys[:g], sums[:g]


def compare(
    k: ModuleType,
    records: Records | None,
    rows: Rows,
    device_rank: Mapping[str, int],
    carriers: Sequence[str],
) -> tuple[int, QuarterKey | None]:
    """How many rows differ (a row on one side only, or sums not all equal), and the
    first of them in key order."""
    keys, sums = (
        _folded(k, records)
        if records is not None
        else (np.empty((0, 4), np.int64), np.empty((0, WIDTH), np.float64))
    )
    # The rollup's rows as the same keys: a device or carrier no record has differs.
    car_rank = {c: i for i, c in enumerate(carriers)}
    n = len(rows.devices)
    rk = np.empty((n, 4), np.int64)
    rk[:, 0] = rows.bq
    rk[:, 1] = rows.sq
    rk[:, 2] = np.array([device_rank.get(d, -1) for d in rows.devices], np.int64)
    rk[:, 3] = np.array([car_rank.get(c, -1) for c in rows.carriers], np.int64)
    # In the rollup's key order, which sorts devices as their ranks do; made sure of.
    order = np.lexsort((rk[:, 3], rk[:, 2], rk[:, 1], rk[:, 0]))
    rs = rows.sums
    if (order != np.arange(n)).any():
        rk, rs = rk[order], rs[order]
        rows = Rows(
            rows.bq[order], rows.sq[order], [rows.devices[i] for i in order.tolist()],
            [rows.carriers[i] for i in order.tolist()], rs,
        )  # fmt: skip
    unknown = (rk[:, 2] < 0) | (rk[:, 3] < 0)
    known = ~unknown
    da = np.zeros(len(keys), np.uint8)
    db = np.zeros(int(known.sum()), np.uint8)
    kb, sb = np.ascontiguousarray(rk[known]), np.ascontiguousarray(rs[known])
    k.merge(keys, sums, len(keys), kb, sb, len(kb), da, db)
    differ = int(da.sum()) + int(db.sum()) + int(unknown.sum())
    if not differ:
        return 0, None
    names = sorted(device_rank)
    firsts: list[QuarterKey] = [
        (int(x[0]), int(x[1]), names[int(x[2])], carriers[int(x[3])])
        for x in keys[da == 1][:1].tolist() + kb[db == 1][:1].tolist()
    ]
    firsts += [
        (int(rows.bq[i]), int(rows.sq[i]), rows.devices[i], rows.carriers[i])
        for i in np.flatnonzero(unknown)[:1].tolist()
    ]
    return differ, min(firsts)
