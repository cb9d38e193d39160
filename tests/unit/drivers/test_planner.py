"""Request planning: named strategies table-style, then properties against brute force."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.planner import PlanError, Read, Strategy, plan
from drivers.profile import Hole, ProfileLibrary
from drivers.quantities import Quantity as Q
from drivers.registers import DataType, FunctionCode, RegisterSpec, Table

INPUT, HOLDING = Table.INPUT, Table.HOLDING


@dataclass(frozen=True)
class Item:
    table: Table
    address: int
    width: int

    @property
    def end(self) -> int:
        return self.address + self.width


def spec(q: Q, address: int, type_: DataType = DataType.FLOAT32, table: Table = INPUT):
    return RegisterSpec(quantity=q, table=table, address=address, type=type_)


def triples(reads: list[Read]) -> list[tuple[int, int, int]]:
    return [(int(r.function_code), r.address, r.count) for r in reads]


# The SDM630 input registers (all float32, 2 words each), as in its manual.
SDM630 = [
    (Q.VOLTAGE_L1_V, 0x00),
    (Q.VOLTAGE_L2_V, 0x02),
    (Q.VOLTAGE_L3_V, 0x04),
    (Q.CURRENT_L1_A, 0x06),
    (Q.CURRENT_L2_A, 0x08),
    (Q.CURRENT_L3_A, 0x0A),
    (Q.ACTIVE_POWER_L1_KW, 0x0C),
    (Q.ACTIVE_POWER_L2_KW, 0x0E),
    (Q.ACTIVE_POWER_L3_KW, 0x10),
    (Q.ACTIVE_POWER_KW, 0x34),
    (Q.APPARENT_POWER_KVA, 0x38),
    (Q.REACTIVE_POWER_KVAR, 0x3C),
    (Q.POWER_FACTOR, 0x3E),
    (Q.FREQUENCY_HZ, 0x46),
    (Q.ENERGY_IMPORT_KWH, 0x48),
    (Q.ENERGY_EXPORT_KWH, 0x4A),
    (Q.REACTIVE_ENERGY_IMPORT_KVARH, 0x4C),
    (Q.REACTIVE_ENERGY_EXPORT_KVARH, 0x4E),
    (Q.VOLTAGE_L1_L2_V, 0xC8),
    (Q.VOLTAGE_L2_L3_V, 0xCA),
    (Q.VOLTAGE_L3_L1_V, 0xCC),
    (Q.CURRENT_N_A, 0xE0),
]
SDM630_SPECS = [spec(q, a) for q, a in SDM630]

# By hand: 0..17 are nine touching floats; 0x34 is 34 registers further (> max_gap 12);
# 0x34..0x4F has gaps of 2, 2, 0, 6, 0, ... and spans 28 <= 50; 0xC8..0xCD touch;
# 0xE0 is 18 after 0xCE (> 12).
SDM630_MERGE = [(4, 0x00, 18), (4, 0x34, 28), (4, 0xC8, 6), (4, 0xE0, 2)]
SDM630_CONTIGUOUS = [
    (4, 0x00, 18),
    (4, 0x34, 2),
    (4, 0x38, 2),
    (4, 0x3C, 4),
    (4, 0x46, 10),
    (4, 0xC8, 6),
    (4, 0xE0, 2),
]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.MERGE, SDM630_MERGE),
        (Strategy.CONTIGUOUS, SDM630_CONTIGUOUS),
        (Strategy.SINGLE, [(4, a, 2) for _, a in SDM630]),
    ],
)
def test_sdm630_layout(strategy: Strategy, expected: list[tuple[int, int, int]]) -> None:
    reads = plan(SDM630_SPECS, max_registers=50, max_gap=12, strategy=strategy)
    assert triples(reads) == expected


def test_builtin_sdm630_profile_polls_in_four_requests() -> None:
    profile = ProfileLibrary().get("eastron-sdm630")
    reads = plan(
        profile.registers,
        max_registers=profile.limits.max_registers,
        max_gap=profile.limits.max_gap,
        holes=profile.limits.unreadable,
    )
    assert triples(reads) == SDM630_MERGE


def test_read_items_are_indexes_into_the_callers_list() -> None:
    items = [
        spec(Q.FREQUENCY_HZ, 10),
        spec(Q.VOLTAGE_L1_V, 0),
        spec(Q.ENERGY_IMPORT_KWH, 5, DataType.UINT32, HOLDING),
        spec(Q.CURRENT_L1_A, 2),
    ]
    reads = plan(items, max_registers=125, max_gap=10)
    # holding first, then input; within a read, items in address order
    assert [(r.table, r.items) for r in reads] == [(HOLDING, (2,)), (INPUT, (1, 3, 0))]
    assert triples(reads) == [(3, 5, 2), (4, 0, 12)]


def test_tables_are_never_merged_and_use_their_function_code() -> None:
    items = [
        spec(Q.VOLTAGE_L1_V, 0, table=HOLDING),
        spec(Q.VOLTAGE_L2_V, 2, table=INPUT),
        spec(Q.VOLTAGE_L3_V, 2, table=HOLDING),
        spec(Q.CURRENT_L1_A, 0, table=INPUT),
    ]
    reads = plan(items, max_registers=125, max_gap=10)
    assert triples(reads) == [(3, 0, 4), (4, 0, 4)]
    assert [r.function_code for r in reads] == [
        FunctionCode.READ_HOLDING_REGISTERS,
        FunctionCode.READ_INPUT_REGISTERS,
    ]


def test_max_registers_splits_a_contiguous_run() -> None:
    quantities = list(Q)[:10]
    items = [spec(q, i, DataType.UINT16) for i, q in enumerate(quantities)]
    reads = plan(items, max_registers=4)
    assert triples(reads) == [(4, 0, 4), (4, 4, 4), (4, 8, 2)]


def test_a_value_is_never_split_across_reads() -> None:
    # three float32 (2 words) under a limit of 5: 2+2 fit, the third would need 6
    items = [spec(Q.VOLTAGE_L1_V, 0), spec(Q.VOLTAGE_L2_V, 2), spec(Q.VOLTAGE_L3_V, 4)]
    assert triples(plan(items, max_registers=5)) == [(4, 0, 4), (4, 4, 2)]


@pytest.mark.parametrize(("gap", "reads"), [(0, 1), (5, 1), (6, 2)])
def test_max_gap_boundary(gap: int, reads: int) -> None:
    items = [spec(Q.VOLTAGE_L1_V, 0), spec(Q.VOLTAGE_L2_V, 2 + gap)]
    assert len(plan(items, max_registers=125, max_gap=5)) == reads


def test_contiguous_never_reads_an_unrequested_register() -> None:
    items = [spec(Q.VOLTAGE_L1_V, 0), spec(Q.VOLTAGE_L2_V, 3)]
    assert triples(plan(items, max_registers=125, max_gap=10, strategy=Strategy.CONTIGUOUS)) == [
        (4, 0, 2),
        (4, 3, 2),
    ]


@pytest.mark.parametrize(
    ("hole", "expected"),
    [
        # hole in the gap: never bridged
        (Hole(table=INPUT, start=3, count=1), [(4, 0, 2), (4, 6, 2)]),
        # hole touching either item's edge, still inside the gap
        (Hole(table=INPUT, start=2, count=1), [(4, 0, 2), (4, 6, 2)]),
        (Hole(table=INPUT, start=5, count=1), [(4, 0, 2), (4, 6, 2)]),
        # hole covering the whole gap and more
        (Hole(table=INPUT, start=2, count=4), [(4, 0, 2), (4, 6, 2)]),
        # hole in the other table, or outside the span: no effect
        (Hole(table=HOLDING, start=3, count=1), [(4, 0, 8)]),
        (Hole(table=INPUT, start=8, count=10), [(4, 0, 8)]),
    ],
)
def test_holes_are_never_crossed(hole: Hole, expected: list[tuple[int, int, int]]) -> None:
    items = [spec(Q.VOLTAGE_L1_V, 0), spec(Q.VOLTAGE_L2_V, 6)]
    assert triples(plan(items, max_registers=125, max_gap=10, holes=[hole])) == expected


def test_value_wider_than_max_registers_raises() -> None:
    items = [spec(Q.ENERGY_IMPORT_KWH, 100, DataType.UINT64)]
    with pytest.raises(PlanError, match=r"input 100 needs 4 registers, more than max_registers 3"):
        plan(items, max_registers=3)


@pytest.mark.parametrize("max_registers", [0, 126])
def test_max_registers_outside_modbus_limit_raises(max_registers: int) -> None:
    with pytest.raises(PlanError):
        plan([spec(Q.VOLTAGE_L1_V, 0)], max_registers=max_registers)


def test_no_items_no_reads() -> None:
    assert plan([], max_registers=125) == []


# --- properties ----------------------------------------------------------------------------


_SLOT = st.tuples(
    st.one_of(st.integers(0, 6), st.integers(0, 25), st.integers(0, 200)),  # gap before the item
    st.sampled_from([1, 2, 4]),  # width
    st.booleans(),  # a hole in that gap?
    st.floats(0, 1),  # where in the gap the hole starts
    st.floats(0, 1),  # how much of the rest it covers
)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[Item], list[Hole], int, int]:
    """Non-overlapping items in both tables, holes only in the gaps between/around them."""
    items: list[Item] = []
    holes: list[Hole] = []
    for table in (INPUT, HOLDING):
        pos = draw(st.integers(0, 2000))
        for gap, width, hole, where, size in draw(st.lists(_SLOT, max_size=14)):
            if gap and hole:
                offset = min(int(where * gap), gap - 1)
                count = max(1, round(size * (gap - offset)))
                holes.append(Hole(table=table, start=pos + offset, count=count))
            pos += gap
            items.append(Item(table, pos, width))
            pos += width
        if draw(st.booleans()):
            holes.append(Hole(table=table, start=pos + draw(st.integers(0, 3)), count=5))
    order = draw(st.permutations(range(len(items))))
    return (
        [items[i] for i in order],
        holes,
        draw(st.one_of(st.integers(4, 16), st.integers(4, 125))),
        draw(st.one_of(st.integers(0, 4), st.integers(0, 20))),
    )


def _gap_limit(strategy: Strategy, max_gap: int) -> int:
    return {Strategy.SINGLE: -1, Strategy.CONTIGUOUS: 0, Strategy.MERGE: max_gap}[strategy]


def _feasible(seg: list[Item], holes: list[Hole], max_registers: int, gap_limit: int) -> bool:
    """Can these consecutive (by address) items share one read? Stated independently."""
    if len(seg) > 1 and gap_limit < 0:
        return False
    lo, hi = seg[0].address, seg[-1].end
    if hi - lo > max_registers:
        return False
    if any(b.address - a.end > gap_limit for a, b in itertools.pairwise(seg)):
        return False
    return not any(h.table is seg[0].table and h.start < hi and lo < h.end for h in holes)


def _optimum(items: list[Item], holes: list[Hole], max_registers: int, gap_limit: int) -> int:
    """Fewest reads: DP over every segmentation of each table's items sorted by address."""
    total = 0
    for table in (INPUT, HOLDING):
        xs = sorted((it for it in items if it.table is table), key=lambda it: it.address)
        best = [0] + [10**9] * len(xs)
        for j in range(1, len(xs) + 1):
            for i in range(j):
                if _feasible(xs[i:j], holes, max_registers, gap_limit):
                    best[j] = min(best[j], best[i] + 1)
        total += best[-1]
    return total


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(layout=layouts())
def test_plan_properties(layout: tuple[list[Item], list[Hole], int, int]) -> None:
    # all three strategies on each layout: generating layouts is the slow part
    for strategy in Strategy:
        check_plan(strategy, *layout)


