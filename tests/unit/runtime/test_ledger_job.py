"""The ledger inside `run`: a seal runs beside the event loop, never on it.

Sealing an hour reads, hashes and signs every record of it (173 ms for 50 meters
here; seconds on a gateway's core). On the event loop it stopped every poll for
that long; on its worker thread the loop keeps its cadence, and records stored
meanwhile wait in memory (the snapshot is held back by them) until it is done.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from agent.config import parse_config
from agent.contract import Topics
from agent.ledger import keys
from agent.runtime.ledger import LedgerJob
from tests.support.agents import CONFIG, LIBRARY
from tests.support.cli import ROOT
from tests.support.ledger_gateway import energy

HOUR = 3_600_000
T0 = 1_700_000_000_000 // HOUR * HOUR
METERS = 160


def test_a_seal_of_a_big_hour_does_not_stop_the_loop(tmp_path: Path) -> None:
    text = CONFIG.replace("STATE", str(tmp_path)) + "ledger: {period_s: 3600}\n"
    config = parse_config(text, "t.yaml", profiles=LIBRARY)
    keys.init(tmp_path)
    topics = Topics("energy/v1", config.site.id, config.gateway.id)
    job = LedgerJob(config, topics)
    try:
        assert len(job.start(T0)) == 1  # the genesis entry
        # An hour of 160 meters' 1-minute energy records: 9,600 for the seal to cover (the
        # compiled energy line made 6,000 too quick to show anything on a quiet machine).
        for minute in range(60):
            ts = T0 + minute * 60_000
            job.add([energy(topics, f"m{d:03d}", ts, 0.5) for d in range(METERS)])
        assert job.held() == 0

        async def scenario() -> tuple[float, float, int, list[int], int]:
            stop = asyncio.Event()
            lags: list[float] = []
            during: list[float] = []  # wake-ups while the seal runs
            held_during: list[int] = []
            sealing: list[bool] = []
            done: list[bool] = []

            async def ticker() -> None:
                # A poll's cadence: wake every 5 ms; how late is each wake-up?
                while not stop.is_set():
                    due = time.perf_counter() + 0.005
                    await asyncio.sleep(0.005)
                    lags.append(time.perf_counter() - due)
                    if sealing and not done:
                        during.append(lags[-1])
                    if sealing and not held_during:  # a poll's record, while the seal runs
                        job.add([energy(topics, "m000", T0 + HOUR + 60_000, 0.5)])
                        held_during.append(job.held())

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0.02)
            started = time.perf_counter()
            sealing.append(True)
            entries = await job.tick(T0 + HOUR + 200_000, lambda: None)
            took = time.perf_counter() - started
            done.append(True)
            stop.set()
            await task
            return took, max(lags), len(during), held_during, len(entries)

        took, max_lag, woke, held_during, n_entries = asyncio.run(scenario())
        assert n_entries == 1  # the hour, sealed
        assert took > 0.1, f"the seal took {took * 1000:.0f} ms: too small to show anything"
        # On the loop the ticker could not wake while the seal ran (at most once, at its
        # end: lag = the seal's time). Beside it, the loop wakes again and again; how often
        # depends on GIL switches (5 ms) and, on a loaded machine (other test workers),
        # on the OS scheduler, which can hand the GIL back late: a bound on the count and
        # on the worst wake-up, not on the cadence.
        assert woke >= 5, (woke, took)
        assert max_lag < took * 0.75, (max_lag, took)
        # The record stored during the seal waited in memory, counted in `held` (the
        # core's snapshot waits for it), and is in the history once the seal is done.
        assert held_during == [1]
        assert job.held() == 0
        assert job.history.reader.max_id() == 60 * METERS + 1
    finally:
        job.close()


# What a gateway without a ledger key loads: the process starts the job and reports.
WITHOUT_KEY = """
import sys
from agent.config import parse_config
from agent.contract import Topics
from agent.runtime.ledger import LedgerJob
from tests.support.agents import CONFIG, LIBRARY
config = parse_config(CONFIG.replace("STATE", sys.argv[1]), "t.yaml", profiles=LIBRARY)
job = LedgerJob(config, Topics("energy/v1", config.site.id, config.gateway.id))
assert job.start(0) == []
job.close()
print(job.off_reason)
print(sorted({m.split(".")[0] for m in sys.modules} & {"cryptography", "agent"}))
"""


def test_without_a_key_the_ledger_is_off_and_cryptography_stays_unloaded(tmp_path: Path) -> None:
    """`cryptography` costs a running agent ~10 MB of RSS (docs/performance.md, issue 18):
    a gateway with nothing to sign loads none of it, and says why the ledger is off."""
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_KEY, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    reason, loaded = proc.stdout.splitlines()
    assert reason == (
        f"{tmp_path / 'ledger.key'} does not exist: create the gateway's key with "
        "`energy-agent keys init -c CONFIG`"
    )
    assert loaded == "['agent']"
