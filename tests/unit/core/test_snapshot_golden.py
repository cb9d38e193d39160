"""A core snapshot written by an earlier version continues in this one, record for record.

Gateways upgrade in place: the first snapshot a new version reads is the one the
previous version wrote, and a rollback reads the new version's. Each
``tests/cases/snapshot-*/`` holds a ``core.npz`` written by the core of commit
5106a32 (one ``SiteCore`` class, before the core was split into parts) and a
``case.json`` naming the golden replay case it comes from and ``cut``, the number
of that case's rows fed (one row at a time, :func:`feed`) before the snapshot was
saved. The tests continue from the file and require exactly the messages one
uninterrupted run publishes after those rows.

``python tests/unit/core/test_snapshot_golden.py`` writes the files again with the code
of the tree it runs in (only ever with a core whose snapshots must stay readable).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import load_config
from agent.config.models import AgentConfig
from agent.contract import Message, encode
from agent.core.channels import ChannelKind, ChannelSpec, Event
from agent.core.engine import Closed, Engine, load_kernel
from agent.core.site import Reading, SiteCore
from agent.core.snapshot import Snapshot
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

CASES = Path(__file__).resolve().parents[2] / "cases"
SNAPSHOT_CASES = sorted(p for p in CASES.glob("snapshot-*") if p.is_dir())
LIBRARY = ProfileLibrary()

# numba's default cache: the cases' configs name no state_dir (see test_replay_cases).
load_kernel()


def feed(site: SiteCore, rows: list[Reading]) -> list[Message]:
    """One row at a time, then what the hold releases on the readings' clock."""
    out: list[Message] = []
    for r in rows:
        out += site.feed([r])
        out += site.flush(now_ms=r.ts)
    return out


def _rows(path: Path) -> list[Reading]:
    """The case's ``ts,device,quantity,value`` rows (Unix ms, all values present), in
    file order, which is time order."""
    with path.open(newline="") as f:
        return [
            Reading(r["device"], int(r["ts"]), {Quantity(r["quantity"]): float(r["value"])})
            for r in csv.DictReader(f)
        ]


def _case(case: Path) -> tuple[AgentConfig, list[Reading], int]:
    spec = json.loads((case / "case.json").read_text())
    source = CASES / spec["source"]
    return load_config(source / "config.yaml"), _rows(source / "readings.csv"), int(spec["cut"])


def _wire(messages: list[Message]) -> list[str]:
    return [f"{m.topic} {encode(m.payload).decode()}" for m in messages]


def _content(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(bytes(z["meta"]).decode())
    return meta, arrays


def test_cases_exist() -> None:
    assert {p.name for p in SNAPSHOT_CASES} >= {
        "snapshot-v1-parent-children",
        "snapshot-v1-month-boundary",
    }


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=lambda p: p.name.removeprefix("snapshot-"))
def test_an_old_snapshot_continues_like_one_run(case: Path) -> None:
    config, rows, cut = _case(case)
    one_run = SiteCore(config, LIBRARY)
    feed(one_run, rows[:cut])
    expected = feed(one_run, rows[cut:]) + one_run.flush()

    restored = SiteCore(config, LIBRARY)
    assert restored.load_snapshot(case / "core.npz")
    got = feed(restored, rows[cut:]) + restored.flush()
    # A record the old file held for its children was built before energy records had
    # coverage: it goes out as it was built, without it; every other one has it.
    meta, _ = _content(case / "core.npz")
    held = {(end, dev) for end, dev, _ in meta["held"]}
    assert _wire(got) == _wire([_without_coverage(m) if _key(m) in held else m for m in expected])

    # The file carries what the rows before the cut left behind: without it, the same
    # rows give other records (a partial first interval, a month without its first day).
    fresh = SiteCore(config, LIBRARY)
    assert _wire(feed(fresh, rows[cut:]) + fresh.flush()) != _wire(expected)


COVERAGE = ("measured_share", "interpolated_share", "missing_share")


def _key(m: Message) -> tuple[int, str]:
    return int(m.payload["ts"]), m.topic.split("/")[-2]


