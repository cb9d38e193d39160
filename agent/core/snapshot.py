"""Save and restore the core's state, so a restart neither resets nor double-counts.

One ``.npz`` file: the engine's arrays plus a JSON document for the site's
bookkeeping, written to a temporary file, fsynced and renamed over the old one,
so a power cut leaves either the old snapshot or the new one, never half of
each. Channels are matched by key (``device/quantity``) on restore: a device
added to the config starts fresh, one removed is dropped.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1


class SnapshotError(ValueError):
    """The snapshot cannot be used (corrupt, other format); the caller starts fresh."""


def write_atomic(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    payload = dict(arrays)
    payload["meta"] = np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode(), np.uint8)
    np.savez(buf, **payload)  # type: ignore[arg-type]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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
    return arrays, meta
