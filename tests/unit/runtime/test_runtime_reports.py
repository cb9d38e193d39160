"""The scheduled reports inside `run`: when the child starts, what a failed one shows,
and that it does not outlive the agent (the run across midnight that writes one is
tests/integration/test_run_reports.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config import parse_config
from agent.config.models import AgentConfig
from agent.core.engine import load_kernel
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from agent.runtime.reports import STOP_S, ReportJob, next_run_ms
from drivers.profile import ProfileLibrary

load_kernel()
LIBRARY = ProfileLibrary()

CONFIG = """
site: {id: plant-t, timezone: Asia/Shanghai}
gateway: {id: gw-t}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices:
  - {id: m1, bus: bus-1, unit: 1, profile: eastron-sdm630}
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
report: {schedule: [day, month]EXTRA}
"""


def config_in(tmp_path: Path, extra: str = "") -> tuple[AgentConfig, Path]:
    text = CONFIG.replace("STATE", str(tmp_path / "state")).replace("EXTRA", extra)
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return parse_config(text, str(path), profiles=LIBRARY), path


def ms(zone: str, *when: int) -> int:
    return int(dt.datetime(*when, tzinfo=ZoneInfo(zone)).timestamp() * 1000)  # type: ignore[misc]


def test_due_at_each_local_midnight_plus_the_delay() -> None:
    sh = "Asia/Shanghai"
    delay = 900_000  # 00:15
    # 23:59 on the 15th: the 16th at 00:15, Shanghai time (16:15 UTC on the 15th).
    assert next_run_ms(ms(sh, 2026, 12, 15, 23, 59), sh, delay) == ms(sh, 2026, 12, 16, 0, 15)
    assert ms(sh, 2026, 12, 16, 0, 15) == ms("UTC", 2026, 12, 15, 16, 15)
    # 00:10: today's 00:15 is still ahead; 00:15 itself: tomorrow's.
    assert next_run_ms(ms(sh, 2026, 12, 16, 0, 10), sh, delay) == ms(sh, 2026, 12, 16, 0, 15)
    assert next_run_ms(ms(sh, 2026, 12, 16, 0, 15), sh, delay) == ms(sh, 2026, 12, 17, 0, 15)
    # A day of 23 hours (Berlin, 29 March 2026): midnight to midnight is 23 h.
    be = "Europe/Berlin"
    got = next_run_ms(ms(be, 2026, 3, 29, 12, 0), be, 0)
    assert got == ms(be, 2026, 3, 30, 0, 0) == ms(be, 2026, 3, 29, 0, 0) + 23 * 3_600_000


def test_without_a_schedule_or_with_a_timer_the_agent_starts_nothing(tmp_path: Path) -> None:
    config, path = config_in(tmp_path, ", schedule_by: timer")
    job = ReportJob(config, path)
    job.start(0)
    assert not job.on and job.next_ms is None
    status = job.status()
    assert status is not None and status.by == "timer"
    job.tick(10**13)
    assert not job.running


async def test_a_failed_run_is_logged_and_in_the_agents_health(tmp_path: Path) -> None:
    # No history in state_dir yet: the real `report --due` refuses (exit 2), says why.
    config, path = config_in(tmp_path)
    agent = Agent(config, LIBRARY, outbox=MemoryOutbox(1_000_000), config_file=path)
    now = ms("Asia/Shanghai", 2026, 12, 16, 0, 20)
    agent.reports.start(now - config.report.schedule_delay_s * 1000)
    agent.reports.tick(now)
    assert agent.reports.running
    for _ in range(600):
        if not agent.reports.running:
            break
        await asyncio.sleep(0.1)
    status = agent.status(now).reports
    assert status is not None and not status.running
    assert status.last_exit == 2 and status.last_started_ms == now
    assert status.error is not None and "history.db" in status.error, status
    assert status.next_ms == ms("Asia/Shanghai", 2026, 12, 17, 0, 15)
    health = agent.status(now).health
    assert health.state == "degraded"
    assert any(p.startswith("scheduled reports failing") for p in health.problems), health


class _Slow(ReportJob):
    """A child that outlasts the agent (a month's report on a slow gateway)."""

    def command(self, now_ms: int) -> list[str]:
        return [sys.executable, "-c", "import time; print('working', flush=True); time.sleep(60)"]


async def test_the_child_runs_niced_and_is_stopped_with_the_agent(tmp_path: Path) -> None:
    config, path = config_in(tmp_path)
    job = _Slow(config, path)
    job.start(0)
    job.tick(10**13)
    for _ in range(400):
        if job.last_line == "working":
            break
        await asyncio.sleep(0.05)
    proc = job._proc
    assert proc is not None
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    t = time.monotonic()
    await job.close()
    assert time.monotonic() - t < STOP_S
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
