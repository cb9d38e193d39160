"""kill -9 between the records' commit and the core's snapshot: no interval twice.

The core's snapshot is written after the records it emitted are on disk (never
before: a restart would never emit them). A kill in between left the outbox
holding records the restored core had not emitted yet: it derived those
intervals again from the meters' counters, with other numbers and another
quality, and the database got two points for one interval. The last stored
interval of each record kind and device is now an outbox mark committed with
the records (as the measurements' seq is), and a restarted core's records for
an interval already stored are not stored again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.support.agents import CONFIG, LIBRARY, feed_spare

REPO = Path(__file__).resolve().parents[3]
S = 1000
T0 = 1_700_000_000_000 // 60_000 * 60_000  # a whole minute


def feed(agent: Agent, readings: list[tuple[int, float]]) -> None:
    feed_spare(agent, T0, readings)


def energy_records(agent: Agent) -> dict[int, list[dict[str, object]]]:
    out: dict[int, list[dict[str, object]]] = defaultdict(list)
    for e in agent.outbox.take(100_000):
        if e.topic.endswith("/spare/energy"):
            payload = json.loads(e.payload)
            out[payload["ts"]].append(payload)
    return out


#: The first run, in a process of its own that kills itself (SIGKILL) right after the
#: 0:00-1:00 interval's records are committed, before any later snapshot is written.
FIRST_RUN = """
import os, signal, sys
from pathlib import Path
from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.support.agents import CONFIG, LIBRARY
from tests.support.agents import feed_spare
config = parse_config(CONFIG.replace("STATE", sys.argv[1]), "t.yaml", profiles=LIBRARY)
first = Agent(config, LIBRARY)
first.snapshots.restore()
# 1 kWh between 0:30 and 0:40, flat otherwise; the snapshot is taken at 0:30.
T0 = int(sys.argv[2])
feed_spare(first, T0, [(0, 1000.0), (10, 1000.0), (20, 1000.0), (30, 1000.0)])
assert first.snapshot()
feed_spare(first, T0, [(40, 1001.0), (50, 1001.0), (60, 1001.0)])  # closes 0:00-1:00
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_after_the_records_commit_does_not_publish_an_interval_twice(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_RUN, str(tmp_path), str(T0)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    second = Agent(config, LIBRARY)
    second.snapshots.restore()  # the core as it was at 0:30, the outbox as at 1:00
    # Flat from 0:40 on; the first poll after the restart at 1:15.
    feed(second, [(75, 1001.0), (85, 1001.0), (95, 1001.0), (105, 1001.0), (125, 1001.0)])
    second.commit()
    records = energy_records(second)
    # The first run's record of 0:00-1:00 survived the kill: 1 kWh.
    assert [p["energy_kwh"] for p in records[T0 + 60 * S]] == [1.0]
    # The restored core derived 0:00-1:00 again from 0:30 (1000) to 1:15 (1001): 30 of
    # those 45 s fall in it, 0.667 kWh instead of the 1.0 stored. Not stored again:
    # one record per interval, the first one's.
    twice = {ts: ps for ts, ps in records.items() if len(ps) > 1}
    assert twice == {}
    # Dropped: that energy record and the site's intensity record of 0:00-1:00.
    assert second.snapshots.stored.dropped == 2
    # The next interval, 1:00-2:00, is the restored core's: 1:00-1:15 of the spread
    # (15/45 x 1 kWh = 0.333), then flat.
    assert round(records[T0 + 120 * S][0]["energy_kwh"], 3) == 0.333


def test_a_revision_of_a_stored_interval_is_kept_a_repeat_of_its_first_record_is_not() -> None:
    """The mark drops what a restarted core derives again (rev 0 of a stored interval);
    a revision (rev >= 1, docs/core.md) is late data changing a published record and
    must go out, although its interval is older than the mark."""
    from agent.contract import Message, MessageKind
    from agent.runtime.snapshots import StoredIntervals

    def site(ts: int, rev: int) -> Message:
        return Message(MessageKind.INTENSITY, "t/intensity", {"ts": ts, "rev": rev, "windows": {}})

    stored = StoredIntervals()
    assert stored.keep(site(T0, 0)) and stored.keep(site(T0 + 60 * S, 0))
    assert stored.keep(site(T0, 1))  # late data for T0: the revision goes out
    assert stored.keep(site(T0 + 60 * S, 1))
    assert not stored.keep(site(T0, 0))  # a restarted core's first record again: dropped
    assert stored.dropped == 1
