"""A core snapshot written by an earlier version continues in this one, record for record.

Gateways upgrade in place: the first snapshot a new version reads is the one the
previous version wrote, and a rollback reads the new version's. Each
``tests/cases/snapshot-*/`` holds a ``core.npz`` written by the core of commit
5106a32 (one ``SiteCore`` class, before the core was split into parts) and a
``case.json`` naming the golden replay case it comes from and ``cut``, the number
of that case's rows fed (one row at a time, :func:`feed`) before the snapshot was
saved. The tests continue from the file and require exactly the messages one
uninterrupted run publishes after those rows.

``python tests/unit/test_snapshot_golden.py`` writes the files again with the code
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
from agent.core.engine import load_kernel
from agent.core.site import Reading, SiteCore
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

CASES = Path(__file__).resolve().parents[1] / "cases"
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
    assert _wire(got) == _wire(expected)

    # The file carries what the rows before the cut left behind: without it, the same
    # rows give other records (a partial first interval, a month without its first day).
    fresh = SiteCore(config, LIBRARY)
    assert _wire(feed(fresh, rows[cut:]) + fresh.flush()) != _wire(expected)


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=lambda p: p.name.removeprefix("snapshot-"))
def test_the_new_core_writes_what_the_old_one_reads(case: Path, tmp_path: Path) -> None:
    """Every key and array of the old file, with the same values: a rollback continues."""
    config, rows, cut = _case(case)
    site = SiteCore(config, LIBRARY)
    feed(site, rows[:cut])
    site.save_snapshot(tmp_path / "core.npz")
    meta, arrays = _content(tmp_path / "core.npz")
    old_meta, old_arrays = _content(case / "core.npz")
    assert {k: meta.get(k) for k in old_meta} == old_meta
    for name, old in old_arrays.items():
        assert name in arrays, name
        assert arrays[name].dtype == old.dtype, name
        np.testing.assert_array_equal(arrays[name], old, err_msg=name)


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
