"""Local days and months in the site's time zone, as Unix-millisecond boundaries.

The core counts in UTC slots; "today" and "this month" are local. A local day
is 23, 24 or 25 hours long around DST changes, and the boundaries here come
from zoneinfo, never from adding 86,400 s.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


class SiteCalendar:
    def __init__(self, timezone: str) -> None:
        self.tz = ZoneInfo(timezone)

    def align_offset_minutes(self, interval_minutes: int) -> int:
        """Where intervals of ``interval_minutes`` must end so that every local midnight
        is an interval end: the UTC minute of local midnight (minus the zone's offset)
        modulo the interval. 0 wherever the offset is a whole number of intervals; 30
        for hourly intervals in Asia/Kolkata (midnight at 18:30 UTC), 15 in
        Asia/Kathmandu (18:15 UTC). Taken from the offset in January: a DST shift of a
        whole hour moves midnight by whole intervals of up to an hour."""
        jan = datetime(2024, 1, 1, tzinfo=self.tz).utcoffset() or timedelta(0)
        return -int(jan.total_seconds() // 60) % interval_minutes

    def local_date(self, ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, self.tz).date()

    def day_start_ms(self, day: date) -> int:
        return _ms(datetime(day.year, day.month, day.day, tzinfo=self.tz))

    def day_bounds(self, ms: int) -> tuple[int, int]:
        """[start, end) of the local day containing ``ms``."""
        day = self.local_date(ms)
        return self.day_start_ms(day), self.day_start_ms(day + timedelta(days=1))

    def month_start_ms(self, year: int, month: int) -> int:
        return _ms(datetime(year, month, 1, tzinfo=self.tz))

    def month_bounds(self, ms: int) -> tuple[int, int]:
        day = self.local_date(ms)
        nxt = (day.year + (day.month == 12), day.month % 12 + 1)
        return self.month_start_ms(day.year, day.month), self.month_start_ms(*nxt)

    def month_starts_between(self, start_ms: int, end_ms: int) -> list[int]:
        """Local month starts from the month containing ``start_ms`` up to past ``end_ms``."""
        out = []
        first = self.local_date(start_ms)
        y, m = first.year, first.month
        while True:
            ms = self.month_start_ms(y, m)
            out.append(ms)
            if ms > end_ms:
                return out
            y, m = (y + (m == 12), m % 12 + 1)


def _ms(dt: datetime) -> int:
    # datetime(..., tzinfo=ZoneInfo) at a local midnight that does not exist (a DST
    # jump at 00:00, e.g. America/Santiago) resolves forward, which is what we want.
    return int(dt.timestamp() * 1000)
