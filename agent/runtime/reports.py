"""The scheduled reports inside `run`: yesterday's and last month's, written by a child.

With ``report.schedule`` set (and ``report.schedule_by: run``, the default), the
agent starts ``energy-agent report --due -c CONFIG`` itself a little after each
local midnight (``report.schedule_delay_s``; once too at that delay after its own
start, which makes up the days it was off). The report reads the whole period's
history (a month is millions of records) and lays out files: work the event loop
must never wait for, and memory the agent should not keep. So it runs as a child
process at a lower CPU priority (nice 10): the loop only reads its output lines as
they come, its memory is returned when it exits, one runs at a time, and it is
terminated when the agent stops. What it said and how it ended go to the log and
to the status (``reports``); a failed run is a problem of the agent's health
until one succeeds. ``--due`` writes only what is missing, so a run that was
stopped half way is finished by the next. A central site that reports from its
store runs ``--due`` from a timer instead (``schedule_by: timer``, docs/report.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.config.models import AgentConfig
from agent.status import ReportsStatus

log = logging.getLogger(__name__)

#: The child's CPU priority: below the polls, which must keep their seconds.
NICE = 10
#: Exit codes of `report --due` that are not failures: written, or nothing to write.
FINE = (0, 3)
#: Seconds a child has to stop after SIGTERM before it is killed.
STOP_S = 5.0


def next_run_ms(now_ms: int, zone: str, delay_ms: int) -> int:
    """The first local midnight plus the delay after ``now_ms``, in Unix ms."""
    tz = ZoneInfo(zone)
    local = dt.datetime.fromtimestamp(now_ms / 1000, tz)
    day = local.date()
    while True:  # today's, if its delay has not passed yet; else the next day's
        midnight = dt.datetime.combine(day, dt.time(), tz)
        at = int(midnight.timestamp() * 1000) + delay_ms
        if at > now_ms:
            return at
        day += dt.timedelta(days=1)


class ReportJob:
    """Starts `report --due` when due (:meth:`tick`, once a second from the agent)."""

    def __init__(self, config: AgentConfig, config_file: Path | None) -> None:
        rep = config.report
        self.zone = config.site.timezone
        self.schedule = tuple(rep.schedule)
        self.delay_ms = int(rep.schedule_delay_s * 1000)
        self.config_file = config_file
        self.folder = Path(config.state_dir) / "reports"
        self.on = bool(rep.schedule) and rep.schedule_by == "run" and config_file is not None
        self.next_ms: int | None = None
        self.last_started_ms: int | None = None
        self.last_exit: int | None = None
        self.last_line: str | None = None
        self.error: str | None = None
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def start(self, now_ms: int) -> None:
        """The first run is ``schedule_delay_s`` after the agent's start (made-up days)."""
        self._started = True
        if not self.on:
            if self.schedule and self.config_file is None:
                log.info("report.schedule: not written by this agent (no config file)")
            return
        self.next_ms = now_ms + self.delay_ms
        log.info(
            "scheduled reports (%s) to %s/ after each local midnight + %d s",
            ", ".join(self.schedule), self.folder, self.delay_ms // 1000,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def tick(self, now_ms: int) -> None:
        """Start the child if it is due and none runs (a long run delays the next one)."""
        if not self._started:
            self.start(now_ms)
        if self.next_ms is None or now_ms < self.next_ms or self.running:
            return
        self.next_ms = next_run_ms(now_ms, self.zone, self.delay_ms)
        self.last_started_ms = now_ms
        self._task = asyncio.create_task(self._run(now_ms), name="scheduled-reports")

    def command(self, now_ms: int) -> list[str]:
        assert self.config_file is not None
        return [
            sys.executable, "-m", "agent.cli.main", "report", "--due",
            "-c", str(self.config_file), "--now-ms", str(now_ms),
        ]  # fmt: skip

    async def _run(self, now_ms: int) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(now_ms),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            self._ended(None, f"cannot start `report --due`: {exc}")
            return
        self._proc = proc
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
        except OSError as exc:  # it may have exited already; it runs at our priority then
            log.info("scheduled reports: nice %d refused: %s", NICE, exc)
        log.info("scheduled reports: `report --due` started (pid %d)", proc.pid)
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.last_line = line
                log.info("scheduled reports: %s", line)
        code = await proc.wait()
        self._proc = None
        self._ended(code, None if code in FINE else f"`report --due` exited {code}")

    def _ended(self, code: int | None, error: str | None) -> None:
        self.last_exit = code
        if error is not None and self.last_line:
            error = f"{error}: {self.last_line}"
        self.error = error
        if error is None:
            log.info("scheduled reports: done (exit %s)", code)
        else:
            log.warning("scheduled reports failed: %s", error)

    async def close(self) -> None:
        """The agent stops: a running child is terminated (killed after ``STOP_S``)."""
        proc, task = self._proc, self._task
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            log.info("scheduled reports: `report --due` stopped with the agent")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> ReportsStatus | None:
        if not self.schedule:
            return None
        return ReportsStatus(
            schedule=self.schedule,
            by="run" if self.on else "timer",
            next_ms=self.next_ms,
            running=self.running,
            last_started_ms=self.last_started_ms,
            last_exit=self.last_exit,
            last_line=self.last_line,
            error=self.error,
        )
