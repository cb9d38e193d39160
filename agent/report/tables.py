"""The report as tables: the one shape the HTML, the XLSX and the CSV files are made of.

A table has a key (its file and sheet name), columns with units, and rows of
numbers and words. Numbers stay numbers (the XLSX keeps them as numbers, the
CSV writes them plainly); headers and words come from agent/i18n (domain
``report``) in the report's language. Units are SI symbols in both languages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent.i18n import Translator
from agent.report.build import Report
from agent.report.figures import GAS, PRODUCTION
from agent.report.verification import BROKEN, NOT_VERIFIED, VERIFIED

Cell = float | int | str | None


@dataclass(frozen=True)
class Column:
    key: str
    unit: str = ""
    #: Shown as it is (a date), not looked up as ``report.col_<key>``.
    literal: bool = False


@dataclass(frozen=True)
class Table:
    key: str
    columns: tuple[Column, ...]
    rows: list[list[Cell]]


#: The totals' rows: (figure, unit).
TOTALS = (
    ("electricity_import_kwh", "kWh"),
    ("electricity_net_kwh", "kWh"),
    ("gas_m3", "m³"),
    ("gas_kwh", "kWh"),
    ("energy_kwh", "kWh"),
    ("kgce", "kgce"),
    ("tce", "tce"),
    ("scope1_kg", "kg"),
    ("scope2_kg", "kg"),
    ("co2_kg", "kg"),
    ("output_units", ""),
    ("kwh_per_unit", "kWh"),
    ("kgce_per_unit", "kgce"),
    ("kgco2_per_unit", "kg"),
    ("average_kw", "kW"),
    ("peak_kw", "kW"),
    ("load_factor", ""),
    ("coverage", "%"),
    ("interpolated_share", "%"),
    ("missing_share", "%"),
)
_PERCENT = frozenset({"coverage", "interpolated_share", "missing_share"})


def header(t: Translator, c: Column) -> str:
    name = c.key if c.literal else t(f"report.col_{c.key}")
    return f"{name} ({c.unit})" if c.unit else name


def local(ms: int, report: Report, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return dt.datetime.fromtimestamp(ms / 1000, report.period.zone).strftime(fmt)


def totals(report: Report, t: Translator) -> Table:
    values = report.figures.totals()
    source = {
        "scope2_kg": report.electricity_factor_source,
        "scope1_kg": report.gas_factor_source,
        "tce": "GB/T 2589-2020",
        "kgce": "GB/T 2589-2020",
    }
    rows: list[list[Cell]] = []
    for key, unit in TOTALS:
        v = values[key]
        if key in _PERCENT and v is not None:
            v = v * 100
        rows.append([t(f"report.total_{key}"), v, unit, source.get(key, "")])
    peak = report.figures.peak()
    rows.append([t("report.total_peak_at"), local(peak[1], report) if peak else None, "", ""])
    if report.cost is not None:
        rows.append([t("report.total_cost"), report.cost.total, report.cost.currency, ""])
        units = values["output_units"]
        per = report.cost.total / units if units else None
        rows.append([t("report.total_cost_per_unit"), per, report.cost.currency, ""])
    return Table(
        "totals",
        (Column("figure"), Column("value"), Column("unit"), Column("source")),
        rows,
    )


def devices(report: Report, t: Translator) -> Table:
    fig = report.figures
    span_s = fig.period.hours * 3600
    rows: list[list[Cell]] = []
    order = sorted(fig.per_device, key=lambda d: (fig.info(d).level, d))
    for d in order:
        s, info = fig.per_device[d], fig.info(d)
        rows.append(
            [
                d, info.name or "", t(f"report.carrier_{info.carrier or 'unknown'}"),
                info.level, info.parent or "",
                s.kwh if info.carrier != PRODUCTION else None,
                s.m3 if info.carrier == GAS else None,
                s.units if info.carrier == PRODUCTION else None,
                s.co2_kg, s.unmetered_kwh if s.has_unmetered else None,
                100 * min(s.covered_s, span_s) / span_s if span_s else None,
                100 * s.interpolated_s / span_s if span_s else None,
            ]
        )  # fmt: skip
    cols = (
        Column("device"), Column("name"), Column("carrier"), Column("level"), Column("parent"),
        Column("energy", "kWh"), Column("gas", "m³"), Column("units"), Column("co2", "kg"),
        Column("unmetered", "kWh"), Column("coverage", "%"), Column("interpolated", "%"),
    )  # fmt: skip
    return Table("devices", cols, rows)


def levels(report: Report, t: Translator) -> Table:
    rows: list[list[Cell]] = [
        [lv, metered, unmetered, metered + unmetered]
        for lv, metered, unmetered in report.figures.levels()
    ]
    cols = (
        Column("level"), Column("metered", "kWh"), Column("unmetered", "kWh"),
        Column("level_total", "kWh"),
    )  # fmt: skip
    return Table("levels", cols, rows)


def groups(report: Report, t: Translator, key: str) -> Table:
    settings = report.lines if key == "lines" else report.products
    rows: list[list[Cell]] = []
    for g_id, name in settings:
        s = report.figures.groups[g_id]
        if not s.metered:  # output only: no energy of its own to divide
            rows.append([g_id, name or "", None, None, s.units, None, None])
            continue
        per = (s.kwh / s.units, s.co2_kg / s.units) if s.units > 0 else (None, None)
        rows.append([g_id, name or "", s.kwh, s.co2_kg, s.units, per[0], per[1]])
    cols = (
        Column("id"), Column("name"), Column("energy", "kWh"), Column("co2", "kg"),
        Column("units"), Column("kwh_per_unit", "kWh"), Column("kgco2_per_unit", "kg"),
    )  # fmt: skip
    return Table(key, cols, rows)


def daily(report: Report, t: Translator) -> Table:
    fig = report.figures
    rows: list[list[Cell]] = []
    for day in fig.period.days():
        d = fig.days.get(day)
        lo, hi = fig.period.day_ms(day)
        peaks = [kwh * 4 for q, kwh in fig.quarters.items() if lo <= q * 900_000 < hi]
        rows.append(
            [
                day.isoformat(),
                d.electricity_kwh if d else 0.0, d.gas_m3 if d else 0.0,
                d.gas_kwh if d else 0.0, d.scope1_kg if d else 0.0, d.scope2_kg if d else 0.0,
                d.units if d else 0.0, max(peaks) if peaks else None,
                (d.cost if d else 0.0) if report.tariff is not None else None,
            ]
        )  # fmt: skip
    cols = (
        Column("date"), Column("electricity", "kWh"), Column("gas", "m³"),
        Column("gas_energy", "kWh"), Column("scope1", "kg"), Column("scope2", "kg"),
        Column("units"), Column("peak", "kW"),
        Column("energy_cost", report.tariff.model.currency if report.tariff else ""),
    )  # fmt: skip
    return Table("daily", cols, rows)


def monthly(report: Report, t: Translator) -> Table | None:
    """The daily figures by calendar month, for a period of more than one (a year)."""
    fig = report.figures
    months = fig.period.months()
    if len(months) < 2:
        return None
    rows: list[list[Cell]] = []
    for ym in months:
        days = [d for day, d in fig.days.items() if (day.year, day.month) == ym]
        peak = fig.peak(ym)
        cost = None
        if report.cost is not None:
            demand = report.cost.demand.get(ym)
            cost = sum(d.cost for d in days) + (demand[3] if demand else 0.0)
        rows.append(
            [
                f"{ym[0]}-{ym[1]:02d}",
                sum((d.electricity_kwh for d in days), 0.0), sum((d.gas_m3 for d in days), 0.0),
                sum((d.gas_kwh for d in days), 0.0), sum((d.scope1_kg for d in days), 0.0),
                sum((d.scope2_kg for d in days), 0.0), sum((d.units for d in days), 0.0),
                None if peak is None else peak[0], cost,
            ]
        )  # fmt: skip
    cols = (
        Column("month"), Column("electricity", "kWh"), Column("gas", "m³"),
        Column("gas_energy", "kWh"), Column("scope1", "kg"), Column("scope2", "kg"),
        Column("units"), Column("peak", "kW"),
        Column("cost", report.tariff.model.currency if report.tariff else ""),
    )  # fmt: skip
    return Table("monthly", cols, rows)


def hourly(report: Report, t: Translator) -> Table:
    """Scope 2 hour by hour: the location-based factor of every hour."""
    rows: list[list[Cell]] = [
        [f"{day.isoformat()} {hour:02d}:00", kwh, co2, co2 / kwh if kwh > 0 else None]
        for (day, hour), (kwh, co2) in sorted(report.figures.hours.items())
    ]
    cols = (Column("hour"), Column("electricity", "kWh"), Column("scope2", "kg"),
            Column("factor", "kg/kWh"))  # fmt: skip
    return Table("hourly", cols, rows)


def coverage(report: Report, t: Translator) -> Table:
    """Device × day: the share of the day covered by readings, in percent."""
    fig = report.figures
    days = fig.period.days()
    rows: list[list[Cell]] = []
    for d in sorted(set(fig.devices) | set(fig.per_device)):
        row: list[Cell] = [d]
        for day in days:
            lo, hi = fig.period.day_ms(day)
            got = fig.coverage.get((d, day))
            row.append(100 * min(got[0], (hi - lo) / 1000) / ((hi - lo) / 1000) if got else 0.0)
        rows.append(row)
    cols = (Column("device"), *(Column(day.isoformat(), "%", literal=True) for day in days))
    return Table("coverage", cols, rows)


def cost(report: Report, t: Translator) -> Table | None:
    c = report.cost
    if c is None:
        return None
    rows: list[list[Cell]] = [
        [t(f"report.band_{band.value}"), kwh, price, "", amount]
        for band, (kwh, price, amount) in c.energy.items()
    ]
    for (y, m), (kw, rate, share, amount) in c.demand.items():
        rows.append([t("report.demand_charge", month=f"{y}-{m:02d}"), kw, rate, share, amount])
    rows.append([t("report.total_cost"), None, None, "", c.total])
    cols = (Column("item"), Column("quantity"), Column("price", c.currency),
            Column("share"), Column("amount", c.currency))  # fmt: skip
    return Table("cost", cols, rows)


def baseline(report: Report, t: Translator) -> Table | None:
    b = report.baseline
    if b is None:
        return None
    cur = report.figures.totals()
    rows: list[list[Cell]] = [
        [t("report.total_tce"), b.basis.tce, cur["tce"], "tce"],
        [t("report.total_co2_kg"), b.basis.co2_t, (cur["co2_kg"] or 0) / 1000, "t"],
        [t("report.total_output_units"), b.basis.units, cur["output_units"], ""],
        [t("report.value_added"), b.basis.value_added, report.value_added, ""],
    ]
    for p in report.progress:
        change = t(
            "report.change_vs_target", change=f"{p.change_pct:+.1f}", target=f"{p.target_pct:.1f}"
        )
        rows.append([t(f"report.intensity_{p.metric}_{p.per}"), p.baseline, p.current, change])
    cols = (Column("figure"), Column("baseline"), Column("current"), Column("unit"))
    return Table("baseline", cols, rows)


def verification(report: Report, t: Translator) -> Table:
    rows: list[list[Cell]] = [
        [local(h, report), t(f"report.status_{status}")] for h, status in report.verification.hours
    ]
    return Table("verification", (Column("hour"), Column("status")), rows)


def statements(report: Report, t: Translator) -> list[str]:
    """The plain sentences under the figures: progress, verification, what is missing."""
    out: list[str] = []
    for p in report.progress:
        what = t(f"report.metric_{p.metric}")
        if p.on_track:
            out.append(t("report.on_track", what=what, change=f"{p.change_pct:+.1f}",
                         target=f"{p.target_pct:.1f}"))  # fmt: skip
        else:
            out.append(t("report.behind", what=what, behind=f"{p.behind_pts:.1f}",
                         change=f"{p.change_pct:+.1f}", target=f"{p.target_pct:.1f}"))  # fmt: skip
    if report.no_progress is not None:
        out.append(t(f"report.no_progress_{report.no_progress}"))
    v = report.verification
    out.append(
        t("report.verified_hours", verified=v.count(VERIFIED), broken=v.count(BROKEN),
          unverified=v.count(NOT_VERIFIED), total=len(v.hours))
    )  # fmt: skip
    if v.note:
        why = (
            t(f"report.why_{v.note}", detail=v.detail)
            if v.note == "other"
            else t(f"report.why_{v.note}")
        )
        out.append(t("report.not_verified_because", why=why))
    out += v.problems[:5]
    fig = report.figures
    if fig.unknown:
        out.append(t("report.unknown_devices", devices=", ".join(sorted(fig.unknown))))
    if fig.long_intervals:
        out.append(t("report.no_peak_long_intervals"))
    out.append(t("report.no_export"))
    return out


def all_tables(report: Report, t: Translator) -> list[Table]:
    found = [
        totals(report, t), devices(report, t), levels(report, t),
        groups(report, t, "lines"), groups(report, t, "products"), monthly(report, t),
        daily(report, t),
        hourly(report, t), coverage(report, t), cost(report, t), baseline(report, t),
        verification(report, t),
    ]  # fmt: skip
    return [x for x in found if x is not None]
