"""Save and restore the core's state, so a restart neither resets nor double-counts.

One ``.npz`` file: the engine's arrays plus a JSON document for the site's
bookkeeping, written to a temporary file, fsynced and renamed over the old one,
so a power cut leaves either the old snapshot or the new one, never half of
each. Channels are matched by key (``device/quantity``) on restore: a device
added to the config starts fresh, one removed is dropped.

Each part of the core that keeps state (:class:`Part`: the engine, the devices,
the meter tree, the site windows) writes its own keys and arrays and reads them
back; :class:`Snapshot` refuses a key written twice. The keys stay side by side
in one flat document, as the first version wrote them, so a gateway that
upgrades continues from its old file and one that rolls back from its new one
(``docs/deploy.md``). A part may add keys; it never changes what one means.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import numpy as np

FORMAT = 1

T = TypeVar("T")


class SnapshotError(ValueError):
    """The snapshot cannot be used (corrupt, other format); the caller starts fresh."""


@dataclass
class Snapshot:
    """The keys and arrays of one snapshot, being written or read back."""

    path: Path
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any) -> None:
        if key in self.meta or key == "format":
            raise ValueError(f"snapshot key {key!r} written twice")
        self.meta[key] = value

    def put_array(self, name: str, array: np.ndarray) -> None:
        if name in self.arrays or name == "meta":
            raise ValueError(f"snapshot array {name!r} written twice")
        self.arrays[name] = array

    def value(self, key: str, parse: Callable[[Any], T]) -> T:
        """``parse(meta[key])``; a missing or malformed value is a SnapshotError."""
        try:
            return parse(self.meta[key])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"{self.path}: incomplete snapshot ({key}: {exc!r})") from exc

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        a = self.arrays.get(name)
        if a is None or a.shape != shape:
            raise SnapshotError(f"{self.path}: snapshot array {name} missing or of another shape")
        return a


class Part(Protocol):
    """A piece of the core that keeps state across a restart."""

    def save(self, snap: Snapshot) -> None:
        """Put this part's keys and arrays into ``snap``."""

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        """Read and check this part's keys in ``snap`` (SnapshotError if they are unusable)
        and return what puts them in place. Every part is checked before any is
        restored, so a bad file leaves the whole core fresh, never half restored.
        ``same_interval``: the file was written with the publish interval in force now
        (state kept per interval is dropped otherwise)."""


def write_atomic(snap: Snapshot) -> None:
    path = snap.path
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(snap.arrays)
    arrays["meta"] = np.frombuffer(json.dumps({"format": FORMAT, **snap.meta}).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            _write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        # A full disk: the half-written file would hold the space the outbox needs.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez`` writes (a stored zip of ``.npy`` members), each array's memory
    handed to the file as it is. ``np.savez`` copies every array (``tobytes``) and the
    snapshot was built in a buffer first: with 200 meters, 8 MB of rings needed some
    20 MB more for a moment every minute, which glibc kept as the process's RSS."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, array in arrays.items():
            a = np.ascontiguousarray(array)  # a copy only for a slice (the engine's I, F)
            with z.open(name + ".npy", "w", force_zip64=True) as member:
                header = np.lib.format.header_data_from_array_1_0(a)
                np.lib.format.write_array_header_1_0(member, header)
                member.write(a.data.cast("B") if a.size else b"")


def read(path: Path) -> Snapshot:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            meta = json.loads(bytes(data["meta"]).decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        # EOFError: an empty file; BadZipFile: a truncated one (neither is an OSError)
        raise SnapshotError(f"{path}: unreadable snapshot ({exc})") from exc
    if not isinstance(meta, dict):
        raise SnapshotError(f"{path}: unreadable snapshot (no metadata)")
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path}: snapshot format {meta.get('format')} is not {FORMAT}")
    return Snapshot(path, arrays, meta)
