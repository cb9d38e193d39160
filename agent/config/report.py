"""The config's optional ``report:`` section: what `energy-agent report` needs beyond the
site and its meters (docs/report.md).

Lines and products map devices and production counters to the plant's own words;
the tariff, the baseline and the targets turn figures into cost and progress. All
optional: a report without them still has every measured figure, and says which
parts it left out and why. Strict like the rest of the config: a misspelt key is an
error with its line, never a silently empty section of the month's report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.common import Id
from agent.config.common import Strict as _Strict

#: The forms ``--period`` takes (agent/report/period.py parses them in the site's zone).
PERIOD_RX = re.compile(
    r"\d{4}\Z|\d{4}-\d{2}\Z|\d{4}-W\d{2}\Z|\d{4}-\d{2}-\d{2}\.\.\d{4}-\d{2}-\d{2}\Z"
)

_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def check_period(v: str) -> str:
    if not PERIOD_RX.match(v):
        raise ValueError(
            f"'{v}' is not a period: write 2025 (a year), 2025-11 (a month), 2025-W47 (an "
            "ISO week) or 2025-11-01..2025-11-15 (days, both included)"
        )
    return v


class Grouping(_Strict):
    """A production line or a product: the devices whose energy is its own, and the
    production counters that count its output."""

    id: Id
    name: str | None = None
    devices: tuple[Id, ...] = ()
    counters: tuple[Id, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> Grouping:
        if not self.devices and not self.counters:
            raise ValueError("give `devices` (its meters) or `counters` (its production), or both")
        return self


class BaselineFigures(_Strict):
    """Figures entered by hand: a year before the agent was installed, read from bills."""

    electricity_kwh: _NonNegative | None = None
    gas_m3: _NonNegative | None = None
    #: Tonnes of standard coal equivalent (GB/T 2589, equivalent value).
    tce: _NonNegative
    #: Tonnes of CO2, scope 1 and 2 together.
    co2_t: _NonNegative
    output_units: _NonNegative | None = None


class Baseline(_Strict):
    """What the period is compared with: another period of the same records (``period``)
    or figures entered by hand (``figures``); exactly one."""

    label: str | None = None
    period: str | None = None
    figures: BaselineFigures | None = None
    #: The baseline's industrial value added (the unit of ``report.value_added``).
    value_added: _Positive | None = None

    @field_validator("period")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        return None if v is None else check_period(v)

    @model_validator(mode="after")
    def _one(self) -> Baseline:
        if (self.period is None) == (self.figures is None):
            raise ValueError(
                "give `period` (e.g. 2025-11: computed from the same records) or `figures` "
                "(entered by hand), exactly one"
            )
        return self


class Targets(_Strict):
    """Reductions per unit of industrial value added against the baseline, in percent.
    Defaults: the national targets for 2025 against 2020 (docs/report.md cites them)."""

    energy_pct: Annotated[float, Field(ge=0, le=100)] = 13.5
    energy_source: str = (
        "MIIT 工信部联节〔2022〕88号: energy per unit of industrial value added −13.5 %"
    )
    co2_pct: Annotated[float, Field(ge=0, le=100)] = 18.0
    co2_source: str = (
        "MIIT 《“十四五”工业绿色发展规划》 (2021-12): CO2 per unit of industrial value added −18 %"
    )


class ReportSettings(_Strict):
    lines: tuple[Grouping, ...] = ()
    products: tuple[Grouping, ...] = ()
    #: A time-of-use tariff file (YAML, docs/report.md), relative to the config file's
    #: folder, or the name of a shipped one (``example-cn-tou``, ``cn-guangdong-2021``).
    tariff: str | None = None
    baseline: Baseline | None = None
    targets: Targets = Targets()
    #: Industrial value added by period (``"2026-11": 420.5``), in the plant's unit
    #: (e.g. 10⁴ CNY); the report's own period's value makes the per-value-added figures.
    value_added: dict[str, _Positive] = Field(default_factory=dict)
    #: What ``energy-agent report --due`` writes to ``state_dir/reports/`` (started by
    #: `run` itself, or a timer: ``schedule_by``): the previous ``day``'s and/or
    #: ``month``'s report; nothing unless listed.
    schedule: tuple[Literal["day", "month"], ...] = ()
    #: Who writes them: ``run`` (the agent, as a low-priority child process a little
    #: after each local midnight) or ``timer`` (a systemd timer or cron running
    #: ``report --due``: central sites).
    schedule_by: Literal["run", "timer"] = "run"
    #: Seconds after local midnight the agent starts them: the day's last records and
    #: the ledger's last hour are in by then.
    schedule_delay_s: Annotated[float, Field(ge=0, le=6 * 3600)] = 900.0
    #: The language of scheduled reports.
    lang: Literal["en", "zh-CN"] = "en"

    @field_validator("value_added")
    @classmethod
    def _periods(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            check_period(key)
        return v

    def tariff_path(self, config_file: Path | None) -> Path | str | None:
        """The tariff as a file (resolved against the config's folder) or a shipped name."""
        if self.tariff is None:
            return None
        if "/" not in self.tariff and not self.tariff.endswith((".yaml", ".yml")):
            return self.tariff
        p = Path(self.tariff)
        if not p.is_absolute() and config_file is not None:
            p = config_file.parent / p
        return p
