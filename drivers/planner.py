"""Turn the registers a device needs into the fewest reads it tolerates.

A pure function with named strategies, so it can be tested table-style and by
property: every read covers whole values, stays within the meter's limit,
never crosses a hole the meter refuses, and only ever uses a read function
code. ``merge`` is greedy over values sorted by address; because any sub-run of
a feasible read is feasible again, taking each read as long as possible is
optimal (the classic argument for segmenting a line into the fewest feasible
pieces), and the property tests check it against brute force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from drivers.registers import READ_CODE, FunctionCode, Table


class Item(Protocol):
    """Anything that occupies registers: a register spec or a ratio register."""

    @property
    def table(self) -> Table: ...
    @property
    def address(self) -> int: ...
    @property
    def end(self) -> int: ...


class HoleLike(Protocol):
    @property
    def table(self) -> Table: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


class Strategy(StrEnum):
    """How reads are formed.

    ``single``: one read per value (what naive pollers do; the benchmark baseline).
    ``contiguous``: join values that touch, never read a register nobody asked for.
    ``merge``: also bridge gaps up to the profile's ``max_gap``, skipping holes.
    """

    SINGLE = "single"
    CONTIGUOUS = "contiguous"
    MERGE = "merge"


@dataclass(frozen=True)
class Read:
    """One request: function code, start, count, and the indexes of the items it carries."""

    function_code: FunctionCode
    table: Table
    address: int
    count: int
    items: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.address + self.count


class PlanError(ValueError):
    """The items cannot be read within the limits (one value larger than a read)."""


def plan(
    items: Sequence[Item],
    *,
    max_registers: int,
    max_gap: int = 0,
    holes: Sequence[HoleLike] = (),
    strategy: Strategy = Strategy.MERGE,
) -> list[Read]:
    """Reads covering every item exactly, ordered by table then address."""
    if not 1 <= max_registers <= 125:
        raise PlanError(f"max_registers must be 1..125, got {max_registers}")
    gap = {Strategy.SINGLE: -1, Strategy.CONTIGUOUS: 0, Strategy.MERGE: max_gap}[strategy]
    reads: list[Read] = []
    for table in (Table.HOLDING, Table.INPUT):
        idx = sorted(
            (i for i, it in enumerate(items) if it.table is table),
            key=lambda i: (items[i].address, items[i].end),
        )
        table_holes = sorted(
            ((h.start, h.end) for h in holes if h.table is table), key=lambda h: h[0]
        )
        current: list[int] = []
        lo = hi = 0
        for i in idx:
            it = items[i]
            if it.end - it.address > max_registers:
                raise PlanError(
                    f"value at {table.value} {it.address} needs {it.end - it.address} registers, "
                    f"more than max_registers {max_registers}"
                )
            if current and _fits(lo, hi, it.address, it.end, max_registers, gap, table_holes):
                current.append(i)
                hi = max(hi, it.end)
                continue
            if current:
                reads.append(Read(READ_CODE[table], table, lo, hi - lo, tuple(current)))
            current, lo, hi = [i], it.address, it.end
        if current:
            reads.append(Read(READ_CODE[table], table, lo, hi - lo, tuple(current)))
    return reads


def _fits(
    lo: int,
    hi: int,
    start: int,
    end: int,
    max_registers: int,
    max_gap: int,
    holes: Sequence[tuple[int, int]],
) -> bool:
    if max_gap < 0:
        return False
    if start - hi > max_gap:
        return False
    new_hi = max(hi, end)
    if new_hi - lo > max_registers:
        return False
    # The bridged registers hi..start-1 must not touch a hole (items never lie in one).
    return start <= hi or all(not (h_start < start and hi < h_end) for h_start, h_end in holes)
