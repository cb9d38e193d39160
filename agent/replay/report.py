"""What the user sees on stderr: bad rows, notes, a progress bar, a summary.

Bad rows are listed at the end, in file and line order (the reorder window
finds duplicates and late rows a little after the garbage around them), at
most ``SHOWN`` of them; the count is always complete. The progress bar (rich,
on a terminal only) shows the bytes of input read, rows per second and the
time left.
"""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agent.replay.pipeline import Backfill
from agent.replay.reorder import iso

SHOWN = 1000


def bad_rows(backfill: Backfill, out: TextIO) -> None:
    shown = sorted(backfill.bad)[:SHOWN]
    for b in shown:
        print(f"{backfill.name(b.source)}: {b} — skipped", file=out)
    if backfill.stats.bad > len(shown):
        print(f"... {backfill.stats.bad - len(shown)} more bad rows not shown", file=out)


def counts_line(backfill: Backfill, label: str) -> str:
    s = backfill.stats
    return f"{label}: {s.bad} bad row{'s' if s.bad != 1 else ''} skipped, {s.rows_used} used"


def summary(backfill: Backfill, seconds: float) -> str:
    s = backfill.stats
    rate = s.rows_read / seconds if seconds > 0 else 0.0
    records = ", ".join(f"{n:,} {k}" for k, n in sorted(s.messages.items())) or "no records"
    span = (
        f"{iso(s.first_ts)} .. {iso(s.last_ts)}"
        if s.first_ts is not None and s.last_ts is not None
        else "no readings"
    )
    return (
        f"replay: {len(backfill.sources)} file{'s' if len(backfill.sources) != 1 else ''}, "
        f"{s.rows_read:,} rows in {seconds:.1f} s ({rate:,.0f} rows/s); "
        f"{s.rows_used:,} used, {s.bad:,} bad; {span}; {records}"
    )


class Bar:
    """A rich progress bar on stderr, refreshed at most a few times a second."""

    def __init__(self, backfill: Backfill, enabled: bool) -> None:
        self.backfill = backfill
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._next = 0.0
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]replay"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(
                "replay", total=max(backfill.stats.bytes_total, 1), rate=""
            )
            self._progress.start()

    def tick(self, extra: str = "") -> None:
        if self._progress is None or self._task is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.2
        s = self.backfill.stats
        rate = s.rows_read / max(now - self.started, 1e-6)
        self._progress.update(
            self._task,
            completed=self.backfill.progress(),
            rate=f"{s.rows_read:,} rows {rate:,.0f}/s, {s.bad:,} bad{extra}",
        )

    def close(self) -> None:
        if self._progress is not None and self._task is not None:
            self._next = 0.0
            self.tick()
            self._progress.update(self._task, completed=self.backfill.stats.bytes_total)
            self._progress.stop()
