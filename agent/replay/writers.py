"""Where the records go: JSON lines (as `replay` always printed them) or Parquet.

JSON lines are exactly the bytes `replay` printed before it streamed:
``{"topic": ..., "payload": ...}``, compact, one per line. Parquet is for
analysis: one row per energy record, per intensity window, per event and per
measured value, in the columns of the database schema (docs/influxdb.md; the columns are
the contract's fields), written a row group at a time so memory stays bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, TextIO

from agent.contract.kinds import KINDS, Message, MessageKind
from agent.contract.schema import JsonType, Record, Store
from agent.replay.pipeline import Topic
from agent.replay.rows import ReplayInputError


class Writer(Protocol):
    def write(self, messages: list[Message]) -> None: ...

    def close(self) -> None: ...


class JsonLines:
    def __init__(self, out: TextIO, *, owned: bool = False) -> None:
        self.out = out
        self.owned = owned
        # One encoder for all: json.dumps with separators builds a new one per call.
        self._encode = json.JSONEncoder(separators=(",", ":")).encode
        #: Per topic, the start of its lines (messages the bulk lane wrote as text).
        self._topics: dict[str, str] = {}

    def write(self, messages: list[Message]) -> None:
        enc = self._encode
        topics = self._topics
        lines = []
        for m in messages:
            if m.text is None:
                lines.append(enc(m.as_json_line()) + "\n")
                continue
            head = topics.get(m.topic)
            if head is None:
                head = topics[m.topic] = '{"topic":' + enc(m.topic) + ',"payload":'
            lines.append(head + m.text + "}\n")
        self.out.write("".join(lines))

    def close(self) -> None:
        self.out.flush()
        if self.owned:
            self.out.close()


def _records() -> list[Record]:
    """The records `replay` writes, and the records of their points."""
    out = []
    for topic in Topic:
        record = KINDS[MessageKind(topic)].record
        out.append(record)
        out += [f.items for f in record.fields if isinstance(f.items, Record)]
    return out


def _columns(*types: JsonType, store: Store = Store.FIELD) -> tuple[str, ...]:
    """The records' fields of these types stored as ``store``, once each, in order."""
    return tuple(
        dict.fromkeys(
            f.db_name for r in _records() for f in r.fields if f.store is store and f.type in types
        )
    )


#: A point's own tags (an intensity point's window) come before the record's (carrier).
_KEY_TAGS = _columns(JsonType.OBJECT, store=Store.KEYS_AS_POINTS)
_TAGS = _columns(JsonType.STRING, store=Store.TAG)
#: (A measured value's quantity and value share the columns of an event's.)
_TEXT = tuple(dict.fromkeys(("kind", "site", "gateway", "device", *_KEY_TAGS, *_TAGS, "quantity")))
_INTS = _columns(JsonType.INTEGER)
_FLOATS = tuple(dict.fromkeys((*_columns(JsonType.NUMBER), "value")))
ROW_GROUP = 65_536


class ParquetOut:
    """Records flattened to rows; written one row group at a time."""

    def __init__(self, path: Path, site: str, gateway: str) -> None:
        self.site, self.gateway = site, gateway
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ReplayInputError(
                f"--out {path}: writing Parquet needs pyarrow: pip install 'energy-agent[backfill]'"
            ) from None
        self._pa = pa
        fields = [pa.field("ts", pa.timestamp("ms", "UTC"))]
        fields += [pa.field(n, pa.string()) for n in _TEXT]
        fields += [pa.field(n, pa.int64()) for n in _INTS]
        fields += [pa.field(n, pa.float64()) for n in _FLOATS]
        self.schema = pa.schema(fields)
        try:
            self._writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        except (OSError, pa.ArrowException) as exc:
            raise ReplayInputError(f"--out {path}: cannot write: {exc}") from None
        self._rows: dict[str, list[Any]] = {f.name: [] for f in fields}

    def _row(self, **values: Any) -> None:
        for name, col in self._rows.items():
            col.append(values.get(name))

    def write(self, messages: list[Message]) -> None:
        for m in messages:
            p = m.payload
            base = {"ts": p["ts"], "kind": m.kind.value, "site": self.site, "gateway": self.gateway}
            if m.kind is MessageKind.INTENSITY:
                for window, values in p["windows"].items():
                    self._row(**base, window=window, **values)
            elif m.kind in (MessageKind.ENERGY, MessageKind.EVENTS):
                self._row(**base, device=m.device, **{k: v for k, v in p.items() if k != "ts"})
            else:
                for q, v in p["values"].items():
                    self._row(**base, device=m.device, seq=p["seq"], quantity=q, value=v)
        if len(self._rows["ts"]) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._rows["ts"]:
            return
        batch = self._pa.RecordBatch.from_pydict(self._rows, schema=self.schema)
        self._writer.write_batch(batch)
        for col in self._rows.values():
            col.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()
