"""``--period`` in the site's zone: the forms, their spans, and the messages."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.report.period import PeriodError, parse_period

SHANGHAI = 8 * 3_600_000


def ms(y: int, m: int, d: int) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "first", "stop", "kind"),
    [
        ("2026-11", (2026, 11, 1), (2026, 12, 1), "month"),
        ("2026-12", (2026, 12, 1), (2027, 1, 1), "month"),
        ("2026", (2026, 1, 1), (2027, 1, 1), "year"),
        # ISO week 47 of 2026 runs Monday 16 to Sunday 22 November
        ("2026-W47", (2026, 11, 16), (2026, 11, 23), "week"),
        ("2026-11-01..2026-11-15", (2026, 11, 1), (2026, 11, 16), "days"),
        ("2026-11-05..2026-11-05", (2026, 11, 5), (2026, 11, 6), "days"),
    ],
)
def test_forms_in_the_sites_zone(text: str, first: tuple, stop: tuple, kind: str) -> None:
    p = parse_period(text, "Asia/Shanghai")
    assert p.kind == kind
    assert (p.first, p.stop) == (dt.date(*first), dt.date(*stop))
    # local midnight is 16:00 UTC the day before
    assert p.start_ms == ms(*first) - SHANGHAI
    assert p.end_ms == ms(*stop) - SHANGHAI
    assert len(p.days()) == (p.stop - p.first).days


def test_a_month_with_a_clock_change_has_its_real_hours() -> None:
    # Berlin, October 2026: the clocks go back on the 25th, 31 x 24 + 1 hours
    p = parse_period("2026-10", "Europe/Berlin")
    assert p.hours == 31 * 24 + 1
    assert p.months() == [(2026, 10)]
    assert parse_period("2026", "UTC").months()[::11] == [(2026, 1), (2026, 12)]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2026-13", "month 13 is not 1..12"),
        ("2026-W54", "2026 has no ISO week 54"),
        ("2026-11-15..2026-11-01", "the last day comes before the first"),
        ("2026-02-30..2026-03-01", "2026-02-30 is not a date"),
        ("last month", "2026-W47 (an ISO week)"),
        ("1960", "before 1971"),
    ],
)
def test_wrong_periods_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(PeriodError) as info:
        parse_period(text, "UTC")
    assert words in str(info.value)
