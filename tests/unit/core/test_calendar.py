"""Local days and months: the boundaries `today` and `month` use, from the IANA zone.

Every expected instant is written in UTC by hand from the zone's published rules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from agent.core.calendar import SiteCalendar

H = 3_600_000


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("zone", "day", "start_utc", "hours"),
    [
        # Berlin: CET (+1) / CEST (+2); local midnight Mar 31 = 23:00 UTC Mar 30
        ("Europe/Berlin", date(2024, 3, 30), (2024, 3, 29, 23), 24),
        ("Europe/Berlin", date(2024, 3, 31), (2024, 3, 30, 23), 23),  # 02:00 -> 03:00
        ("Europe/Berlin", date(2024, 4, 1), (2024, 3, 31, 22), 24),
        ("Europe/Berlin", date(2024, 10, 27), (2024, 10, 26, 22), 25),  # 03:00 -> 02:00
        ("Europe/Berlin", date(2024, 10, 28), (2024, 10, 27, 23), 24),
        # New York: EST (-5) / EDT (-4)
        ("America/New_York", date(2024, 3, 10), (2024, 3, 10, 5), 23),
        ("America/New_York", date(2024, 11, 3), (2024, 11, 3, 4), 25),
        # Shanghai: +8 all year, no DST
        ("Asia/Shanghai", date(2024, 3, 31), (2024, 3, 30, 16), 24),
        ("Asia/Shanghai", date(2024, 10, 27), (2024, 10, 26, 16), 24),
        ("UTC", date(2024, 2, 29), (2024, 2, 29, 0), 24),
    ],
)
def test_day_bounds(zone: str, day: date, start_utc: tuple[int, ...], hours: int) -> None:
    cal = SiteCalendar(zone)
    start = utc_ms(*start_utc)
    assert cal.day_start_ms(day) == start
    # Any instant of the day gives the same bounds: the first and the last millisecond.
    assert cal.day_bounds(start) == (start, start + hours * H)
    assert cal.day_bounds(start + hours * H - 1) == (start, start + hours * H)
    assert cal.local_date(start) == day
    assert cal.local_date(start + hours * H - 1) == day
    assert cal.local_date(start + hours * H) != day


def test_half_hour_dst_day_is_24_5_hours() -> None:
    # Lord Howe Island: +11 in summer, +10:30 in winter; 2024-04-07 02:00 -> 01:30.
    # Local midnight Apr 7 = 13:00 UTC Apr 6 (+11); Apr 8 = 13:30 UTC Apr 7 (+10:30).
    cal = SiteCalendar("Australia/Lord_Howe")
    start, end = cal.day_bounds(utc_ms(2024, 4, 7, 0))
    assert start == utc_ms(2024, 4, 6, 13)
    assert end - start == 24 * H + H // 2


def test_midnight_that_does_not_exist_starts_the_day_at_the_jump() -> None:
    # Santiago jumps 2024-09-08 00:00 -04 -> 01:00 -03 (04:00 UTC): there is no local
    # midnight; the day starts at 01:00 local and is 23 h long (to 03:00 UTC Sep 9).
    cal = SiteCalendar("America/Santiago")
    assert cal.day_start_ms(date(2024, 9, 8)) == utc_ms(2024, 9, 8, 4)
    start, end = cal.day_bounds(utc_ms(2024, 9, 8, 12))
    assert (start, end) == (utc_ms(2024, 9, 8, 4), utc_ms(2024, 9, 9, 3))
    # the day before keeps its 24 hours: 04:00 UTC Sep 7 to 04:00 UTC Sep 8
    assert cal.day_bounds(utc_ms(2024, 9, 7, 12)) == (utc_ms(2024, 9, 7, 4), utc_ms(2024, 9, 8, 4))


def test_a_record_at_local_midnight_belongs_to_the_day_before() -> None:
    # What SiteCore relies on: the record ending at local midnight describes the day
    # that just ended, so its day is local_date(ts - 1).
    cal = SiteCalendar("Asia/Shanghai")
    midnight = utc_ms(2024, 1, 31, 16)  # 2024-02-01 00:00 +08
    assert cal.local_date(midnight) == date(2024, 2, 1)
    assert cal.local_date(midnight - 1) == date(2024, 1, 31)


@pytest.mark.parametrize(
    ("zone", "at", "start", "end"),
    [
        # Shanghai: February 2024 (leap year) = 29 days from 16:00 UTC Jan 31
        ("Asia/Shanghai", (2024, 2, 10), (2024, 1, 31, 16), (2024, 2, 29, 16)),
        # the last millisecond of January local is still January
        ("Asia/Shanghai", (2024, 1, 31, 15, 59, 59, 999000), (2023, 12, 31, 16), (2024, 1, 31, 16)),
        # December -> January, across the year
        ("Asia/Shanghai", (2024, 12, 31, 20), (2024, 12, 31, 16), (2025, 1, 31, 16)),
        # Berlin March 2024: starts at +1 (23:00 UTC Feb 29), ends at +2 (22:00 UTC Mar 31),
        # so it is 31 x 24 - 1 = 743 hours long
        ("Europe/Berlin", (2024, 3, 15), (2024, 2, 29, 23), (2024, 3, 31, 22)),
        # Berlin October 2024: 31 x 24 + 1 = 745 hours
        ("Europe/Berlin", (2024, 10, 15), (2024, 9, 30, 22), (2024, 10, 31, 23)),
    ],
)
def test_month_bounds(
    zone: str, at: tuple[int, ...], start: tuple[int, ...], end: tuple[int, ...]
) -> None:
    cal = SiteCalendar(zone)
    at_ms = int(datetime(*at, tzinfo=UTC).timestamp() * 1000)
    assert cal.month_bounds(at_ms) == (utc_ms(*start), utc_ms(*end))


def test_berlin_month_lengths_around_dst() -> None:
    cal = SiteCalendar("Europe/Berlin")
    a, b = cal.month_bounds(utc_ms(2024, 3, 15))
    assert b - a == (31 * 24 - 1) * H
    a, b = cal.month_bounds(utc_ms(2024, 10, 15))
    assert b - a == (31 * 24 + 1) * H


def test_month_starts_between() -> None:
    cal = SiteCalendar("Asia/Shanghai")
    # From the month containing the start to the first month start past the end.
    got = cal.month_starts_between(utc_ms(2024, 1, 10), utc_ms(2024, 3, 5))
    assert got == [
        utc_ms(2023, 12, 31, 16),  # Jan 1 local
        utc_ms(2024, 1, 31, 16),  # Feb 1
        utc_ms(2024, 2, 29, 16),  # Mar 1
        utc_ms(2024, 3, 31, 16),  # Apr 1: past the end
    ]
    # a start on the local month start itself begins with that month
    assert cal.month_starts_between(utc_ms(2024, 1, 31, 16), utc_ms(2024, 2, 1))[0] == utc_ms(
        2024, 1, 31, 16
    )


@pytest.mark.parametrize(
    ("zone", "interval_min", "offset"),
    [
        ("Asia/Kolkata", 60, 30),  # UTC+5:30: local midnight is 18:30 UTC
        ("Australia/Adelaide", 60, 30),  # +10:30 in January (DST), +9:30 in July
        ("Asia/Kathmandu", 60, 15),  # +5:45: midnight at 18:15 UTC
        ("Asia/Kathmandu", 30, 15),
        ("Asia/Kathmandu", 15, 0),  # 345 minutes = 23 quarter hours
        ("America/St_Johns", 60, 30),  # -3:30: -210 mod 60
        ("Asia/Shanghai", 60, 0),
        ("Europe/Berlin", 15, 0),
        ("UTC", 60, 0),
    ],
)
def test_the_alignment_offset_puts_local_midnight_on_an_interval_end(
    zone: str, interval_min: int, offset: int
) -> None:
    cal = SiteCalendar(zone)
    assert cal.align_offset_minutes(interval_min) == offset
    # every local midnight of the year, DST days included, is an interval end
    for month in range(1, 13):
        for d in (1, 15):
            slot = cal.day_start_ms(date(2024, month, d)) // 60_000
            assert (slot - offset) % interval_min == 0, (zone, month, d)
