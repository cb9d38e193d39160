"""Writing a report to its folder: report.html, report.xlsx and the CSV files."""

from __future__ import annotations

from pathlib import Path

from agent.i18n import Translator
from agent.report import ReportError
from agent.report.build import Report
from agent.report.render_csv import write_csv
from agent.report.render_html import render_html
from agent.report.render_xlsx import write_xlsx
from agent.report.tables import all_tables


def write_report(report: Report, out: Path, lang: str) -> list[Path]:
    """Every file of the report in ``out`` (made if missing); the paths written."""
    t = Translator(lang)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot make the folder: {exc.strerror}") from None
    tables = all_tables(report, t)
    try:
        html = out / "report.html"
        html.write_text(render_html(report, tables, t), encoding="utf-8")
        written = [html, write_xlsx(tables, out / "report.xlsx", t)]
        written += write_csv(tables, out, t)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot write: {exc.strerror}") from None
    return written
