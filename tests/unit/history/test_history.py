"""The gateway's history: records once, pages, a disk that refuses writes, pruning by age
and by size with its warning, and the agent's snapshot waiting for the history."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.contract import Message, Topics, parse_topic
from agent.history import HISTORY_FILE, History, HistoryReader
from agent.history.bound import months_before
from agent.history.writer import new_record
from tests.support.ledger_gateway import PREFIX, energy, intensity

MIN = 60_000
DAY = 86_400_000
T0 = 1_750_000_000_000 // DAY * DAY  # 2025-06-15 00:00 UTC
TOPICS = Topics(PREFIX, "plant-a", "gw-01")


def rec(m: Message):  # type: ignore[no-untyped-def]
    from agent.contract import encode

    return new_record(parse_topic(m.topic), m.topic, m.payload, encode(m.payload))


def make(path: Path, **kw: int) -> History:
    return History(
        path / HISTORY_FILE,
        max_bytes=kw.get("max_bytes", 2**30),
        retention_months=kw.get("months", 25),
    )


def test_a_record_is_kept_once_and_read_back_in_pages(tmp_path: Path) -> None:
    h = make(tmp_path)
    records = [rec(energy(TOPICS, "m1", T0 + k * MIN, 0.1)) for k in range(1, 31)]
    h.put(records)
    first_ids = [r.id for r in h.reader.page(T0, T0 + 5 * MIN).records]
    h.put(records[:5])  # the same records again (a retry): stored once, left as they were
    assert h.replaced == 0
    assert [r.id for r in h.reader.page(T0, T0 + 5 * MIN).records] == first_ids
    h.put([rec(intensity(TOPICS, T0 + MIN, 0.2))])
    reader = HistoryReader.open(tmp_path / HISTORY_FILE)  # read-only, beside the writer
    try:
        got, cursor = [], None
        while True:
            page = reader.page(T0, T0 + 30 * MIN, kind="energy", cursor=cursor, limit=7)
            got += page.records
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [r.ts for r in got] == [T0 + k * MIN for k in range(1, 31)]
        assert json.loads(got[0].payload)["energy_kwh"] == 0.1
        assert [r.kind for r in reader.page(T0, T0 + MIN).records] == ["energy", "intensity"]
        assert reader.page(T0, T0 + MIN, device="m2").records == []
        # ts is an interval's end: from < ts <= to
        assert [r.ts for r in reader.page(T0 + MIN, T0 + 2 * MIN, kind="energy").records] == [
            T0 + 2 * MIN
        ]
    finally:
        reader.close()
        h.close()


def test_a_disk_that_refuses_writes_keeps_records_in_memory_until_it_takes_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The history's directory cannot be made (a file is in the way, as a full or
    read-only disk refuses): records wait, the snapshot must wait, then all are stored."""
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    h = History(blocker / HISTORY_FILE, max_bytes=2**30, retention_months=25)
    with caplog.at_level(logging.ERROR):
        h.put([rec(energy(TOPICS, "m1", T0 + MIN, 0.1))])
        h.put([rec(energy(TOPICS, "m1", T0 + 2 * MIN, 0.2))])
    assert h.held() == 2
    assert not h.stats().ok and "cannot write the history" in caplog.text
    blocker.unlink()
    assert h.retry(force=True)
    assert h.held() == 0 and h.stats().ok
    assert [r.ts for r in h.reader.page(T0, T0 + DAY).records] == [T0 + MIN, T0 + 2 * MIN]
    h.close()


def test_memory_is_bounded_and_a_drop_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    h = History(blocker / HISTORY_FILE, max_bytes=2**30, retention_months=25, max_pending=3)
    with caplog.at_level(logging.ERROR):
        h.put([rec(energy(TOPICS, "m1", T0 + k * MIN, 0.1)) for k in range(1, 6)])
    assert h.held() == 3 and h.lost == 2
    assert "2 records dropped from memory" in caplog.text


@pytest.mark.parametrize(
    ("now", "months", "want"),
    [
        ("2025-03-31", 1, "2025-02-28"),  # no 31 February: the last day
        ("2024-03-31", 1, "2024-02-29"),
        ("2025-06-15", 25, "2023-05-15"),
        ("2025-01-10", 13, "2023-12-10"),
    ],
)
def test_months_before(now: str, months: int, want: str) -> None:
    import datetime as dt

    def ms(day: str) -> int:
        return int(dt.datetime.fromisoformat(day + "T00:00+00:00").timestamp() * 1000)

    assert months_before(ms(now) + 12 * 3_600_000, months) == ms(want)


def test_records_older_than_the_retention_are_pruned_whole_days(tmp_path: Path) -> None:
    h = make(tmp_path, months=1)
    h.put([rec(energy(TOPICS, "m1", T0 - d * DAY, 0.1)) for d in range(40)])
    horizon = h.prune(T0 + 3_600_000)
    assert horizon == months_before(T0, 1)  # 2025-05-15 00:00 UTC
    kept = [r.ts for r in h.reader.page(0, T0 + DAY, limit=100).records]
    assert min(kept) == horizon + DAY and len(kept) == 31
    assert h.reader.pruned_before() == horizon
    h.close()


def six_days() -> list:  # type: ignore[type-arg]
    """Six days of three meters, a record every ten minutes."""
    return [
        rec(energy(TOPICS, f"m{d}", T0 - k * 10 * MIN, 0.1)) for k in range(864) for d in range(3)
    ]


