"""`energy-agent report --period 2026` over a year of 200 meters at 60 s (issue 16's
year target), its ledger verified: 105.6 million records, about 34 GB of history.

Run: ``.venv/bin/python -m bench.bench_report_year --month DIR --keep YEAR_DIR``, where
DIR holds a month kept by ``bench.bench_report --devices 200 --days 30 --ledger --keep
DIR`` (built by History.put as `run` writes it, sealed by the Sealer).

Building a year the way the month is built would take about four hours here (History.put
~70 µs a record, the Sealer's read-back ~60 µs a record), so the year is made from the
month, and everything the report then reads is real:

* the records: the month's rows copied into each 30-day stretch of 2026 (and its first
  five days once more), each payload's time rewritten to its new place, in time order
  through SQLite's own insert (the tables and indexes the agent creates);
* the rollup: the month's rows moved by the same whole number of quarter hours;
* the ledger: one signed entry an hour made by the real Sealer (chain, keys, covers,
  storage), its covers' digests computed in one bulk pass first instead of by its
  read-back, and checked equal to the Sealer's own read-back (``covers_of``) on 24
  hours picked at random.

Then the report runs in a fresh process, as the scheduled run or an admin starts it,
with the gateway's keys (every hour verified) and without them (figures only). A year's
history does not fit this machine's memory: every run reads most of it from disk.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.bench_report import cli_report, config_text
from bench.machine import describe

DAY = 86_400_000
HOUR = 3_600_000
#: 2026-11-01 and 2026-01-01, 00:00 in Asia/Shanghai: the kept month's start, the year's.
MONTH_START = 1_793_462_400_000
YEAR_START = 1_767_196_800_000
YEAR_END = YEAR_START + 365 * DAY


def build(month: Path, year: Path) -> int:
    """The year's records and rollup from the month's (module doc); records stored."""
    db = sqlite3.connect(year / "history.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"ATTACH 'file:{month}?mode=ro' AS m")
    schema = db.execute(
        "SELECT sql FROM m.sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid"
    ).fetchall()
    for (sql,) in schema:
        db.execute(sql)
    with db:
        db.execute("INSERT INTO main.meta SELECT * FROM m.meta")
    pieces = [(YEAR_START - MONTH_START + k * 30 * DAY, 30) for k in range(12)]
    pieces.append((YEAR_START - MONTH_START + 360 * DAY, 5))
    total = 0
    for shift, days in pieces:
        hi = MONTH_START + days * DAY
        with db:
            total += db.execute(
                "INSERT INTO main.records (kind, device, ts, rev, sub, topic, payload, stored_ms) "
                "SELECT kind, device, ts + :s, rev, sub, topic, CAST(replace(CAST(payload AS "
                "TEXT), '{\"ts\":' || ts || ',', '{\"ts\":' || (ts + :s) || ',') AS BLOB), "
                "stored_ms FROM m.records WHERE ts <= :hi ORDER BY ts, id",
                {"s": shift, "hi": hi},
            ).rowcount
            db.execute(
                "INSERT INTO main.rollup SELECT bq + :q, sq + :q, device, carrier, records, kwh, "
                "co2_kg, m3, units, unmetered_kwh, n_unmetered, covered_s, interpolated_s, "
                "interpolated_kwh, missing_s, short_kwh, n_short, n_long, n_interpolated, "
                "n_missing, last_ts + :s FROM m.rollup WHERE bq < :bq",
                {"s": shift, "q": shift // 900_000, "bq": hi // 900_000},
            )
        print(f"  {days} days moved by {shift / DAY:+.0f} d: {total:,} records so far", flush=True)
    db.execute("DETACH m")
    db.close()
    return total


def seal(state: Path) -> None:
    """An hourly ledger by the real Sealer, its covers' digests from one bulk pass."""
    from agent.history.reader import HistoryReader
    from agent.history.writer import History
    from agent.ledger import bulk, keys
    from agent.ledger import sealer as S
    from agent.ledger.canonical import Digest, Group

    units = [(t, t + HOUR) for t in range(YEAR_START, YEAR_END, HOUR)]
    got: dict[tuple[tuple[int, int], Group], Digest] = {}

    def capture(self: Any, u: int, group: Group, digest: Digest, pending: set[int]) -> None:
        got[(self.plan.units[u], group)] = digest

    settle_one = bulk._Pass._settle_one
    bulk._Pass._settle_one = capture  # type: ignore[method-assign]
    try:
        reader = HistoryReader.open(state / "history.db")
        upto = reader.max_id()
        reader.close()
        plan = bulk.Periods(units, [{}] * len(units), [True] * len(units))
        t = time.perf_counter()
        bulk.settle(
            state / "history.db", (YEAR_START, YEAR_END), plan, upto=upto, prefix="energy/v1",
            check_rollup=False,
        )  # fmt: skip
        print(f"  covers' digests, one bulk pass: {time.perf_counter() - t:.0f} s", flush=True)
    finally:
        bulk._Pass._settle_one = settle_one  # type: ignore[method-assign]
    assert len(got) == 2 * len(units)

    if not (state / keys.KEY_FILE).exists():
        keys.init(state)
    history = History(state / "history.db", max_bytes=2**40, retention_months=240)
    try:
        for u in random.Random(7).sample(units, 24):
            (cover,) = S.covers_of(history, "plant-a", "gw-01", [u])
            assert cover == S.cover_json(*u, got[(u, Group.ENERGY)], got[(u, Group.SITE)]), u
        print("  24 hours at random: the bulk digests are the Sealer's read-back", flush=True)

        def covers_of(_h: Any, _s: str, _g: str, us: list[tuple[int, int]]) -> list[Any]:
            return [S.cover_json(*u, got[(u, Group.ENERGY)], got[(u, Group.SITE)]) for u in us]

        S.covers_of = covers_of  # type: ignore[assignment]
        t = time.perf_counter()
        sealer = S.Sealer(history, state, site="plant-a", gateway="gw-01", period_s=3600, delay_s=0)
        sealer.start(YEAR_START)
        while sealer.seal(YEAR_END + 1):
            pass
        print(f"  8,760 entries sealed in {time.perf_counter() - t:.0f} s", flush=True)
    finally:
        history.close()


