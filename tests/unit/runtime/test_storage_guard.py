"""The storage guard over a real SQLite outbox whose disk refuses writes.

The disk is made full with ``PRAGMA max_page_count`` (SQLite's SQLITE_FULL, the
error a full disk gives); tests/integration/test_full_disk.py does the same on a
real full tmpfs, with the agent, the broker and the page.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from agent.cli.status import render
from agent.config import parse_config
from agent.core.engine import load_kernel
from agent.http.state import state_document
from agent.runtime.agent import SNAPSHOT, Agent
from agent.runtime.outbox import Item, Kind, SqliteOutbox, StorageGuard
from agent.runtime.scheduler import DevicePoll
from agent.runtime.status import status_line
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

load_kernel()
LIBRARY = ProfileLibrary()
BIG = b"x" * 5000  # more than a page: every message needs a page more


def full(box: SqliteOutbox) -> None:
    """No page more, and no free page left: every message fails as on a full disk."""
    box._db.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    with contextlib.suppress(sqlite3.OperationalError):
        while True:
            box._db.execute("INSERT INTO filler VALUES (zeroblob(500))")


def room(box: SqliteOutbox) -> None:
    box._db.execute("PRAGMA max_page_count=1073741823")


def item(kind: Kind, name: str, created_ms: int = 0) -> Item:
    return Item(kind, f"t/{name}", name.encode() + BIG, created_ms=created_ms)


def names(entries: list) -> list[str]:  # type: ignore[type-arg]
    return [e.topic.removeprefix("t/") for e in entries]


@pytest.fixture
def disk(tmp_path: Path) -> SqliteOutbox:
    return SqliteOutbox(tmp_path / "outbox.db", 100_000_000)


def test_a_refused_write_is_held_in_memory_taken_and_forgotten_when_acknowledged(
    disk: SqliteOutbox, tmp_path: Path
) -> None:
    guard = StorageGuard(disk, tmp_path, retry_s=3600)
    guard.put_many([item(Kind.ENERGY, "e1")])
    assert guard.health().ok
    full(disk)
    ids = guard.put_many(
        [item(Kind.MEASUREMENT, "m1", 100), item(Kind.ENERGY, "e2"), item(Kind.STATUS, "s1")]
    )  # no exception: the guard holds them
    assert all(i < 0 for i in ids)
    h = guard.health()
    assert not h.ok and h.error == "database or disk is full" and h.failures == 1
    assert (h.unstored, h.unstored_records) == (3, 2)
    assert h.directory == str(tmp_path) and h.free_bytes is not None
    assert guard.stats().depth == 4 and guard.records_held() == 2
    # The disk's first (it is older), then memory's; records and fresh measurements first.
    batch = guard.take(10, fresh_from_ms=100)
    assert names(batch) == ["e1", "m1", "e2", "s1"]
    guard.accept([e.id for e in batch])
    assert guard.stats().depth == 0 and guard.records_held() == 0
    assert guard.health().unstored == 0
    assert not guard.health().ok  # still failing until a write succeeds


def test_what_memory_holds_goes_to_the_disk_in_order_and_nothing_twice(
    disk: SqliteOutbox, tmp_path: Path
) -> None:
    guard = StorageGuard(disk, tmp_path, retry_s=3600)
    guard.put_many([item(Kind.ENERGY, f"p{i}") for i in range(3)])
    full(disk)
    guard.put_many([item(Kind.ENERGY, f"p{i}") for i in range(3, 9)])
    in_flight = guard.take(5)
    assert names(in_flight) == ["p0", "p1", "p2", "p3", "p4"]
    guard.accept([in_flight[0].id])
    room(disk)
    # A new message while a retry is not due yet waits behind the held ones...
    guard.put_many([item(Kind.ENERGY, "p9")])
    assert guard.health().unstored == 7  # p3..p8 (p3, p4 in flight) and p9
    # ...and the housekeeping's retry moves them all, in order.
    assert guard.retry(force=True)
    h = guard.health()
    assert h.ok and h.unstored == 0 and h.error is None
    # p1..p4 are still in flight (p3, p4 moved while in flight): only p5.. go out now.
    assert names(guard.take(10)) == ["p5", "p6", "p7", "p8", "p9"]
    guard.accept([in_flight[3].id])  # p3's acknowledgement deletes its disk copy
    guard.reject([in_flight[4].id])  # p4 goes back to the queue, in its place
    guard.reject([e.id for e in in_flight[1:3]])
    guard.close()
    again = SqliteOutbox(tmp_path / "outbox.db", 100_000_000)
    assert names(again.take(100)) == ["p1", "p2", "p4", "p5", "p6", "p7", "p8", "p9"]
    again.close()


def test_memory_is_bounded_measurements_go_first_and_records_loudly(
    disk: SqliteOutbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = len(item(Kind.ENERGY, "e00").payload) + len("t/e00") + 64
    guard = StorageGuard(disk, tmp_path, memory_bytes=10 * size, retry_s=3600)
    full(disk)
    guard.put_many([item(Kind.ENERGY, f"e{i:02}") for i in range(4)])
    guard.put_many([item(Kind.MEASUREMENT, f"m{i:02}") for i in range(10)])
    h = guard.health()
    assert h.unstored == 10 and h.unstored_records == 4  # 4 records, the 6 newest measurements
    assert h.lost["measurement"] == 4 and h.lost["energy"] == 0
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    with caplog.at_level(logging.ERROR):
        guard.put_many([item(Kind.ENERGY, f"e{i:02}") for i in range(4, 12)])
    h = guard.health()
    assert h.lost["measurement"] == 10  # every measurement went before any record
    assert h.lost["energy"] == 2 and h.unstored == 10
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and all(r.levelno == logging.ERROR for r in dropped)
    assert dropped[0].getMessage() == (
        "memory lane full: dropped 1 energy record (energy_agent_messages_lost_total counts them)"
    )
    assert names(guard.take(100)) == [f"e{i:02}" for i in range(2, 12)]  # the oldest went


def test_the_disk_is_tried_once_per_period_and_the_fault_said_once(
    disk: SqliteOutbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    guard = StorageGuard(disk, tmp_path, retry_s=3600)
    full(disk)
    with caplog.at_level(logging.WARNING, logger="agent.runtime.outbox"):
        for i in range(50):
            guard.put_many([item(Kind.MEASUREMENT, f"m{i}")])
            guard.retry()
        assert guard.health().failures == 1
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"cannot write the outbox in {tmp_path} (")
        assert " free): database or disk is full; 1 message held in memory" in lines[0]
        room(disk)
        assert guard.retry(force=True)
        assert len(caplog.records) == 2
        assert "writable again" in caplog.records[1].getMessage()
        assert "stored the 50 messages held in memory" in caplog.records[1].getMessage()


def test_close_stores_what_memory_holds_or_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = SqliteOutbox(tmp_path / "a.db", 100_000_000)
    guard = StorageGuard(box, tmp_path, retry_s=3600)
    full(box)
    guard.put_many([item(Kind.ENERGY, "e1"), item(Kind.MEASUREMENT, "m1")])
    room(box)
    guard.close()  # the last try is not held back by the retry period
    assert sum(guard.lost_at_close.values()) == 0
    again = SqliteOutbox(tmp_path / "a.db", 100_000_000)
    assert names(again.take(10)) == ["e1", "m1"]
    again.close()

    box = SqliteOutbox(tmp_path / "b.db", 100_000_000)
    guard = StorageGuard(box, tmp_path, retry_s=3600)
    full(box)
    guard.put_many([item(Kind.ENERGY, "e1")] + [item(Kind.MEASUREMENT, f"m{i}") for i in range(3)])
    with caplog.at_level(logging.ERROR):
        guard.close()  # never raises
    assert sum(guard.lost_at_close.values()) == 4
    assert guard.health().lost["energy"] == 1
    text = caplog.records[-1].getMessage()
    assert text.startswith("exiting with 4 messages neither stored nor acknowledged")
    assert "measurement 3, energy 1" in text and "database or disk is full" in text


def test_an_outbox_that_cannot_be_opened_is_opened_by_the_first_write_that_can(
    tmp_path: Path,
) -> None:
    """A restart on a full disk cannot even open SQLite's files: memory carries the
    messages, and the disk outbox opens when it can."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    guard = StorageGuard.opening(
        lambda: SqliteOutbox(blocker / "outbox.db", 100_000_000), tmp_path, retry_s=3600
    )
    h = guard.health()
    assert not h.ok and "File exists" in (h.error or "") and h.failures == 1
    assert guard.marks() == {} and guard.stats().depth == 0
    guard.put_many([item(Kind.ENERGY, "e1"), item(Kind.MEASUREMENT, "m1")], {"seq:m": 1})
    assert names(guard.take(1)) == ["e1"]  # published from memory meanwhile
    blocker.unlink()
    assert guard.retry(force=True)
    assert guard.health().unstored == 0 and guard.marks() == {"seq:m": 1}
    guard.close()
    again = SqliteOutbox(blocker / "outbox.db", 100_000_000)
    assert names(again.take(10)) == ["e1", "m1"] and again.marks() == {"seq:m": 1}
    again.close()


