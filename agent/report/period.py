"""``--period``: a year, a month, an ISO week or a range of days, in the site's zone.

A report's period is local time: the plant's month starts at its own midnight,
and so do its days in the daily table. Records are filed under their interval's
end, so the period holds the records with ``start < ts <= end`` (the history's
convention): the interval that ends at midnight on the 1st belongs to the month
before.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from agent.report import ReportError

_YEAR = re.compile(r"(\d{4})\Z")
_MONTH = re.compile(r"(\d{4})-(\d{2})\Z")
_WEEK = re.compile(r"(\d{4})-W(\d{2})\Z")
_RANGE = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})\Z")

HELP = (
    "2026 (a year, by month), 2026-11 (a month), 2026-W47 (an ISO week) or "
    "2026-11-01..2026-11-15 (days, both included)"
)


class PeriodError(ReportError):
    """A ``--period`` that is none of the forms; the message lists them."""


@dataclass(frozen=True)
class Period:
    text: str
    #: "year", "month", "week" or "days".
    kind: str
    #: The first day and the day after the last, local.
    first: dt.date
    stop: dt.date
    zone: ZoneInfo

    def _ms(self, day: dt.date) -> int:
        t = dt.datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return int(t.timestamp() * 1000)

    @property
    def start_ms(self) -> int:
        return self._ms(self.first)

    @property
    def end_ms(self) -> int:
        return self._ms(self.stop)

    @property
    def hours(self) -> float:
        """Its length in hours (a day of a clock change has 23 or 25)."""
        return (self.end_ms - self.start_ms) / 3_600_000

    def days(self) -> list[dt.date]:
        n = (self.stop - self.first).days
        return [self.first + dt.timedelta(days=i) for i in range(n)]

    def day_ms(self, day: dt.date) -> tuple[int, int]:
        """A local day's span in Unix ms."""
        return self._ms(day), self._ms(day + dt.timedelta(days=1))

    def months(self) -> list[tuple[int, int]]:
        """The calendar months it touches, (year, month), in order."""
        out: list[tuple[int, int]] = []
        for d in self.days():
            if not out or out[-1] != (d.year, d.month):
                out.append((d.year, d.month))
        return out


def _date(text: str, whole: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"--period '{whole}': {text} is not a date") from None


def parse_period(text: str, zone: str) -> Period:
    """The period ``text`` names, in ``zone`` (PeriodError naming the forms)."""
    tz = ZoneInfo(zone)
    text = text.strip()
    if m := _YEAR.match(text):
        y = int(m[1])
        first, stop, kind = dt.date(y, 1, 1), dt.date(y + 1, 1, 1), "year"
    elif m := _MONTH.match(text):
        y, mo = int(m[1]), int(m[2])
        if not 1 <= mo <= 12:
            raise PeriodError(f"--period '{text}': month {mo} is not 1..12")
        first = dt.date(y, mo, 1)
        stop = dt.date(y + (mo == 12), mo % 12 + 1, 1)
        kind = "month"
    elif m := _WEEK.match(text):
        y, w = int(m[1]), int(m[2])
        try:
            first = dt.date.fromisocalendar(y, w, 1)
        except ValueError:
            raise PeriodError(f"--period '{text}': {y} has no ISO week {w}") from None
        stop, kind = first + dt.timedelta(days=7), "week"
    elif m := _RANGE.match(text):
        first, last = _date(m[1], text), _date(m[2], text)
        if last < first:
            raise PeriodError(f"--period '{text}': the last day comes before the first")
        stop, kind = last + dt.timedelta(days=1), "days"
    else:
        raise PeriodError(f"--period '{text}': give {HELP}")
    if first.year < 1971:
        raise PeriodError(f"--period '{text}': before 1971 no gateway recorded anything")
    return Period(text, kind, first, stop, tz)
