"""``report.html``: one self-contained file that prints to A4.

Charts are inline SVG (:mod:`agent.report.charts`), styles inline, no script, no
font, image or style fetched from anywhere: an auditor opens it offline, and it
prints the same. The long tables (hour by hour) stay in the XLSX and CSV files;
here they are charts, so a year's report stays well under a megabyte.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from agent import __version__
from agent.i18n import Translator
from agent.report import charts
from agent.report.build import Report
from agent.report.tables import Cell, Table, header, local, statements
from agent.report.verification import BROKEN, VERIFIED

#: Tables shown as tables in the HTML (the others are charts there).
IN_HTML = (
    "totals", "devices", "levels", "lines", "products", "monthly", "daily", "cost", "baseline",
)  # fmt: skip

STYLE = """
@page { size: A4; margin: 12mm; }
body { font-family: "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Noto Sans",
       "DejaVu Sans", sans-serif; font-size: 10pt; color: #111; max-width: 190mm;
       margin: 0 auto; }
h1 { font-size: 16pt; margin: 0 0 4pt; }
h2 { font-size: 12pt; margin: 14pt 0 4pt; break-after: avoid; }
figure { margin: 8pt 0; break-inside: avoid; }
figcaption { font-weight: 600; margin-bottom: 2pt; }
.meta { color: #444; margin-bottom: 8pt; }
table { border-collapse: collapse; width: 100%; margin-bottom: 6pt; font-size: 8.5pt; }
th, td { border: 0.5pt solid #bbb; padding: 2pt 4pt; }
th { background: #f0f0f0; text-align: left; font-weight: 600; }
td:first-child { white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr { break-inside: avoid; }
svg.chart { width: 100%; height: auto; break-inside: avoid; }
ul.statements li { margin: 2pt 0; }
.small { font-size: 8pt; color: #555; }
"""


def fmt(v: Cell) -> str:
    """Grouped digits, precision by size; the same in both languages."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:,.1f}"
        if a >= 0.01 or a == 0:
            return f"{v:.3f}".rstrip("0").rstrip(".") if a < 1 else f"{v:.2f}"
        return f"{v:.3g}"
    return escape(v)


def html_table(t: Translator, table: Table) -> str:
    head = "".join(f"<th>{escape(header(t, c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{fmt(v)}</td>' if isinstance(v, int | float) else f"<td>{fmt(v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in table.rows
    )
    title = escape(t(f"report.table_{table.key}"))
    return f'<h2>{title}</h2><table data-table="{table.key}"><tr>{head}</tr>{body}</table>'


def _charts(report: Report, t: Translator) -> list[str]:
    fig = report.figures
    days = fig.period.days()
    by_year = len(days) > 62
    labels = [d.strftime("%m-%d") for d in days]
    el = [fig.days[d].electricity_kwh if d in fig.days else 0.0 for d in days]
    gas = [fig.days[d].gas_kwh if d in fig.days else 0.0 for d in days]
    out = [
        charts.bars(
            t("report.chart_daily"),
            labels,
            [(t("report.col_electricity"), "#1f77b4", el), (t("report.col_gas"), "#ff7f0e", gas)],
            "kWh",
        )
    ]
    # The daily profile: the average load of each hour of the day over the period.
    per_hour = [0.0] * 24
    for (_day, hour), (kwh, _co2) in fig.hours.items():
        per_hour[hour] += kwh
    n_days = max(1, len(days))
    out.append(
        charts.line(
            t("report.chart_profile"), [f"{h:02d}" for h in range(24)],
            [v / n_days for v in per_hour], "kW",
        )
    )  # fmt: skip
    devices = sorted(set(fig.devices) | set(fig.per_device))
    cov = []
    for d in devices:
        row: list[float | None] = []
        for day in days:
            lo, hi = fig.period.day_ms(day)
            got = fig.coverage.get((d, day))
            row.append(min(1.0, got[0] * 1000 / (hi - lo)) if got else 0.0)
        cov.append(row)
    out.append(charts.heat(t("report.chart_coverage"), devices, labels, cov))
    out.append(_verification_chart(report, t, by_year))
    return out


def _verification_chart(report: Report, t: Translator, by_day: bool) -> str:
    """Hours by day (a row per day, a cell per hour): 1 verified, 0 broken, grey not
    verified; for a year, a cell per day (its worst hour)."""
    status: dict[dt.date, list[float | None]] = {}
    score = {VERIFIED: 1.0, BROKEN: 0.0}
    for h, s in report.verification.hours:
        t_ = dt.datetime.fromtimestamp(h / 1000, report.period.zone)
        row = status.setdefault(t_.date(), [None] * 24)
        row[t_.hour] = score.get(s)
    days = sorted(status)
    title = t("report.chart_verification")
    if by_day:
        worst = [
            [
                None
                if any(v is None for v in status[d])
                else min(v for v in status[d] if v is not None)
            ]
            for d in days
        ]
        flat = [[w[0] for w in worst]]
        labels = [d.strftime("%m-%d") for d in days]
        return charts.heat(title, [""], labels, flat, "#1f77b4", "#d62728")
    return charts.heat(
        title, [d.strftime("%m-%d") for d in days], [f"{h:02d}" for h in range(24)],
        [status[d] for d in days], "#1f77b4", "#d62728",
    )  # fmt: skip


def _figure(svg: str) -> str:
    """A chart with its title shown above it (the SVG's own title is for screen readers)."""
    start = svg.index("<title>") + len("<title>")
    title = svg[start : svg.index("</title>")]
    return f"<figure><figcaption>{title}</figcaption>{svg}</figure>"


def render_html(report: Report, tables: list[Table], t: Translator) -> str:
    period = report.period
    title = t("report.title", site=report.site_name or report.site, period=period.text)
    meta = t(
        "report.meta",
        site=report.site, gateway=report.gateway, zone=period.zone.key,
        start=local(period.start_ms, report), end=local(period.end_ms, report),
        source=report.source, generated=local(report.generated_ms, report),
        version=__version__,
    )  # fmt: skip
    sentences = "".join(f"<li>{escape(s)}</li>" for s in statements(report, t))
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(meta)}</p>',
        f'<ul class="statements">{sentences}</ul>',
    ]
    shown = {tb.key: tb for tb in tables}
    body.append(html_table(t, shown["totals"]))
    body += [_figure(svg) for svg in _charts(report, t)]
    for key in IN_HTML[1:]:
        if key == "daily" and period.kind == "year":
            continue  # 365 rows: in the XLSX and CSV; here the monthly table and the chart
        if key in shown and shown[key].rows:
            body.append(html_table(t, shown[key]))
    body.append(f'<p class="small">{escape(t("report.footer"))}</p>')
    return (
        f'<!DOCTYPE html><html lang="{t.lang}"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
