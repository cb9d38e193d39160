"""The database points of a payload, from its record's rows: what InfluxDB holds.

Measurement, tags, fields and time exactly as the bridge writes them
(docs/influxdb.md): each field where its row puts it, ``null`` left out, an
intensity record one point per window. Three users must agree on it to the
bit, so it is defined once, here:

* the bridge turns points into line protocol (:mod:`agent.bridge.lineproto`);
* the ledger hashes records as these points (:mod:`agent.ledger.canonical`), so a
  hash can be recomputed from the database's rows;
* the store reads points back (:mod:`agent.store`).

It works on plain payload mappings (what the gateway built, or a validated
model dumped) and does not validate: the bridge validates before it calls it,
the gateway built the payload itself. The ledger's own kind is not a row
mapping: its point holds what the bridge derives (agent/ledger/points.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.contract.kinds import TopicRef
from agent.contract.schema import Record, Store

FieldValue = int | float


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    ts: int


class PointError(ValueError):
    """A payload without the shape its record needs (a caller that skipped validation)."""


#: What a payload without its record's shape raises on the way to its points: a missing
#: key, a wrong type, a number no double or integer holds (an integer beyond a double's
#: range, an infinite time), so that a changed record is reported as one, not a crash.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError)


def base_tags(ref: TopicRef) -> dict[str, str]:
    tags = {"site": ref.site, "gateway": ref.gateway}
    if ref.device is not None:
        tags["device"] = ref.device
    return tags


def points_of(ref: TopicRef, payload: Mapping[str, Any]) -> list[Point]:
    """The points one message of ``ref``'s kind is written as."""
    spec = ref.kind.spec
    try:
        return _points(spec.measurement, spec.record, payload, base_tags(ref), None)
    except SHAPE_ERRORS as exc:
        raise PointError(f"{ref.kind.value} payload without its shape: {exc!r}") from None


def field_number(value: Any, integer: bool) -> FieldValue:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return int(value) if integer else float(value)


def _points(
    measurement: str,
    record: Record,
    obj: Mapping[str, Any],
    tags: dict[str, str],
    ts: int | None,
) -> list[Point]:
    fields: dict[str, FieldValue] = {}
    out: list[Point] = []
    # A record whose entries are points of their own (intensity's windows) has none itself.
    own_point = all(f.store is not Store.KEYS_AS_POINTS for f in record.fields)
    for f in record.fields:
        value = obj.get(f.name)
        if f.store is Store.TIME:
            ts = int(obj[f.name])
        elif f.store is Store.TAG:
            if value is not None:  # an optional tag (an energy record's parent) left out
                tags[f.db_name] = str(value)
        elif value is None or f.store is Store.NOT_STORED:
            continue
        elif f.store is Store.FIELD:
            if f.codes is not None:
                fields[f.db_name] = f.codes[value]
            else:
                fields[f.db_name] = field_number(value, f.type.value == "integer")
        elif f.store is Store.KEYS_AS_FIELDS:
            fields.update((k, field_number(v, False)) for k, v in value.items() if v is not None)
        else:  # KEYS_AS_POINTS
            assert isinstance(f.items, Record)
            for key, sub in value.items():
                out += _points(measurement, f.items, sub, {**tags, f.db_name: str(key)}, ts)
    if ts is None:
        raise PointError(f"a {record.name} record without a time")
    if own_point:
        out.insert(0, Point(measurement, tags, fields, ts))
    return out