def test_at_the_size_bound_the_oldest_days_go_and_a_warning_comes_well_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = make(tmp_path / "probe")
    probe.put(six_days())
    probe.prune(T0)
    full = probe.stats().used_bytes
    probe.close()
    assert full is not None
    h = make(tmp_path, max_bytes=full * 6 // 10)
    h.put(six_days())
    with caplog.at_level(logging.WARNING):
        h.prune(T0 + MIN)
    stats = h.stats()
    assert stats.used_bytes is not None and stats.used_bytes <= full * 6 // 10
    assert stats.pruned_before is not None and stats.oldest_ts is not None
    # Whole days went, oldest first: what is left starts the day after the horizon.
    assert stats.pruned_before % DAY == 0 and stats.oldest_ts > stats.pruned_before
    assert T0 - stats.oldest_ts <= 4 * DAY
    assert stats.warning is not None and "history.max_mb" in stats.warning
    assert "history.max_mb" in caplog.text
    h.close()


def test_the_size_warning_says_when_the_bound_cannot_hold_the_retention(tmp_path: Path) -> None:
    """Two days of records use 1 % of the bound: well below 80 %, but at that rate the
    bound holds about 200 days, less than 25 months: said now, not when it is full."""
    probe = make(tmp_path / "probe")
    probe.put([rec(energy(TOPICS, "m1", T0 - k * 10 * MIN, 0.1)) for k in range(288)])
    probe.prune(T0)
    used = probe.stats().used_bytes
    probe.close()
    assert used is not None
    h = make(tmp_path, max_bytes=used * 100)
    h.put([rec(energy(TOPICS, "m1", T0 - k * 10 * MIN, 0.1)) for k in range(288)])
    h.prune(T0)
    warning = h.stats().warning
    assert warning is not None and "less than retention_months (25)" in warning
    h.close()


def test_the_agents_snapshot_waits_for_records_the_history_holds(tmp_path: Path) -> None:
    """The core's snapshot claims every record it emitted: not while one is only in the
    history's memory (a crash would lose it from the history for good)."""
    from agent.runtime.snapshots import CoreSnapshots
    from agent.runtime.throttle import LogThrottle

    held = [1]
    saved: list[Path] = []
    snapshots = CoreSnapshots(
        cast(Any, SimpleNamespace(save_snapshot=saved.append)),
        cast(Any, SimpleNamespace(records_held=lambda: 0)),
        tmp_path,
        commit=lambda: None,
        throttle=LogThrottle(60.0),
        held_elsewhere=lambda: held[0],
    )
    assert snapshots.save() is False and saved == []
    held[0] = 0
    assert snapshots.save() is True and len(saved) == 1


def test_two_events_of_one_device_at_one_ts_are_two_records(tmp_path: Path) -> None:
    """A reading can be a wrap and a glitch at once: two events, two database points
    (their tags differ), so two records of the history, sealed both."""
    from agent.contract import MessageKind

    h = make(tmp_path)
    for event in ("wrap", "glitch"):
        payload = {
            "ts": T0 + 7_000,
            "event": event,
            "quantity": "energy_import_kwh",
            "value": 12.5,
            "limit_per_h": 110.4,
        }
        h.put([rec(TOPICS.message(MessageKind.EVENTS, payload, "m1"))])
    page = h.reader.page(T0, T0 + MIN, kind="events")
    assert sorted(json.loads(r.payload)["event"] for r in page.records) == ["glitch", "wrap"]
    assert h.replaced == 0
    h.close()


def _late_ts_steps(tmp: Path, old_minutes: int) -> tuple[list[int], int]:
    """late_ts after a history of ``old_minutes`` of 10 meters sealed up to its end, then
    an hour stored since (one record of it late): what it found, and SQLite's steps."""
    h = make(tmp)
    try:
        h.put([rec(energy(TOPICS, f"m{d}", T0 + k * MIN, 0.1)) for k in range(1, old_minutes + 1)
               for d in range(10)])  # fmt: skip
        upto = h.reader.max_id()
        end = T0 + old_minutes * MIN
        late = T0 + 5 * MIN + 1  # a record for a period sealed long ago
        h.put([rec(energy(TOPICS, f"m{d}", end + k * MIN, 0.1)) for k in range(1, 61)
               for d in range(10)] + [rec(energy(TOPICS, "m99", late, 0.1))])  # fmt: skip
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        h.reader.db.set_progress_handler(count, 100)
        found = h.reader.late_ts(upto, end)
        h.reader.db.set_progress_handler(None, 0)
        return found, steps[0]
    finally:
        h.close()


def test_finding_late_records_reads_the_rows_since_the_last_entry_not_the_history(
    tmp_path: Path,
) -> None:
    """Every seal asks for records stored since the last entry for older periods. Read
    through the ts index, that walked the whole history before the period at every seal:
    0.25-0.36 s a seal with a month of 200 meters in memory, 33-41 s with a year read from
    disk (docs/performance.md)."""
    small, small_steps = _late_ts_steps(tmp_path / "small", 6 * 60)
    big, big_steps = _late_ts_steps(tmp_path / "big", 48 * 60)
    assert small == big == [T0 + 5 * MIN + 1]
    # 3,600 against 28,800 records before: the same work (not eight times as much)
    assert big_steps < 1.5 * small_steps + 10, (small_steps, big_steps)
