"""``history export``: the history as JSON lines, and reading such a file back to verify it.

One JSON object per line, each with a ``type``:

* ``export`` (first line): site, gateway, MQTT prefix, the span exported
  (``from``/``to``, Unix ms or null), ``pruned_before`` and when it was made;
* ``ledger``: ``{"type": "ledger", "entry": {...}}``, every entry from the first
  whose period ends after ``from`` to the newest, in seq order (later entries may
  cover periods of the span again);
* ``record``: ``{"type": "record", "topic", "payload", "stored_ms", "pending"}``,
  the records of the span in time order; ``pending`` marks records stored after
  the newest entry was sealed (no entry covers them yet).

``verify --export FILE --public-key FILE`` checks such a file without the
gateway: docs/ledger.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.history.reader import HistoryReader
from agent.ledger.verify import RecordIn

VERSION = 1
FAR_FUTURE = 2**62


class ExportError(ValueError):
    """An export file that cannot be read; the message names the line and why."""


def write(
    out: IO[str],
    reader: HistoryReader,
    *,
    site: str,
    gateway: str,
    prefix: str,
    span: tuple[int | None, int | None],
    now_ms: int,
) -> tuple[int, int]:
    """Write the export; returns (entries, records) written."""
    lo, hi = span
    last = reader.last_entry()
    header = {
        "type": "export",
        "version": VERSION,
        "site": site,
        "gateway": gateway,
        "prefix": prefix,
        "from": lo,
        "to": hi,
        "pruned_before": reader.pruned_before(),
        "exported_ms": now_ms,
    }
    out.write(json.dumps(header, separators=(",", ":")) + "\n")
    first = reader.first_entry_after(lo) if lo is not None else 0
    entries = 0
    if first is not None:
        for row in reader.entries(first):
            out.write('{"type":"ledger","entry":' + row.raw.decode() + "}\n")
            entries += 1
    upto = last.upto if last is not None else 0
    records = 0
    first_ts = -FAR_FUTURE if lo is None else lo
    for r in reader.iter_records(first_ts, FAR_FUTURE if hi is None else hi):
        line = {
            "type": "record",
            "topic": r.topic,
            "payload": json.loads(r.payload),
            "stored_ms": r.stored_ms,
            "pending": r.id > upto,
        }
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        records += 1
    return entries, records


@dataclass
class Export:
    """An export's header and entries (small), read at once; its records are read by
    :meth:`records`, a line at a time (an export of months does not fit in memory)."""

    path: Path
    header: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)

    def records(self) -> Iterator[RecordIn]:
        for _, obj in _lines(self.path):
            if obj["type"] == "record":
                yield RecordIn(str(obj.get("topic")), obj["payload"], bool(obj.get("pending")))


def json_objects(
    path: Path,
    fail: Callable[[str], Exception],
    label: str,
    not_object: str = "not a record line",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of a JSON-lines file as an object, with its line number.

    One reader for an export and for `replay`'s output (the report reads both): a
    line that is not JSON or not an object raises ``fail`` naming file and line.
    """
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{label}: cannot read: {exc.strerror}") from None
    with f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise fail(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise fail(f"{path}:{n}: {not_object}")
            yield n, obj


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    what = "not an export line (no 'type')"
    for n, obj in json_objects(path, ExportError, str(path), what):
        if "type" not in obj:
            raise ExportError(f"{path}:{n}: {what}")
        yield n, obj


def read(path: Path) -> Export:
    """The header and the entries; every line checked for its shape (ExportError)."""
    export: Export | None = None
    for n, obj in _lines(path):
        kind = obj["type"]
        if export is None:
            if kind != "export":
                raise ExportError(f"{path}:{n}: the first line must be the export's header")
            export = Export(path, obj)
        elif kind == "ledger" and isinstance(obj.get("entry"), dict):
            export.entries.append(obj["entry"])
        elif kind == "record" and isinstance(obj.get("payload"), dict):
            continue
        else:
            raise ExportError(f"{path}:{n}: unknown line type {str(kind)[:40]!r}")
    if export is None:
        raise ExportError(f"{path}: empty: not an export of `energy-agent history export`")
    return export
