"""What the user sees on stderr: bad rows, notes, a progress bar, a summary, and why
nothing came out.

Bad rows are listed at the end, in file and line order (the reorder window
finds duplicates and late rows a little after the garbage around them), at
most ``SHOWN`` of them; the counts are always complete. The summary (always,
unless ``--quiet``) says how many rows were read, used and skipped and why,
and what was written per topic. When no record came out, :func:`nothing_out`
names the likely cause (``replay`` then exits 3). The progress bar (rich, on a
terminal only) shows the bytes of input read, rows per second and the time left.
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

from agent.replay.pipeline import Backfill, Topic
from agent.replay.reorder import iso, span
from agent.replay.rows import NQ, QUANTITIES, Skip
from agent.replay.timestamps import SECONDS_BELOW

SHOWN = 1000


def bad_rows(backfill: Backfill, out: TextIO) -> None:
    shown = sorted(backfill.bad)[:SHOWN]
    for b in shown:
        print(f"{backfill.name(b.source)}: {b} — skipped", file=out)
    if backfill.stats.bad > len(shown):
        print(f"... {backfill.stats.bad - len(shown)} more bad rows not shown", file=out)


def summary(backfill: Backfill, seconds: float | None = None) -> str:
    """One line: rows read, used and skipped (by cause), the span, what was written per
    topic; with ``seconds``, the time it took."""
    s = backfill.stats
    files = len(backfill.sources)
    timing = ""
    if seconds is not None:
        rate = s.rows_read / seconds if seconds > 0 else 0.0
        timing = f" in {seconds:.1f} s ({rate:,.0f} rows/s)"
    order = list(Skip)  # ties in the vocabulary's order, so a summary is always the same
    causes = sorted(s.skipped.items(), key=lambda kv: (-kv[1], order.index(kv[0])))
    why = ", ".join(f"{n:,} {cause}" for cause, n in causes)
    skipped = f"{s.bad:,} skipped" + (f" ({why})" if why else "")
    when = (
        f"{iso(s.first_ts)} .. {iso(s.last_ts)}"
        if s.first_ts is not None and s.last_ts is not None
        else "no readings"
    )
    topics = [t for t in Topic if t in backfill.options.topics]
    written = ", ".join(f"{s.messages.get(t.value, 0):,} {t.value}" for t in topics)
    return (
        f"replay: {s.rows_read:,} rows read from {files} file{'s' if files != 1 else ''}"
        f"{timing}: {s.rows_used:,} used, {skipped}; {when}; written: {written}"
    )


#: The topics whose records a replay is run for; measurements count only when asked alone.
_RECORDS = (Topic.ENERGY, Topic.INTENSITY)


def nothing_out(backfill: Backfill) -> str | None:
    """Why no record came out, when none did (None: some did, or none was asked for)."""
    topics = backfill.options.topics
    wanted = [t for t in _RECORDS if t in topics] or [
        t for t in (Topic.MEASUREMENTS,) if t in topics
    ]
    if not wanted or any(backfill.stats.messages.get(t.value) for t in wanted):
        return None
    return f"no {' or '.join(t.value for t in wanted)} record was produced: {_cause(backfill)}"


def _cause(backfill: Backfill) -> str:
    s = backfill.stats
    if s.rows_read == 0:
        return "the input has no rows of readings"
    if s.rows_used == 0:
        keys = s.skipped[Skip.DEVICE] + s.skipped[Skip.QUANTITY] + s.skipped[Skip.NOT_OF_DEVICE]
        if keys == s.bad:
            return (
                "no row matched a device and quantity of the config (see the rows listed "
                "above): use the config's device ids and their profiles' quantity names "
                "(`energy-agent profiles ID` lists them)"
            )
        if s.skipped[Skip.TIMESTAMP] == s.bad:
            return "no row's ts could be read: give Unix milliseconds, seconds or ISO 8601"
        return "every row was skipped (the reasons are listed above)"
    assert s.first_ts is not None and s.last_ts is not None
    if s.last_ts < SECONDS_BELOW:
        return (
            f"the readings' timestamps lie in 1970..1973 ({iso(s.first_ts)} .. "
            f"{iso(s.last_ts)}): Unix seconds read as milliseconds? give the ts column "
            "in Unix milliseconds, seconds or ISO 8601 with its offset"
        )
    if s.rows_counted == 0:
        return _nothing_counted(backfill)
    return (
        f"the readings span only {span(s.last_ts - s.first_ts)} ({iso(s.first_ts)} .. "
        f"{iso(s.last_ts)}): no interval closed; a record needs readings up to its "
        f"interval's end (publish.energy_interval_s is {backfill.site.interval_s} s)"
    )


def _nothing_counted(backfill: Backfill) -> str:
    """Rows were used, none of a quantity the core counts a device by."""
    seen: dict[str, list[str]] = {}
    for key in sorted(backfill.stats.keys):
        device = backfill.vocab.devices[key // NQ]
        seen.setdefault(device, []).append(QUANTITIES[key % NQ].value)
    parts = []
    power_only = False
    for device, quantities in seen.items():
        counted = backfill.site.by_id[device].quantity.value
        parts.append(f"'{device}' is counted by {counted}, the input has {', '.join(quantities)}")
        power_only |= counted != "active_power_kw" and "active_power_kw" in quantities
    hint = (
        "; a counter profile fed only power rows: give the counter's rows too, or describe "
        "the meter by inline registers holding only active_power_kw (the core then "
        "integrates the power)"
        if power_only
        else ""
    )
    return "no row carries a quantity the core counts: " + "; ".join(parts) + hint


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
