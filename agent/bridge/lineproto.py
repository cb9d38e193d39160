"""Validated payloads to InfluxDB line protocol, built so no value can add a field or a line.

Line protocol has no quoting for tags: ``,`` ``=`` and space end a tag, a newline
ends the point. Ids reaching here already matched the contract's id pattern, but
this module does not rely on that: it escapes every special character it can
and refuses what cannot be escaped (newlines, a backslash in a tag, non-finite
numbers), so a future caller with looser input still cannot inject.

Schema (docs/influxdb.md): each kind's InfluxDB measurement and each field's
place (tag, field, time, not stored) are the contract's (agent/contract/);
``site``, ``gateway`` and ``device`` are tags from the topic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from pydantic import BaseModel

from agent.contract.kinds import TopicRef
from agent.contract.models import MODELS
from agent.contract.points import PointError
from agent.ledger.points import written_points

FieldValue = float | int | bool | str

#: Used with fullmatch: ``$`` would also match before a trailing newline.
_KEY_RX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Line protocol's integers are int64; VictoriaMetrics drops a line outside it in silence.
_INT64 = (-(2**63), 2**63 - 1)
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_FORBIDDEN = ("\n", "\r", "\\")


class LineProtocolError(ValueError):
    """A value that cannot be written safely; the message says which and why."""


def _key(name: str) -> str:
    if not _KEY_RX.fullmatch(name):
        raise LineProtocolError(f"key {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
    return name


def escape_tag_value(value: str) -> str:
    """``,`` ``=`` and space are escaped; newline, CR and backslash are refused."""
    if not value:
        raise LineProtocolError("an empty tag value is not allowed")
    for ch in _FORBIDDEN:
        if ch in value:
            raise LineProtocolError(f"tag value {value!r} contains {ch!r}")
    return value.translate(_TAG_ESCAPES)


def escape_string_field(value: str) -> str:
    r"""A double-quoted string field: ``\`` and ``"`` escaped, line breaks refused."""
    if "\n" in value or "\r" in value:
        raise LineProtocolError("a string field cannot contain a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(value: FieldValue) -> str:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise LineProtocolError(f"integer {value} does not fit in int64")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"{value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return escape_string_field(value)
    raise LineProtocolError(f"unsupported field type {type(value).__name__}")


def line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], ts_ms: int
) -> str:
    """One point. Tags are sorted (InfluxDB's recommended order); at least one field."""
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int):
        raise LineProtocolError(f"timestamp {ts_ms!r} is not an integer")
    if not 0 < ts_ms <= _INT64[1]:
        # 0 is "no timestamp" to VictoriaMetrics: it would store the point at its own clock.
        raise LineProtocolError(f"timestamp {ts_ms} is not a positive int64")
    head = _key(measurement)
    for k in sorted(tags):
        head += f",{_key(k)}={escape_tag_value(tags[k])}"
    body = ",".join(f"{_key(k)}={format_field(v)}" for k, v in fields.items())
    return f"{head} {body} {ts_ms}"


def to_lines(ref: TopicRef, payload: BaseModel) -> list[str]:
    """The points for one validated payload, as its record's rows say where each field
    goes (agent/contract/points.py): an intensity message gives one per window; a
    ledger entry its point and a mark on each older period it covers again
    (agent/ledger/points.py).

    ``null`` numbers are left out rather than written as 0: a missing reading is
    not a zero reading.
    """
    if not isinstance(payload, MODELS[ref.kind]):
        raise LineProtocolError(f"no schema for {ref.kind} with {type(payload).__name__}")
    # Without the optional keys left unset: a ledger entry is hashed as it was sent.
    data = payload.model_dump(exclude_none=True)
    try:
        points = written_points(ref, data)
    except PointError as exc:
        raise LineProtocolError(str(exc)) from None
    return [line(p.measurement, p.tags, p.fields, p.ts) for p in points]
