"""Reading an .xlsx back without a spreadsheet library: the workbook's sheet names and
each sheet's cells (numbers as floats, text as text), straight from its XML."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def _col(ref: str) -> int:
    letters = re.match(r"[A-Z]+", ref)
    assert letters is not None
    n = 0
    for ch in letters[0]:
        n = n * 26 + ord(ch) - 64
    return n - 1


def read_xlsx(path: Path) -> dict[str, list[list[float | str | None]]]:
    """Sheet name -> rows of cells; a number cell is a float, never text."""
    with zipfile.ZipFile(path) as z:
        shared: list[str] = []
        if "xl/sharedStrings.xml" in z.namelist():
            root = ET.fromstring(z.read("xl/sharedStrings.xml"))
            shared = ["".join(t.text or "" for t in si.iter(f"{{{NS['m']}}}t")) for si in root]
        book = ET.fromstring(z.read("xl/workbook.xml"))
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        targets = {r.get("Id"): r.get("Target") for r in rels}
        out: dict[str, list[list[float | str | None]]] = {}
        for sheet in book.find("m:sheets", NS) or []:
            target = str(targets[sheet.get(REL)]).lstrip("/")
            xml = ET.fromstring(z.read(target if target.startswith("xl/") else f"xl/{target}"))
            rows: list[list[float | str | None]] = []
            for row in xml.iter(f"{{{NS['m']}}}row"):
                cells: list[float | str | None] = []
                for c in row:
                    i = _col(str(c.get("r")))
                    cells += [None] * (i + 1 - len(cells))
                    v = c.find("m:v", NS)
                    is_ = c.find("m:is", NS)
                    kind = c.get("t")
                    if kind == "s" and v is not None:
                        cells[i] = shared[int(v.text or 0)]
                    elif kind == "inlineStr" and is_ is not None:
                        cells[i] = "".join(t.text or "" for t in is_.iter(f"{{{NS['m']}}}t"))
                    elif kind == "str" and v is not None:
                        cells[i] = v.text or ""
                    elif v is not None:
                        cells[i] = float(v.text or 0)
                rows.append(cells)
            out[str(sheet.get("name"))] = rows
        return out
