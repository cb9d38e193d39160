"""Which reports are due: the previous day's and the previous month's, in the site's zone.

``energy-agent report --due -c CONFIG`` (started by `run` after each local midnight,
agent/runtime/reports.py, or daily by a timer; docs/report.md) writes each period
of ``report.schedule`` that has ended and has no report yet to
``state_dir/reports/<period>/``: a missed day is made up on the next run, a report
already written is left alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

#: How many past periods a run looks back for missing reports.
LOOK_BACK = {"day": 7, "month": 2}


def due(now_ms: int, zone: str, kinds: Sequence[str]) -> list[str]:
    """The ``--period`` texts of the ended periods of ``kinds`` ("day", "month"), newest
    last, looking back :data:`LOOK_BACK` periods of each."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(zone)).date()
    out: list[str] = []
    if "month" in kinds:
        y, m = today.year, today.month
        months = []
        for _ in range(LOOK_BACK["month"]):
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
            months.append(f"{y}-{m:02d}")
        out += reversed(months)
    if "day" in kinds:
        for back in range(LOOK_BACK["day"], 0, -1):
            d = (today - dt.timedelta(days=back)).isoformat()
            out.append(f"{d}..{d}")
    return out
