"""One contract suite for every outbox backend (memory and SQLite), as Telegraf's buffer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.runtime.outbox import Item, Kind, MemoryOutbox, Outbox, OutboxError, SqliteOutbox

Factory = Callable[[int], Outbox]


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[Outbox] = []

    def factory(max_bytes: int = 10_000_000) -> Outbox:
        box: Outbox
        if request.param == "memory":
            box = MemoryOutbox(max_bytes)
        else:
            box = SqliteOutbox(tmp_path / f"outbox-{len(opened)}.db", max_bytes)
        opened.append(box)
        return box

    yield factory
    for box in opened:
        box.close()


def _put(box: Outbox, n: int, kind: Kind = Kind.ENERGY, start: int = 0) -> list[int]:
    return [
        box.put(kind, f"t/{start + i}", f"p{start + i}".encode(), created_ms=start + i)
        for i in range(n)
    ]


def test_take_returns_oldest_first_and_never_twice(make: Factory) -> None:
    box = make()
    _put(box, 5)
    first = box.take(3)
    second = box.take(3)
    assert [e.payload for e in first] == [b"p0", b"p1", b"p2"]
    assert [e.payload for e in second] == [b"p3", b"p4"]
    assert box.take(3) == []


def test_accept_deletes_and_reject_returns_in_original_order(make: Factory) -> None:
    box = make()
    _put(box, 6)
    a = box.take(2)
    b = box.take(2)
    box.accept([e.id for e in a])
    box.reject([e.id for e in b])
    again = box.take(10)
    assert [e.payload for e in again] == [b"p2", b"p3", b"p4", b"p5"]
    assert box.stats().depth == 4


def test_partial_accept_keeps_the_rest(make: Factory) -> None:
    box = make()
    _put(box, 4)
    batch = box.take(4)
    box.accept([batch[0].id, batch[2].id])
    box.reject([batch[1].id, batch[3].id])
    assert [e.payload for e in box.take(10)] == [b"p1", b"p3"]


def test_stats_report_depth_bytes_and_oldest(make: Factory) -> None:
    box = make()
    assert box.stats().depth == 0 and box.stats().oldest_ms is None
    _put(box, 3, start=100)
    st = box.stats()
    assert st.depth == 3
    assert st.oldest_ms == 100
    assert st.bytes > 0


def test_full_outbox_drops_measurements_oldest_first_and_keeps_energy(make: Factory) -> None:
    box = make(2_000)
    energy = _put(box, 10, Kind.ENERGY)
    _put(box, 40, Kind.MEASUREMENT, start=1000)  # far more than fits
    kept = box.take(1000)
    kinds = [e.kind for e in kept]
    assert [e.id for e in kept if e.kind is Kind.ENERGY] == energy  # every energy record
    measurements = [int(e.payload[1:]) for e in kept if e.kind is Kind.MEASUREMENT]
    assert measurements == sorted(measurements)
    assert measurements[-1] == 1039  # the newest survive, the oldest went first
    assert kinds.count(Kind.MEASUREMENT) < 40
    assert box.stats().dropped[Kind.MEASUREMENT] == 40 - kinds.count(Kind.MEASUREMENT)
    assert box.stats().dropped[Kind.ENERGY] == 0


def test_in_flight_messages_are_not_dropped(make: Factory) -> None:
    box = make(1_500)
    _put(box, 5, Kind.MEASUREMENT)
    batch = box.take(5)
    _put(box, 30, Kind.MEASUREMENT, start=100)
    assert box.stats().dropped[Kind.MEASUREMENT] > 0  # room was made ...
    box.reject([e.id for e in batch])
    again = box.take(5)
    assert [e.id for e in again] == [e.id for e in batch]  # ... but not from the batch in flight


def test_live_first_records_and_fresh_measurements_before_the_backlog(make: Factory) -> None:
    """After an outage: what happens now goes out before the hour of stale measurements,
    and records keep their order (energy per device, the last retained status last)."""
    box = make()
    backlog = _put(box, 6, Kind.MEASUREMENT, start=0)  # created 0..5: stale
    e1 = box.put(Kind.ENERGY, "e/1", b"e1", created_ms=3)  # a record of the outage
    fresh = _put(box, 2, Kind.MEASUREMENT, start=100)  # created 100, 101
    st = box.put(Kind.STATUS, "s", b"ok", retain=True, created_ms=100)
    e2 = box.put(Kind.ENERGY, "e/2", b"e2", created_ms=102)
    first = box.take(4, fresh_from_ms=100)
    assert [e.id for e in first] == [e1, *fresh, st]
    second = box.take(3, fresh_from_ms=100)
    assert [e.id for e in second] == [e2, *backlog[:2]]  # then the backlog, oldest first
    box.reject([e.id for e in first])  # a disconnect: back into the queue, same rules
    assert [e.id for e in box.take(10, fresh_from_ms=100)] == [e1, *fresh, st, *backlog[2:]]


def test_without_a_freshness_bound_everything_goes_in_id_order(make: Factory) -> None:
    box = make()
    ids = _put(box, 3, Kind.MEASUREMENT) + _put(box, 2, Kind.ENERGY, start=3)
    assert [e.id for e in box.take(10)] == ids


def test_stats_stay_exact_through_drops_accepts_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = SqliteOutbox(path, 3_000)
    _put(box, 10, Kind.ENERGY)
    _put(box, 40, Kind.MEASUREMENT, start=100)  # drops measurements to make room
    batch = box.take(5)
    box.accept([e.id for e in batch])
    before = box.stats()
    rows = len(box.take(1000))
    assert before.depth == rows  # what the counter says is what is there
    box.close()
    again = SqliteOutbox(path, 3_000)
    after = again.stats()
    assert (after.depth, after.bytes, after.dropped) == (before.depth, before.bytes, before.dropped)
    again.close()


def test_marks_are_stored_with_the_messages(make: Factory) -> None:
    box = make()
    assert box.marks() == {}
    box.put_many([Item(Kind.MEASUREMENT, "t", b"1")], {"seq:m1": 1})
    box.put_many([Item(Kind.MEASUREMENT, "t", b"2")], {"seq:m1": 2, "seq:m2": 7})
    assert box.marks() == {"seq:m1": 2, "seq:m2": 7}


def test_sqlite_marks_survive_reopen_and_roll_back_with_a_failed_put(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = SqliteOutbox(path, 100_000_000)
    box.put_many([Item(Kind.MEASUREMENT, "t", b"1")], {"seq:m1": 1})
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
    with pytest.raises(OutboxError):
        box.put_many([Item(Kind.MEASUREMENT, "t", b"x" * 50_000)] * 4, {"seq:m1": 5})
    box.close()
    box = SqliteOutbox(path, 100_000_000)
    assert box.marks() == {"seq:m1": 1}  # the seq of what was stored, not of what failed
    box.close()


def test_sqlite_survives_reopen_with_unaccepted_batches(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = SqliteOutbox(path, 10_000_000)
    _put(box, 5)
    taken = box.take(3)
    box.accept([taken[0].id])
    box.close()  # two in flight, never accepted: they must come back
    box = SqliteOutbox(path, 10_000_000)
    assert [e.payload for e in box.take(10)] == [b"p1", b"p2", b"p3", b"p4"]
    box.close()


def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    code = f"""
import os, signal, sys
from pathlib import Path
from agent.runtime.outbox import Kind, SqliteOutbox
box = SqliteOutbox(Path({str(path)!r}), 10_000_000)
for i in range(200):  # records are fsync'd at once, measurements within a second
    box.put(Kind.ENERGY if i % 2 else Kind.MEASUREMENT, "t", str(i).encode())
box.take(50)  # in flight when the process dies
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ready" in proc.stdout
    box = SqliteOutbox(path, 10_000_000)
    payloads = [int(e.payload) for e in box.take(1000)]
    box.close()
    assert payloads == list(range(200))
    assert os.path.exists(path)


def test_sqlite_disk_full_is_an_outbox_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    """A full disk (SQLITE_FULL, made here with a page limit) is reported as the outbox's
    own error; the failed transaction leaves nothing half-written and the counters right."""
    box = SqliteOutbox(tmp_path / "o.db", 100_000_000)
    _put(box, 3)
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(OutboxError, match="full"):
        box.put_many([Item(Kind.MEASUREMENT, "t/x", b"x" * 50_000) for _ in range(4)])
    assert box.stats().depth == 3
    assert [e.payload for e in box.take(10)] == [b"p0", b"p1", b"p2"]
    box.close()
