"""Time-of-use tariffs as data: the shipped example, and files checked with their lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.report import ReportError
from agent.report.tariff import Band, load_tariff
from confdoc.errors import DocumentError


def test_the_shipped_example_has_a_band_for_every_hour_of_every_month() -> None:
    t = load_tariff("example-cn-tou")
    assert len(t.table) == 12 * 24
    assert t.band(11, 3) is Band.VALLEY
    assert t.band(11, 10) is Band.PEAK
    assert t.band(11, 20) is Band.PEAK
    assert t.band(7, 20) is Band.SHARP  # summer: the evening's sharp band comes first
    assert t.price(Band.SHARP) > t.price(Band.PEAK) > t.price(Band.FLAT) > t.price(Band.VALLEY)
    assert t.model.demand_charge_per_kw_month == 12
    assert "Illustrative" in t.model.source


BASE = """\
name: test
source: a test
prices: {peak: 1.0, valley: 0.3}
seasons:
  - months: "1-12"
    hours:
"""


@pytest.mark.parametrize(
    ("hours", "words", "line"),
    [
        ('      peak: "8-20"\n      valley: "0-8,21-23"\n', "hour 8 is in both", 5),
        ('      peak: "8-20"\n      valley: "0-6,21-23"\n', "hours [7] are in no band", 5),
        ('      peak: "8-20"\n      flat: "0-7,21-23"\n', "band flat has hours but no price", 1),
        ('      peak: "8-20"\n      valley: "0-7,21-25"\n', "'25' is not in 0..23", 5),
    ],
)
def test_a_wrong_tariff_names_its_line(tmp_path: Path, hours: str, words: str, line: int) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(BASE + hours, encoding="utf-8")
    with pytest.raises(DocumentError) as info:
        load_tariff(f)
    text = str(info.value)
    assert words in text, text
    assert f"{f}:{line}:" in text, text


def test_an_unknown_shipped_name() -> None:
    with pytest.raises(ReportError, match="no such shipped tariff"):
        load_tariff("jiangsu-2031")


def test_the_shipped_guangdong_bands_are_the_2021_notices() -> None:
    """Hand-read from the notice: peak 10-12 h and 14-19 h, valley 0-8 h, flat the rest;
    sharp 11-12 h and 15-17 h in July to September at peak + 25 %; 1.7 : 1 : 0.38."""
    t = load_tariff("cn-guangdong-2021")
    assert len(t.table) == 12 * 24
    november = [t.band(11, h) for h in range(24)]
    assert [h for h, b in enumerate(november) if b is Band.PEAK] == [10, 11, 14, 15, 16, 17, 18]
    assert [h for h, b in enumerate(november) if b is Band.VALLEY] == list(range(8))
    assert november.count(Band.FLAT) == 24 - 7 - 8
    for month in (7, 8, 9):
        day = [t.band(month, h) for h in range(24)]
        assert [h for h, b in enumerate(day) if b is Band.SHARP] == [11, 15, 16]
        assert [h for h, b in enumerate(day) if b is Band.PEAK] == [10, 14, 17, 18]
    assert Band.SHARP not in {t.band(6, h) for h in range(24)}
    assert t.price(Band.FLAT) == 1.0 and t.price(Band.PEAK) == 1.7
    assert t.price(Band.VALLEY) == 0.38 and t.price(Band.SHARP) == 1.7 * 1.25
    assert t.model.demand_charge_per_kw_month is None
    assert "not yuan" in t.model.source and t.model.currency == "flat = 1"
