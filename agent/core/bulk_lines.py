"""The bulk lane's lines from a template: what is the same in every record written once.

A batch of records of one kind (agent/core/bulk_text.py) fills the same template
row after row. Most of their values do not change within a batch (the shares of a
meter that never missed a reading, the units of a site without production, the
windows of a steady load), so each value that is the same in every row of the
batch is put into the template once, and ``%`` fills in only what changes. The text
is the one ``template % row`` gives, row by row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: One value's text per row, or one text for all rows.
Slot = str | Sequence[str]


def parts_of(template: str) -> list[str]:
    """The literal text around a ``%s`` template's slots (``%%`` read as ``%``)."""
    parts: list[str] = []
    current: list[str] = []
    for token in re.split(r"(%.)", template):
        if token == "%s":
            parts.append("".join(current))
            current = []
        elif token == "%%":
            current.append("%")
        else:
            current.append(token)
    parts.append("".join(current))
    return parts


def lines(parts: Sequence[str], slots: Sequence[Slot], rows: int) -> list[str]:
    """``rows`` texts: ``parts`` with each slot's text in between, in order."""
    if len(slots) != len(parts) - 1:
        raise ValueError(f"{len(slots)} values for {len(parts) - 1} slots")
    template = [parts[0].replace("%", "%%")]
    changing: list[Sequence[str]] = []
    for slot, part in zip(slots, parts[1:], strict=True):
        if isinstance(slot, str):
            template.append(slot.replace("%", "%%"))
        else:
            template.append("%s")
            changing.append(slot)
        template.append(part.replace("%", "%%"))
    line = "".join(template)
    if not changing:
        return [line % ()] * rows
    return [line % row for row in zip(*changing, strict=True)]
