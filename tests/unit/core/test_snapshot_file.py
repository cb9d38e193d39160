"""The snapshot file: what a gateway writes every minute, read back as written, at little memory.

A gateway with 200 meters writes a snapshot of ~8 MB (the engine's rings) every
minute. Built in memory first, each write needed two or three times that for a
moment, and glibc kept the freed buffers: the peak became the gateway's RSS.
"""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np

from agent.core import snapshot
from agent.core.snapshot import Snapshot


def _snap(path: Path) -> Snapshot:
    snap = Snapshot(path)
    rng = np.random.default_rng(7)
    snap.put_array("ring_e", rng.random((400, 1536)))  # 4.9 MB, as 200 meters' rings
    snap.put_array("ring_cov", rng.integers(0, 60_000, (400, 1536, 2), dtype=np.uint16))
    wide = rng.integers(-(2**62), 2**62, (400, 30), dtype=np.int64)
    snap.put_array("I", wide[:, :20])  # a column slice, as the engine saves its first format
    snap.put_array("empty", np.zeros((0, 3)))
    snap.put("keys", ["m1/energy", "米/energy"])
    return snap


def test_a_snapshot_reads_back_as_written(tmp_path: Path) -> None:
    snap = _snap(tmp_path / "core.npz")
    snapshot.write_atomic(snap)
    back = snapshot.read(tmp_path / "core.npz")
    assert back.meta == {"format": 1, "keys": ["m1/energy", "米/energy"]}
    assert set(back.arrays) == set(snap.arrays)
    for name, a in snap.arrays.items():
        assert back.arrays[name].dtype == a.dtype
        np.testing.assert_array_equal(back.arrays[name], a)
    # A plain .npz (numpy reads it as such): what an engineer opens to look inside.
    with np.load(tmp_path / "core.npz") as data:
        np.testing.assert_array_equal(data["ring_e"], snap.arrays["ring_e"])
    with zipfile.ZipFile(tmp_path / "core.npz") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert not (tmp_path / "core.npz.tmp").exists()


def test_writing_a_snapshot_does_not_copy_it_in_memory(tmp_path: Path) -> None:
    snap = _snap(tmp_path / "core.npz")
    size = sum(a.nbytes for a in snap.arrays.values())
    assert size > 7_000_000
    snapshot.write_atomic(snap)  # imports and first-use caches outside the measurement
    tracemalloc.start()
    try:
        snapshot.write_atomic(snap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The arrays go to the file as they are; only the sliced one is copied (64 KB).
    assert peak < 500_000, f"{peak:,} bytes allocated to write {size:,}"