# --- the agent: snapshot, state document, metrics, status --------------------------------

MIN = 60_000
T0 = 1_700_000_000_000 // MIN * MIN
CONFIG = """
site: {id: plant-t, timezone: UTC}
gateway: {id: gw-t}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices: [{id: main, bus: bus-1, unit: 1, profile: eastron-sdm630}]
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
"""


def _poll(device: str) -> DevicePoll:
    return cast(DevicePoll, SimpleNamespace(device_id=device))


def _feed(agent: Agent, seconds: range) -> None:
    for s in seconds:
        agent.on_result(
            _poll("main"),
            T0 + s * 1000,
            {Quantity.ENERGY_IMPORT_KWH: 100 + s / 36, Quantity.ACTIVE_POWER_KW: 100.0},
            None,
            0.01,
        )


def test_the_snapshot_never_claims_a_record_that_is_only_in_memory(tmp_path: Path) -> None:
    """Written past a record held in memory, a crash would lose it for good: the snapshot
    waits until the record is acknowledged (or stored), then is written."""
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    disk = SqliteOutbox(tmp_path / "outbox.db", 100_000_000)
    agent = Agent(config, LIBRARY, outbox=disk)
    _feed(agent, range(0, 50, 10))
    assert agent.snapshot()  # a baseline
    before = (tmp_path / SNAPSHOT).stat().st_mtime_ns
    full(disk)
    _feed(agent, range(50, 130, 10))  # closes T0+60 s and T0+120 s: energy, intensity
    assert agent.outbox.records_held() >= 2
    assert not agent.snapshot()
    assert (tmp_path / SNAPSHOT).stat().st_mtime_ns == before
    assert agent._closed_since_snapshot  # it tries again
    held = agent.outbox.take(1000)
    energy = [e for e in held if e.kind is Kind.ENERGY]
    assert [e.created_ms for e in energy] == [T0 + MIN, T0 + 2 * MIN]
    agent.outbox.accept([e.id for e in held])  # the broker acknowledged them
    assert agent.snapshot()
    assert (tmp_path / SNAPSHOT).stat().st_mtime_ns != before
    assert not agent._closed_since_snapshot


