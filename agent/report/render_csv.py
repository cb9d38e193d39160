"""CSV files: ``report.csv`` (the totals) and ``report-<table>.csv`` for every other
table; UTF-8 with a byte-order mark so that Excel opens Chinese headers as Chinese."""

from __future__ import annotations

import csv
from pathlib import Path

from agent.i18n import Translator
from agent.report.tables import Cell, Table, header


def cell_text(v: Cell) -> str:
    """Numbers plainly (no grouping, a dot for the decimal), to the micro-unit."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(round(v, 6) + 0.0)
    return v


def file_name(table: Table) -> str:
    return "report.csv" if table.key == "totals" else f"report-{table.key}.csv"


def write_csv(tables: list[Table], out: Path, t: Translator) -> list[Path]:
    written = []
    for table in tables:
        path = out / file_name(table)
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow([header(t, c) for c in table.columns])
            w.writerows([cell_text(v) for v in row] for row in table.rows)
        written.append(path)
    return written