def _without_coverage(m: Message) -> Message:
    if not m.topic.endswith("/energy"):
        return m
    payload = {k: v for k, v in m.payload.items() if k not in COVERAGE}
    return m._replace(payload=payload)


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=lambda p: p.name.removeprefix("snapshot-"))
def test_the_new_core_writes_what_the_old_one_reads(case: Path, tmp_path: Path) -> None:
    """Every key and array of the old file, with the same values: a rollback continues.

    Except each channel's glitch limit: a channel without one had none then and has its
    carrier's default now (docs/core.md, "Which limit applies"). A core restored from a
    file keeps the limits in force, not those saved, so that column is never read back.

    And the windows' keys: the site's series keeps them now, and writes the first
    format's from it — the same finished days (summed in another order: to 1e-9), the
    same day, and an empty factor ring the old core fills again (``weights_end`` -1)."""
    config, rows, cut = _case(case)
    site = SiteCore(config, LIBRARY)
    feed(site, rows[:cut])
    site.save_snapshot(tmp_path / "core.npz")
    meta, arrays = _content(tmp_path / "core.npz")
    old_meta, old_arrays = _content(case / "core.npz")
    # Held parent records carry their tree tags (issue 17) and the coverage energy
    # records carry (issue 13) now; an old core passes them on as they are, so only they
    # differ.
    for held in meta.get("held", []):
        payload = held[2]
        assert payload.pop("root") == "true" and "parent" not in payload
        held[2] = {k: v for k, v in payload.items() if k not in COVERAGE}
    windows_keys = {"days", "weights_end"}
    assert {k: meta.get(k) for k in old_meta if k not in windows_keys} == {
        k: v for k, v in old_meta.items() if k not in windows_keys
    }
    assert meta["weights_end"] == -1
    assert not arrays["weights"].any()
    old_arrays.pop("weights")
    assert meta["days"].keys() == old_meta["days"].keys()
    for day, sums in old_meta["days"].items():
        assert meta["days"][day] == pytest.approx(sums, abs=1e-9)
    # the one column that differs: inf then, the limit in force (2e6 kW) now
    (limit,) = np.flatnonzero((arrays["F"] != old_arrays["F"]).any(axis=0))
    in_force = [site.engine.max_rate(c) for c in range(len(site.devices))]
    assert np.isinf(old_arrays["F"][:, limit]).all()
    assert arrays["F"][:, limit].tolist() == in_force == [2e6] * len(in_force)
    for name, old in old_arrays.items():
        assert name in arrays, name
        assert arrays[name].dtype == old.dtype, name
        new = arrays[name]
        if name == "F":
            new, old = np.delete(new, limit, axis=1), np.delete(old, limit, axis=1)
        np.testing.assert_array_equal(new, old, err_msg=name)


def test_the_parent_record_held_at_the_cut_comes_out_with_its_unmetered() -> None:
    """parent-children is cut after main's and line-a's 00:05 readings, before line-b's:
    main's 00:05 record is held in the file, waiting for line-b. Its unmetered energy is
    the case's hand arithmetic: 3.0 - 1.5 - 0.6 = 0.9 kWh."""
    case = CASES / "snapshot-v1-parent-children"
    meta, _ = _content(case / "core.npz")
    assert [(end, dev) for end, dev, _ in meta["held"]] == [(1704067500000, "main")]
    config, rows, cut = _case(case)
    site = SiteCore(config, LIBRARY)
    assert site.load_snapshot(case / "core.npz")
    energy = [m.payload for m in feed(site, rows[cut:]) if m.topic.endswith("/main/energy")]
    assert (energy[0]["ts"], energy[0]["unmetered_kwh"]) == (1704067500000, 0.9)


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=lambda p: p.name.removeprefix("snapshot-"))
def test_an_old_snapshot_gets_the_coverage_one_run_has(case: Path) -> None:
    """The first format kept no coverage and only the latest rejected reading. Restored,
    each slot it had closed (and the open slot so far) is read from its flags; in these
    cases' normal polling that is measured, so the engine holds exactly what one run of
    this core holds at the cut, and its records' coverage continues the same."""
    config, rows, cut = _case(case)
    one_run = SiteCore(config, LIBRARY)
    feed(one_run, rows[:cut])
    restored = SiteCore(config, LIBRARY)
    assert restored.load_snapshot(case / "core.npz")
    for name, array in one_run.engine.state_arrays().items():
        np.testing.assert_array_equal(restored.engine.state_arrays()[name], array, err_msg=name)
    assert restored.engine.ring_cov.any()  # the slots closed before the cut have coverage