def uncache(path: Path) -> None:
    """Drop the file's pages from the page cache: the run reads it from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--month", type=Path, required=True, help="a month kept by bench_report")
    ap.add_argument("--keep", type=Path, required=True, help="the year's directory (reused)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(describe())
    state = args.keep / "state"
    state.mkdir(parents=True, exist_ok=True)
    config_file = args.keep / "bench.yaml"
    config_file.write_text(config_text(200, state), encoding="utf-8")
    if not (state / "history.db").exists():
        t = time.perf_counter()
        n = build(args.month / "state" / "history.db", state)
        print(f"history: {n:,} records in {time.perf_counter() - t:.0f} s", flush=True)
    db = sqlite3.connect(f"file:{state / 'history.db'}?mode=ro", uri=True)
    entries = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    db.close()
    if entries < 1 + 365 * 24:  # the genesis entry and one an hour (continued if cut short)
        seal(state)
    size = (state / "history.db").stat().st_size
    print(f"history: {size / 1e9:.1f} GB", flush=True)
    public = state / "ledger-keys.pub"
    aside = state / "ledger-keys.pub.aside"
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeat):
            for verified in (True, False):
                if not verified:
                    public.rename(aside)  # no keys: nothing verified, the figures alone
                try:
                    uncache(state / "history.db")
                    wall, cpu = cli_report(
                        config_file, state, "2026", Path(tmp) / f"{k}-{verified}", exact=False
                    )
                finally:
                    if not verified:
                        aside.rename(public)
                what = "every hour verified" if verified else "no keys: the figures alone"
                print(
                    f"  [{k + 1}] `energy-agent report --period 2026`, {what}: {wall:.1f} s wall, "
                    f"{cpu:.1f} s CPU (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            out = Path(tmp) / f"{k}-True" / "report-verification.csv"
            rows = out.read_text(encoding="utf-8-sig").splitlines()[1:]
            tally = Counter(row.rsplit(",", 1)[1] for row in rows)
            print(f"      report-verification.csv: {dict(tally)}", flush=True)


if __name__ == "__main__":
    main()
