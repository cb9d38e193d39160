"""``report.xlsx``: a sheet per table, numbers as numbers, units in the headers.

XlsxWriter (the optional extra ``report``): pure Python, writes without reading,
so a year's hourly table is streamed to the file (``constant_memory``).
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.i18n import Translator
from agent.report import ReportError
from agent.report.tables import Table, header

INSTALL_HINT = "report.xlsx needs XlsxWriter: pip install 'energy-agent[report]'"
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")


def sheet_name(t: Translator, table: Table) -> str:
    """The table's title in the report's language, as Excel allows a sheet name."""
    return _SHEET_BAD.sub(" ", t(f"report.table_{table.key}"))[:31]


def write_xlsx(tables: list[Table], path: Path, t: Translator) -> Path:
    try:
        import xlsxwriter
    except ImportError:
        raise ReportError(INSTALL_HINT) from None
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    try:
        bold = book.add_format({"bold": True})
        for table in tables:
            sheet = book.add_worksheet(sheet_name(t, table))
            for c, col in enumerate(table.columns):
                sheet.write_string(0, c, header(t, col), bold)
                sheet.set_column(c, c, max(10, min(40, len(header(t, col)) + 2)))
            for r, row in enumerate(table.rows, 1):
                for c, v in enumerate(row):
                    if v is None:
                        continue
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        sheet.write_number(r, c, v)
                    else:
                        sheet.write_string(r, c, str(v))
    finally:
        book.close()
    return path