def _first_format(snap: Snapshot) -> Snapshot:
    """``snap`` as the first format wrote it: only the keys and arrays of the golden files."""
    meta, arrays = _content(SNAPSHOT_CASES[0] / "core.npz")
    old = Snapshot(snap.path)
    old.meta = {k: v for k, v in snap.meta.items() if k in meta}
    old.arrays = {k: v for k, v in snap.arrays.items() if k in arrays}
    assert set(old.arrays) == set(arrays) - {"weights"}  # the engine's part, none missing
    return old


def _engine() -> Engine:
    counter = ChannelSpec("m/kwh", max_rate_per_h=200.0, max_gap_s=300.0)
    power = ChannelSpec("p/kw", ChannelKind.POWER, max_rate_per_h=500.0, max_gap_s=300.0)
    return Engine([counter, power], 60)


def _stream(*rows: tuple[int, str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channel, 'MM:SS' after 10:00 on 2024-01-15 UTC, value) rows as the engine's arrays."""
    ten = 1_705_312_800_000
    ts = [ten + int(t[:2]) * 60_000 + int(t[3:]) * 1000 for _, t, _ in rows]
    return np.array([c for c, _, _ in rows]), np.array(ts), np.array([v for _, _, v in rows])


def test_a_first_format_snapshot_reads_coverage_from_the_flags() -> None:
    """A slot flagged INTERPOLATED counts as interpolated, GAP as missing, anything else as
    measured: for a counter across a polling gap and a power meter across one, exactly
    what this core counts itself. A run of rejected readings restarts at the latest."""
    before = _stream(
        (0, "00:00", 100.0),
        (1, "00:00", 60.0),
        (0, "01:00", 101.0),
        (1, "01:00", 60.0),
        (0, "09:00", 109.0),  # 8 minutes without a reading: interpolated
        (1, "09:00", 60.0),  # 8 minutes without power: a gap, missing
        (0, "09:20", 109.4),
        (1, "09:20", 60.0),
        (0, "09:30", 0.0),  # reset: rejected, a run of one ...
        (0, "09:40", 0.1),  # ... and of two
    )
    after = _stream(
        (0, "09:50", 0.2),
        (1, "09:50", 60.0),
        (0, "10:00", 0.3),
        (1, "10:00", 60.0),
        (0, "11:00", 1.3),
    )
    whole = _engine()
    whole.feed(*before)
    snap = Snapshot(Path("core.npz"))
    whole.save(snap)
    upgraded = _engine()
    upgraded.restorer(_first_format(snap), same_interval=True)()
    np.testing.assert_array_equal(upgraded.ring_cov, whole.ring_cov)
    expected, got = whole.feed(*after), upgraded.feed(*after)
    # the whole run rebaselines at 0.0 (10:09:30); the upgraded one knew only 0.1 (10:09:40)
    assert [(int(e), int(t) % 60_000, v) for e, t, v in zip(*_events(expected), strict=True)] == [
        (Event.GLITCH, 50_000, 0.2),
        (Event.RESET, 30_000, 0.0),
    ]
    assert [(int(e), int(t) % 60_000, v) for e, t, v in zip(*_events(got), strict=True)] == [
        (Event.GLITCH, 50_000, 0.2),
        (Event.GLITCH, 0, 0.3),
        (Event.RESET, 40_000, 0.1),
    ]
    # everything else is as it was: the power meter's slots, the counter's first slots
    for closed in (expected, got):
        p = closed.slots.channel == 1
        assert closed.slots.measured_ms[p].tolist() == [60_000]  # 10:09, as polled


def _events(closed: Closed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return closed.events.event, closed.events.ts, closed.events.value


def _write(case: Path, source: str, cut: int) -> None:
    case.mkdir(exist_ok=True)
    (case / "case.json").write_text(json.dumps({"source": source, "cut": cut}) + "\n")
    config, rows, _ = _case(case)
    site = SiteCore(config, LIBRARY)
    feed(site, rows[:cut])
    site.save_snapshot(case / "core.npz")


if __name__ == "__main__":
    # parent-children: after main's and line-a's readings at 00:05:00, before line-b's.
    _write(CASES / "snapshot-v1-parent-children", "replay-parent-children", 92)
    # month-boundary: 09:00 local on Jan 31, with Jan 30 finished; the month record at
    # midnight needs it.
    _write(CASES / "snapshot-v1-month-boundary", "replay-month-boundary", 41)
