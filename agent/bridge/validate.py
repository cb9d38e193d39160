"""Every incoming message is checked here before it goes near the database.

Order: size (before reading a byte of it), topic shape and ids, JSON and types
(pydantic in strict mode: ``"1.5"`` is not a number, ``true`` is not a
timestamp), finite numbers, then the timestamp window. The first failure is the
verdict; its reason code is a small fixed set (a metrics label), its detail a
sentence for the dead-letter message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from agent.bridge.lineproto import LineProtocolError, to_lines
from agent.payloads import MODELS, TopicError, TopicRef, parse_topic


class Reason(StrEnum):
    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    NOT_JSON = "not_json"
    NOT_FINITE = "not_finite"
    INVALID = "invalid"
    TS_OUT_OF_WINDOW = "ts_out_of_window"
    UNWRITABLE = "unwritable"
    DB_REJECTED = "db_rejected"


@dataclass(frozen=True, slots=True)
class Accepted:
    ref: TopicRef
    lines: list[str]
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Limits:
    prefix: str = "energy/v1"
    max_payload_bytes: int = 256 * 1024
    max_past_s: int = 31 * 86400
    max_future_s: int = 300


def _describe(exc: ValidationError) -> Rejected:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return Rejected(Reason.NOT_JSON, f"not JSON: {first['msg']}")
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e["loc"]) or "(payload)"
        parts.append(f"{where}: {e['msg']}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    finite = any("finite" in e["msg"] for e in errors)
    return Rejected(Reason.NOT_FINITE if finite else Reason.INVALID, "; ".join(parts) + more)


def check(
    topic: str, payload: bytes, limits: Limits, now_ms: int | None = None
) -> Accepted | Rejected:
    """The verdict on one message; never raises for any input."""
    if len(payload) > limits.max_payload_bytes:
        return Rejected(
            Reason.TOO_LARGE,
            f"payload is {len(payload)} bytes, over the limit of {limits.max_payload_bytes}",
        )
    try:
        ref = parse_topic(topic, limits.prefix)
    except TopicError as exc:
        return Rejected(Reason.BAD_TOPIC, str(exc))
    try:
        model = MODELS[ref.kind].model_validate_json(payload, strict=True)
    except ValidationError as exc:
        return _describe(exc)
    ts: int = model.ts  # type: ignore[attr-defined]  # every payload model has ts
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if ts < now - limits.max_past_s * 1000:
        return Rejected(
            Reason.TS_OUT_OF_WINDOW,
            f"ts {ts} is {(now - ts) / 1000:.0f} s in the past (limit {limits.max_past_s} s)",
        )
    if ts > now + limits.max_future_s * 1000:
        return Rejected(
            Reason.TS_OUT_OF_WINDOW,
            f"ts {ts} is {(ts - now) / 1000:.0f} s in the future (limit {limits.max_future_s} s)",
        )
    try:
        lines = to_lines(ref, model)
    except LineProtocolError as exc:
        return Rejected(Reason.UNWRITABLE, str(exc))
    return Accepted(ref, lines, ts)