def test_a_failing_disk_is_in_the_state_the_metrics_and_status(tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    disk = SqliteOutbox(tmp_path / "outbox.db", 100_000_000)
    agent = Agent(config, LIBRARY, outbox=disk)
    agent.link.state.connected = True
    _feed(agent, range(0, 30, 10))
    doc = state_document(agent.status())
    assert not [p for p in doc["health"]["problems"] if "storage" in p]
    assert doc["storage"]["ok"] is True
    full(disk)
    agent.outbox.put_many([item(Kind.MEASUREMENT, "m1"), item(Kind.ENERGY, "e1")])
    status = agent.status()
    doc = state_document(status)
    assert doc["health"]["state"] == "degraded"
    (problem,) = [p for p in doc["health"]["problems"] if "storage" in p]
    assert problem.startswith(f"storage failing: cannot write the outbox in {tmp_path} (")
    assert problem.endswith("free): database or disk is full; 2 messages held in memory only")
    st = doc["storage"]
    assert (st["ok"], st["unstored"], st["unstored_records"], st["failures"]) == (False, 2, 1, 1)
    assert st["memory_max_bytes"] == 16 * 2**20
    assert (status.storage.ok, status.storage.unstored, status.storage.failures) == (False, 2, 1)
    agent.metrics.watch(agent.status)
    text = agent.metrics.exposition().decode()
    assert "energy_agent_storage_ok 0.0" in text
    assert "energy_agent_unstored_messages 2.0" in text
    assert "energy_agent_storage_failures_total 1.0" in text
    assert 'energy_agent_messages_lost_total{kind="energy"} 0.0' in text
    assert "STORAGE FAILING" in status_line(status)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render(doc))
    shown = console.export_text()
    assert "STORAGE FAILING (2 messages in memory only)" in shown
    assert "storage failing: cannot write the outbox" in shown
