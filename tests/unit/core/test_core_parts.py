"""The core's parts and the rules between them.

Only ``agent/core/engine.py`` (and the kernel itself) knows the kernel's column
layout; the kernel's constants are the enums' values; the window names are one
list; and the parts behind ``SiteCore`` (engine, meter tree) do their job on
their own, with numbers worked out by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from agent.contract import WINDOWS
from agent.core import kernel
from agent.core.channels import DEMAND_SLOTS, RING, SLOT_MS, ChannelKind, ChannelSpec, Event, Flag
from agent.core.engine import Engine
from agent.core.snapshot import Snapshot, SnapshotError
from agent.core.tree import MeterTree, Released
from agent.core.windows import CALENDAR, ROLLING

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, on every interval boundary
MIN = SLOT_MS

# --- one definition of each constant ------------------------------------------------------


def test_kernel_constants_are_the_enums() -> None:
    """KIND_*, FLAG_*, EV_* in the kernel carry the values of ChannelKind, Flag, Event,
    name for name, and each member has its constant."""
    for prefix, enum in (("KIND_", ChannelKind), ("FLAG_", Flag), ("EV_", Event)):
        names = [n for n in dir(kernel) if n.startswith(prefix)]
        consts = {n.removeprefix(prefix): getattr(kernel, n) for n in names}
        members = {m.name: int(m) for m in enum if m.name != "NONE"}
        assert consts == members, prefix
        assert all(type(v) is int for v in consts.values()), "numba folds plain ints"
    assert kernel.DEMAND_SLOTS == DEMAND_SLOTS


def test_kernel_columns_are_distinct() -> None:
    for prefix, width in (("I_", kernel.NI), ("F_", kernel.NF)):
        cols = [getattr(kernel, n) for n in dir(kernel) if n.startswith(prefix)]
        assert sorted(cols) == list(range(width)), prefix


def test_the_core_computes_the_contracts_windows() -> None:
    """Each of the contract's windows, in its order, is one the core computes: rolling
    ones by their length, calendar ones by the site's calendar."""
    assert (*ROLLING, *CALENDAR) == WINDOWS
    # the ring holds the longest rolling window and a whole 25-hour local day
    assert max(ROLLING.values()) <= RING and RING >= 25 * 60


# Indexing the kernel's state columns: engine.I[...], self.F[...], k.I_..., kernel.F_...
_LAYOUT = re.compile(r"\.(I|F)\[|\b(k|kernel)\.(I|F)_[A-Z]|\b(I|F)_[A-Z_]+\b")


