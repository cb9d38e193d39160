"""One report: the period's figures from a source, with cost, baseline, progress and the
ledger's verification, ready for the renderers.

Exit codes of `energy-agent report` follow from what is raised here
(docs/report.md): :class:`~agent.report.NoRecords` 3, :class:`~agent.report.SourceDown`
1, any other :class:`~agent.report.ReportError` 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from agent.config.models import AgentConfig
from agent.report import NoRecords, ReportError
from agent.report.figures import Cost, Factors, Figures, Group, compute_quarters, costs, tree
from agent.report.period import Period, parse_period
from agent.report.progress import Basis, Progress, progress
from agent.report.sources import Source
from agent.report.tariff import Tariff, load_tariff
from agent.report.verification import Verification
from drivers.profile import ProfileLibrary


@dataclass(frozen=True)
class Baseline:
    label: str
    basis: Basis
    #: Computed from the same records (a period), or None: entered by hand.
    figures: Figures | None


@dataclass(frozen=True)
class Report:
    site: str
    site_name: str | None
    gateway: str
    period: Period
    source: str
    generated_ms: int
    figures: Figures
    electricity_factor_source: str
    gas_factor_source: str
    tariff: Tariff | None
    cost: Cost | None
    value_added: float | None
    baseline: Baseline | None
    progress: list[Progress]
    #: Why there is no progress figure (an i18n key's suffix), or None.
    no_progress: str | None
    verification: Verification
    #: The config's lines and products, (id, name), in its order.
    lines: tuple[tuple[str, str | None], ...] = ()
    products: tuple[tuple[str, str | None], ...] = ()


def _local(ms: int, period: Period) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, period.zone).strftime("%Y-%m-%d %H:%M")


def _figures(config: AgentConfig, source: Source, period: Period, tariff: Tariff | None) -> Figures:
    devices = tree(
        [
            (r.device.id, r.device.name, r.carrier.value, r.device.parent)
            for r in config.resolved(ProfileLibrary())
        ]
    )
    rep = config.report
    groups = [
        Group(g.id, g.name, frozenset(g.devices), frozenset(g.counters))
        for g in (*rep.lines, *rep.products)
    ]
    factors = Factors(config.tce.electricity_kgce_per_kwh, config.tce.natural_gas_kgce_per_m3)
    quarters = source.quarters(period.start_ms, period.end_ms)
    return compute_quarters(quarters, period, devices, factors, groups=groups, tariff=tariff)


def _basis(fig: Figures, value_added: float | None) -> Basis:
    t = fig.totals()
    units = t["output_units"]
    return Basis(float(t["tce"] or 0), float(t["co2_kg"] or 0) / 1000, units, value_added)


def make_report(
    config: AgentConfig,
    source: Source,
    period: Period,
    *,
    config_file: Path | None,
    now_ms: int,
) -> Report:
    """The report of ``period``; NoRecords when the source has none in it."""
    first = source.first_ms()
    if first is not None and period.end_ms <= first:
        raise NoRecords(
            f"the period {period.text} ends before the history starts (its oldest record is "
            f"of {_local(first, period)}): nothing to report"
        )
    rep = config.report
    where = rep.tariff_path(config_file)
    tariff = load_tariff(where) if where is not None else None
    # The verification also checks the history's quarter-hour rollup against the records
    # it reads, and the figures are the records' where it differs. It is begun first and
    # runs beside the figures where the source can (the history: in a process of its
    # own); the figures from the rollup are summed again from the records only if the
    # rollup turns out to differ.
    pending = source.start_verification(period.start_ms, period.end_ms)
    fig = _figures(config, source, period, tariff)
    verification = pending()
    if source.figures_from_records(period.start_ms, period.end_ms):
        fig = _figures(config, source, period, tariff)
    if fig.records == 0:
        raise NoRecords(
            f"no energy record in {period.text} ({_local(period.start_ms, period)} to "
            f"{_local(period.end_ms, period)}, {period.zone.key}) in {source.label}"
        )
    value_added = rep.value_added.get(period.text)
    baseline = _baseline(config, source, period)
    found: list[Progress] = []
    why: str | None = "no_baseline"
    if baseline is not None:
        found, why = progress(
            _basis(fig, value_added),
            baseline.basis,
            energy_pct=rep.targets.energy_pct,
            co2_pct=rep.targets.co2_pct,
        )
    carbon = config.carbon
    return Report(
        site=config.site.id,
        site_name=config.site.name,
        gateway=config.gateway.id,
        period=period,
        source=source.label,
        generated_ms=now_ms,
        figures=fig,
        electricity_factor_source=carbon.electricity.source or "",
        gas_factor_source=carbon.natural_gas.source or "",
        tariff=tariff,
        cost=costs(fig, tariff) if tariff is not None else None,
        value_added=value_added,
        baseline=baseline,
        progress=found,
        no_progress=why,
        verification=verification,
        lines=tuple((g.id, g.name) for g in rep.lines),
        products=tuple((g.id, g.name) for g in rep.products),
    )


def _baseline(config: AgentConfig, source: Source, period: Period) -> Baseline | None:
    b = config.report.baseline
    if b is None:
        return None
    if b.figures is not None:
        f = b.figures
        basis = Basis(f.tce, f.co2_t, f.output_units, b.value_added)
        return Baseline(b.label or "baseline", basis, None)
    assert b.period is not None
    base_period = parse_period(b.period, config.site.timezone)
    if base_period.end_ms > period.start_ms:
        raise ReportError(f"report.baseline.period {b.period} must end before {period.text}")
    fig = _figures(config, source, base_period, None)
    value_added = b.value_added or config.report.value_added.get(b.period)
    return Baseline(b.label or b.period, _basis(fig, value_added), fig)
