"""Time-of-use tariffs as data: which band (sharp, peak, flat, valley) each local hour
of each month falls in, the price of a kWh in each band, and a demand charge per kW
of the month's highest 15-minute demand (两部制电价, docs/report.md).

A tariff is a YAML file, checked like the config (file, line, field, fix). One
ships as an example (``tariffs/example-cn-tou.yaml``), one with a province's sourced hours
(``tariffs/cn-guangdong-2021.yaml``, prices relative to the flat one); a plant writes its own
from its grid company's current price sheet, since prices change every year and
differ by province, voltage level and customer class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from agent.config.common import Strict
from agent.config.models import parse_ranges
from agent.report import ReportError
from confdoc.errors import DocumentError, Problem
from confdoc.yamldoc import model_problems, parse_yaml, read_document

SHIPPED = ("example-cn-tou", "cn-guangdong-2021")


class Band(StrEnum):
    SHARP = "sharp"
    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"


_Price = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class Season(Strict):
    """The hours of each band in some months: local hours, ``"8-10,17-21"`` (an hour h
    is h:00 to h:59); together the bands take every hour 0..23 once."""

    months: str = "1-12"
    hours: dict[Band, str]

    @model_validator(mode="after")
    def _every_hour_once(self) -> Season:
        parse_ranges(self.months, 1, 12)
        seen: dict[int, Band] = {}
        for band, text in self.hours.items():
            for h in parse_ranges(text, 0, 23):
                if h in seen:
                    raise ValueError(f"hour {h} is in both {seen[h].value} and {band.value}")
                seen[h] = band
        missing = sorted(set(range(24)) - set(seen))
        if missing:
            raise ValueError(f"hours {missing} are in no band: every hour 0..23 needs one")
        return self


class TariffModel(Strict):
    name: str
    #: Where the periods and prices come from: a document number, a price sheet's date.
    source: str
    currency: str = "CNY"
    prices: dict[Band, _Price]
    #: Per kW of the month's highest 15-minute demand (基本电价, 需量计费).
    demand_charge_per_kw_month: _Price | None = None
    #: The first season listing a month applies to it.
    seasons: tuple[Season, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _complete(self) -> TariffModel:
        for m in range(1, 13):
            season = next((s for s in self.seasons if m in parse_ranges(s.months, 1, 12)), None)
            if season is None:
                raise ValueError(f"month {m} is in no season: give one with `months: 1-12` last")
            for band in season.hours:
                if band not in self.prices:
                    raise ValueError(f"band {band.value} has hours but no price in `prices`")
        return self


@dataclass(frozen=True)
class Tariff:
    model: TariffModel
    #: band by (month, hour), worked out once.
    table: Mapping[tuple[int, int], Band]

    @classmethod
    def of(cls, model: TariffModel) -> Tariff:
        table: dict[tuple[int, int], Band] = {}
        for m in range(1, 13):
            season = next(s for s in model.seasons if m in parse_ranges(s.months, 1, 12))
            for band, text in season.hours.items():
                for h in parse_ranges(text, 0, 23):
                    table[(m, h)] = band
        return cls(model, table)

    def band(self, month: int, hour: int) -> Band:
        return self.table[(month, hour)]

    def price(self, band: Band) -> float:
        return self.model.prices[band]


def load_tariff(where: Path | str) -> Tariff:
    """A tariff file, or a shipped one by name; DocumentError lists every problem."""
    if isinstance(where, str):
        if where not in SHIPPED:
            raise ReportError(
                f"report.tariff '{where}': no such shipped tariff ({', '.join(SHIPPED)}); "
                "or give a file path ending in .yaml"
            )
        ref = resources.files(__package__).joinpath("tariffs", f"{where}.yaml")
        text: str | None = ref.read_text("utf-8")
        name = f"agent/report/tariffs/{where}.yaml"
        problems: list[Problem] = []
    else:
        name = str(where)
        text, problems = read_document(where, "the tariff file")
    if text is None:
        raise DocumentError(problems)
    doc, problems = parse_yaml(text, name)
    if doc is None or problems:
        raise DocumentError(problems or [Problem("", "not a tariff", name)])
    model, problems = model_problems(doc, TariffModel)
    if model is None:
        raise DocumentError(problems)
    assert isinstance(model, TariffModel)
    return Tariff.of(model)