def check_plan(
    strategy: Strategy, items: list[Item], holes: list[Hole], max_registers: int, max_gap: int
) -> None:
    reads = plan(
        items, max_registers=max_registers, max_gap=max_gap, holes=holes, strategy=strategy
    )
    gap_limit = _gap_limit(strategy, max_gap)

    # ordered by table (holding, input) then address
    keys = [(r.table is INPUT, r.address) for r in reads]
    assert keys == sorted(keys)

    carried = sorted(i for r in reads for i in r.items)
    assert carried == list(range(len(items)))

    for r in reads:
        # (b) and (c)
        assert 1 <= r.count <= max_registers
        assert 1 <= int(r.function_code) <= 4
        assert int(r.function_code) == (3 if r.table is HOLDING else 4)
        assert r.end <= 0x10000
        # (a) registers come from items or bridged gaps of at most gap_limit, no hole
        covered: set[int] = set()
        for i in r.items:
            assert items[i].table is r.table
            covered.update(range(items[i].address, items[i].end))
        regs = list(range(r.address, r.end))
        assert regs[0] in covered
        assert regs[-1] in covered
        run = 0
        for a in regs:
            run = 0 if a in covered else run + 1
            assert run <= max(gap_limit, 0)
        for h in holes:
            assert not (h.table is r.table and h.start < r.end and r.address < h.end)

    # (a) every item wholly inside exactly one read of its own table
    for i, it in enumerate(items):
        inside = [
            r for r in reads if r.table is it.table and r.address <= it.address < it.end <= r.end
        ]
        assert len(inside) == 1
        assert i in inside[0].items

    # (d) minimal for the constraints
    assert len(reads) == _optimum(items, holes, max_registers, gap_limit)

    # (e) single: one read per item, exactly the item
    if strategy is Strategy.SINGLE:
        assert len(reads) == len(items)
        for r in reads:
            (i,) = r.items
            assert (r.table, r.address, r.count) == (
                items[i].table,
                items[i].address,
                items[i].width,
            )
