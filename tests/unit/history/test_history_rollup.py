"""The quarter-hour rollup (agent/history/rollup.py): a record filed by the quarter
holding its end, placed by the quarter holding its start; sums in ts order even
for a late record; replaced, pruned, back-filled into an older file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent.contract import Carrier, MessageKind, Topics, encode, parse_topic
from agent.contract.build import energy_payload
from agent.history import HISTORY_FILE, History, HistoryReader, bound
from agent.history import rollup as R
from agent.history.db import NewRecord
from agent.history.writer import new_record
from tests.support.ledger_gateway import PREFIX

MIN = 60_000
DAY = 86_400_000
Q = 900_000
T0 = 1_750_000_000_000 // DAY * DAY  # 2025-06-15 00:00 UTC, a whole quarter hour
TOPICS = Topics(PREFIX, "plant-a", "gw-01")


def rec(device: str, end_min: int, kwh: float, *, interval_s: int = 60, **kw: Any) -> NewRecord:
    p = energy_payload(
        ts=T0 + end_min * MIN, interval_s=interval_s,
        carrier=kw.pop("carrier", Carrier.ELECTRICITY),
        energy_kwh=kwh, co2_kg=kwh * 0.5, ef_kg_per_kwh=0.5, quality=kw.pop("quality", "measured"),
        **kw,
    )  # fmt: skip
    m = TOPICS.message(MessageKind.ENERGY, p, device)
    return new_record(parse_topic(m.topic), m.topic, m.payload, encode(m.payload))


def make(tmp_path: Path) -> History:
    return History(tmp_path / HISTORY_FILE, max_bytes=2**30, retention_months=25)


def rows(h: History, start_min: int = 0, end_min: int = 120) -> dict[tuple[int, int, str], Any]:
    """(bq, sq, device) counted in quarters from T0 -> the row's sums by name."""
    got = R.read(h.reader.db, T0 + start_min * MIN, T0 + end_min * MIN)
    return {
        (q.bq - T0 // Q, q.sq - T0 // Q, q.device): dict(zip(R.SUMS, q.sums, strict=True))
        for q in got
    }


def test_a_record_is_filed_by_its_end_and_placed_by_its_start(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.put([
        # 60 s ending 00:13, 00:14, 00:15: starts 00:12..00:14, ends in (00:00, 00:15]
        rec("m", 13, 1.0), rec("m", 14, 2.0, unmetered_kwh=0.5),
        rec("m", 15, 4.0, quality="interpolated"),
        rec("m", 16, 8.0),  # ends 00:16: the next quarter, both ways
        rec("p", 15, 3.0, interval_s=300),  # 00:10..00:15
        rec("g", 30, 6.0, interval_s=900, quality="gap"),  # 00:15..00:30
        rec("s", 20, 5.0, interval_s=900),  # 00:05..00:20: starts in 0, ends in 1
        rec("h", 60, 10.0, interval_s=3600),  # 00:00..01:00: starts in 0, ends in 3
    ])  # fmt: skip
    got = rows(h)
    assert set(got) == {
        (0, 0, "m"), (1, 1, "m"), (0, 0, "p"), (1, 1, "g"), (1, 0, "s"), (3, 0, "h"),
    }  # fmt: skip
    m = got[(0, 0, "m")]
    # 1 + 2 + 4 = 7 kWh, 3.5 kg; 2 x 60 s measured, 60 s and 4 kWh interpolated
    assert (m["records"], m["kwh"], m["co2_kg"]) == (3, 7.0, 3.5)
    assert (m["covered_s"], m["interpolated_s"], m["interpolated_kwh"]) == (120, 60, 4.0)
    assert (m["unmetered_kwh"], m["n_unmetered"], m["n_interpolated"]) == (0.5, 1, 1)
    assert (m["short_kwh"], m["n_short"], m["n_long"]) == (7.0, 3, 0)
    g = got[(1, 1, "g")]  # a gap: its 900 s missing, its energy counts for the peak
    assert (g["missing_s"], g["covered_s"], g["n_missing"], g["short_kwh"]) == (900, 0, 1, 6.0)
    h_ = got[(3, 0, "h")]  # an hour: no peak demand from it
    assert (h_["kwh"], h_["covered_s"], h_["short_kwh"], h_["n_long"]) == (10.0, 3600, 0.0, 1)
    # a period (00:00, 00:15] holds the records ending in it, whatever their start
    assert set(rows(h, 0, 15)) == {(0, 0, "m"), (0, 0, "p")}
    assert set(rows(h, 15, 60)) == {(1, 1, "m"), (1, 1, "g"), (1, 0, "s"), (3, 0, "h")}
    h.close()


def test_a_late_record_sums_its_quarter_again_in_ts_order(tmp_path: Path) -> None:
    h = make(tmp_path)
    # In ts order 0.2 + 0.1 + 0.7 = 1.0; in arrival order 0.2 + 0.7 + 0.1 =
    # 0.9999999999999999: the report sums records in ts order, so must the rollup.
    assert 0.2 + 0.7 + 0.1 != 1.0
    h.put([rec("m", 13, 0.2)])
    h.put([rec("m", 15, 0.7)])
    h.put([rec("m", 14, 0.1)])
    assert rows(h)[(0, 0, "m")]["kwh"] == 1.0
    # the same record again changes nothing; another one under its key replaces it
    h.put([rec("m", 14, 0.1)])
    assert rows(h)[(0, 0, "m")]["records"] == 3
    h.put([rec("m", 14, 1.1)])
    assert rows(h)[(0, 0, "m")]["kwh"] == 0.2 + 1.1 + 0.7
    assert rows(h)[(0, 0, "m")]["records"] == 3
    h.close()


def test_a_record_replaced_by_another_carrier_or_interval_leaves_no_old_row(
    tmp_path: Path,
) -> None:
    """Found by the bulk verification's property test: the replacing record's row was
    summed again, the replaced one's (another carrier, another start quarter) kept its
    record, and the rollup no longer matched the records."""
    h = make(tmp_path)
    h.put([rec("m", 13, 1.0), rec("m", 14, 2.0)])
    h.put([rec("m", 14, 2.0, carrier=Carrier.NATURAL_GAS)])
    got = R.read(h.reader.db, T0, T0 + 15 * MIN)
    assert [(q.carrier, q.sums[R.RECORDS], q.sums[R.KWH]) for q in got] == [
        ("electricity", 1, 1.0),
        ("natural_gas", 1, 2.0),
    ]
    # 00:13 as a 900 s interval: it starts in the quarter before, its old row goes
    h.put([rec("m", 13, 5.0, interval_s=900)])
    got = R.read(h.reader.db, T0, T0 + 15 * MIN)
    assert [(q.sq - T0 // Q, q.carrier, q.sums[R.RECORDS], q.sums[R.KWH]) for q in got] == [
        (-1, "electricity", 1, 5.0),
        (0, "natural_gas", 1, 2.0),
    ]
    h.close()


def test_pruning_drops_the_rollup_with_its_records(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.put([rec("m", 10, 1.0), rec("m", 24 * 60 + 10, 2.0), rec("m", 24 * 60, 4.0)])
    bound.drop_through(h._open(), h.path, T0 + DAY)  # records with ts <= the day's end go
    assert [(q.bq - T0 // Q, q.device) for q in R.read(h.reader.db, T0, T0 + 2 * DAY)] == [
        (96, "m")
    ]
    h.close()


def test_an_older_history_gets_its_rollup_when_the_agent_opens_it(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.put([rec("m", 13, 0.2), rec("m", 15, 0.7), rec("m", 14, 0.1), rec("p", 60, 3.0)])
    before = rows(h)
    h.close()
    db = sqlite3.connect(tmp_path / HISTORY_FILE)
    db.execute("DROP TABLE rollup")
    db.execute("DELETE FROM meta WHERE name = ?", (R.ROLLUP_VERSION,))
    db.commit()
    db.close()
    # The report reads records from a file without the rollup ...
    reader = HistoryReader.open(tmp_path / HISTORY_FILE)
    assert not R.readable(reader.db, T0, T0 + DAY)
    reader.close()
    # ... until the agent opens it: back-filled, the same rows to the bit.
    h = make(tmp_path)
    assert rows(h) == before and before[(0, 0, "m")]["kwh"] == 1.0
    assert R.readable(h.reader.db, T0, T0 + DAY)
    assert not R.readable(h.reader.db, T0 + MIN, T0 + DAY)  # not whole quarter hours
    h.close()