def test_only_the_engine_knows_the_kernel_layout() -> None:
    allowed = {ROOT / "agent/core/engine.py", ROOT / "agent/core/kernel.py", Path(__file__)}
    offenders = []
    for top in ("agent", "drivers", "tests", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path in allowed:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if _LAYOUT.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "ask the Engine instead:\n" + "\n".join(offenders)


def test_the_layout_check_sees_an_offender() -> None:
    for line in ("engine.I[c, k.I_HAS_REF]", "x = kernel.F_WRAP", "eng.F[c] = row"):
        assert _LAYOUT.search(line), line
    assert not _LAYOUT.search("engine.has_reference(c) and IF_X")


# --- the engine's questions -------------------------------------------------------------


def _engine(max_rate_per_h: float = 1000.0) -> Engine:
    specs = [ChannelSpec("a/kwh", max_rate_per_h=max_rate_per_h), ChannelSpec("b/kwh")]
    return Engine(specs, 300, demand=[True, False])


def _feed(engine: Engine, *readings: tuple[int, int, float]) -> list[tuple[int, int, float]]:
    chans, ts, vals = zip(*readings, strict=True)
    rec = engine.feed(np.array(chans), np.array(ts), np.array(vals)).records
    return [
        (int(c), int(e), float(v))
        for c, e, v in zip(rec.channel, rec.end_ms, rec.energy, strict=True)
    ]


def test_engine_answers_what_the_site_asks() -> None:
    eng = _engine()
    assert (eng.has_reference(0), eng.complete_end()) == (False, 0)
    assert eng.demand_flags() == [True, False]
    # a: 10.0 kWh at 00:00, 18.0 at 00:08: linear, 5.0 kWh by 00:05, which closes.
    assert _feed(eng, (0, T0, 10.0), (0, T0 + 8 * MIN, 18.0)) == [(0, T0 + 5 * MIN, 5.0)]
    assert (eng.has_reference(0), eng.emitted_end(0)) == (True, T0 + 5 * MIN)
    assert (eng.has_reference(1), eng.complete_end()) == (False, T0 + 5 * MIN)
    # b's first reading at 00:01:40 opens the interval 00:00-00:05, not yet closed: the
    # site is complete up to 00:00 until b closes 00:05.
    _feed(eng, (1, T0 + 100_000, 1.0))
    assert (eng.has_reference(1), eng.emitted_end(1), eng.complete_end()) == (True, T0, T0)


def test_engine_restore_keeps_the_limits_of_the_config_in_force() -> None:
    """A snapshot taken with a 1000 kW limit, restored under a 10 kW one: the new limit."""
    before = _engine(max_rate_per_h=1000.0)
    _feed(before, (0, T0, 10.0), (0, T0 + 60_000, 11.0))
    snap = Snapshot(Path("core.npz"))
    before.save(snap)
    after = _engine(max_rate_per_h=10.0)
    after.restorer(snap, same_interval=True)()
    assert after.emitted_end(0) == before.emitted_end(0)
    # +1 kWh in 60 s is 60 kW: a glitch under 10 kW, rejected; the old limit took it.
    _feed(after, (0, T0 + 120_000, 12.0))
    _feed(before, (0, T0 + 120_000, 12.0))
    assert (after.events[0, Event.GLITCH], before.events[0, Event.GLITCH]) == (1, 0)


def test_engine_refuses_arrays_of_another_shape() -> None:
    snap = Snapshot(Path("core.npz"))
    _engine().save(snap)
    snap.arrays["ring_e"] = snap.arrays["ring_e"][:, :100]
    with pytest.raises(SnapshotError, match="ring_e"):
        _engine().restorer(snap, same_interval=True)


def test_a_snapshot_key_is_written_once() -> None:
    snap = Snapshot(Path("core.npz"))
    _engine().save(snap)
    with pytest.raises(ValueError, match="keys"):
        snap.put("keys", [])


# --- the meter tree ---------------------------------------------------------------------


class Closing:
    """Which interval each device has closed up to, for the tree's may_deliver."""

    def __init__(self) -> None:
        self.upto: dict[int, int] = {}

    def may_deliver(self, i: int, end: int) -> bool:
        return i in self.upto and self.upto[i] < end


def _tree(closing: Closing) -> MeterTree:
    # main (0) feeds line-a (1) and line-b (2)
    return MeterTree(["main", "line-a", "line-b"], [None, 0, 0], closing.may_deliver)


def test_a_parent_record_waits_for_every_child() -> None:
    closing = Closing()
    closing.upto = {0: 0, 1: 0, 2: 0}
    tree = _tree(closing)
    end = T0 + 5 * MIN
    assert not tree.closed(1, end, 1.5, {"ts": end})  # a child goes out at once
    assert tree.closed(0, end, 3.0, {"ts": end})  # the parent is held ...
    assert tree.release(final=False) == []  # ... while line-b may still deliver
    assert not tree.closed(2, end, 0.5, {"ts": end})
    # 3.0 - 1.5 - 0.5 = 1.0 kWh unmetered
    assert tree.release(final=False) == [Released(0, end, {"ts": end}, 1.0, 0)]
    assert tree.release(final=True) == []


def test_a_child_short_of_the_interval_leaves_unmetered_unknown_and_is_counted() -> None:
    """line-b started inside the interval (0.5 kWh of it, partial): 3.0 - 1.5 - 0.5 = 1.0
    would count line-b's first minutes as unmetered. Null, and one child counted."""
    closing = Closing()
    closing.upto = {0: 0, 1: 0, 2: 0}
    tree = _tree(closing)
    end = T0 + 5 * MIN
    tree.closed(1, end, 1.5, {})
    tree.closed(2, end, 0.5, {}, covered=False)
    assert tree.closed(0, end, 3.0, {})
    assert tree.release(final=False) == [Released(0, end, {}, None, 1)]
    # the parent itself short of its interval (its first): unknown, no child counted
    end += 5 * MIN
    tree.closed(1, end, 1.5, {})
    tree.closed(2, end, 0.5, {})
    assert tree.closed(0, end, 3.0, {}, covered=False)
    assert tree.release(final=False) == [Released(0, end, {}, None, 0)]


def test_a_silent_child_is_not_waited_for_and_unmetered_is_unknown() -> None:
    closing = Closing()
    closing.upto = {0: 0, 1: 0}  # line-b has no data
    tree = _tree(closing)
    end = T0 + 5 * MIN
    tree.closed(1, end, 1.5, {})
    assert tree.closed(0, end, 3.0, {})
    assert tree.release(final=False) == [Released(0, end, {}, None, 1)]


def test_the_site_hold_releases_a_parent_waiting_for_a_late_child() -> None:
    closing = Closing()
    closing.upto = {0: 0, 1: 0, 2: 0}
    tree = _tree(closing)
    end = T0 + 5 * MIN
    tree.closed(0, end, 3.0, {})
    assert tree.release(final=False, older_than=end - 1) == []
    assert tree.release(final=False, older_than=end) == [Released(0, end, {}, None, 2)]


@pytest.mark.parametrize("same_interval", [True, False])
def test_the_tree_continues_from_its_snapshot(same_interval: bool) -> None:
    closing = Closing()
    closing.upto = {0: 0, 1: 0, 2: 0}
    end = T0 + 5 * MIN
    tree = _tree(closing)
    tree.closed(1, end, 1.5, {})
    tree.closed(0, end, 3.0, {"ts": end})
    snap = Snapshot(Path("core.npz"))
    tree.save(snap)
    restored = _tree(closing)
    restored.restorer(snap, same_interval=same_interval)()
    restored.closed(2, end, 0.5, {})
    expected = [Released(0, end, {"ts": end}, 1.0, 0)] if same_interval else []
    assert restored.release(final=True) == expected
