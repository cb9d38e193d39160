"""Every incoming message is checked here before it goes near the database.

Order: size (before reading a byte of it), topic shape and ids, JSON and types
(pydantic in strict mode: ``"1.5"`` is not a number, ``true`` is not a
timestamp), finite numbers, plausible ranges (:mod:`agent.contract.plausible`),
then the timestamp window. The first failure is the verdict; its reason code is
a small fixed set (a metrics label), its detail a sentence for the dead-letter
message.

What is accepted can be written: every number is bounded (integers far inside
int64, floats inside their plausible range), every key is from a fixed
vocabulary and every tag value matched the id pattern, so the database has no
line to drop in silence (docs/influxdb.md, "What the database would drop").

Two paths, one verdict. :func:`check_strict` is the definition: the contract's
pydantic models, then :func:`agent.bridge.lineproto.to_lines`. It costs about
as much CPU per message as receiving the message, so :class:`Validator` first
tries a hand-written path (:mod:`agent.bridge.fastpath`) for the two
high-volume kinds (``measurements`` and ``energy``) that only ever *accepts*: on
anything it is not sure of (a wrong type, a non-finite number, an unknown key,
a timestamp outside the window, any other kind of topic) it steps aside and the
strict path decides, reason and detail included. So the fast path can only be
wrong by accepting what the models refuse or by writing different lines, and a
property test compares the two on generated payloads for exactly that.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from agent.bridge import fastpath
from agent.bridge.fastpath import Route, StepAside
from agent.bridge.lineproto import LineProtocolError, to_lines
from agent.contract.kinds import MessageKind, TopicError, TopicRef, parse_topic
from agent.contract.models import MODELS
from agent.contract.plausible import TS_MIN_MS
from agent.contract.records import TS_MAX_MS
from agent.contract.vocab import DEFAULT_PREFIX


class Reason(StrEnum):
    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    NOT_JSON = "not_json"
    NOT_FINITE = "not_finite"
    INVALID = "invalid"
    IMPLAUSIBLE = "implausible"
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
    prefix: str = DEFAULT_PREFIX
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
    types = {e["type"] for e in errors}
    if "not_finite" in types:
        reason = Reason.NOT_FINITE
    elif types == {"implausible"}:
        reason = Reason.IMPLAUSIBLE
    else:
        reason = Reason.INVALID
    return Rejected(reason, "; ".join(parts) + more)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_strict(
    topic: str, payload: bytes, limits: Limits, now_ms: int | None = None
) -> Accepted | Rejected:
    """The verdict on one message by the contract's models; never raises for any input."""
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
    # Every record has one time field (test_contract_tables): ts, a ledger entry's period_end.
    ts: int = getattr(model, ref.kind.spec.record.time.name)
    now = _now_ms() if now_ms is None else now_ms
    if ts < TS_MIN_MS:
        return Rejected(
            Reason.TS_OUT_OF_WINDOW,
            f"ts {ts} is before 2000-01-01 ({TS_MIN_MS}): a clock never set",
        )
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


def check(
    topic: str, payload: bytes, limits: Limits, now_ms: int | None = None
) -> Accepted | Rejected:
    """The verdict on one message (fast path, else strict); never raises for any input."""
    return Validator(limits).check(topic, payload, now_ms)


#: Remembered per validator; beyond this, new topics are simply not remembered.
_MEMO_LIMIT = 10_000


class Validator:
    """:func:`check_strict`'s verdicts for a stream of messages, at a fraction of its cost.

    One per consumer: it remembers the topics it has seen (bounded).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._routes: dict[str, Route] = {}

    def check(self, topic: str, payload: bytes, now_ms: int | None = None) -> Accepted | Rejected:
        now = _now_ms() if now_ms is None else now_ms
        try:
            return self._fast(topic, payload, now)
        except StepAside:
            return check_strict(topic, payload, self.limits, now)

    def _route(self, topic: str) -> Route:
        route = self._routes.get(topic)
        if route is None:
            route = fastpath.route(topic, self.limits.prefix)
            if len(self._routes) < _MEMO_LIMIT:
                self._routes[topic] = route
        return route

    def _fast(self, topic: str, payload: bytes, now: int) -> Accepted:
        limits = self.limits
        if len(payload) > limits.max_payload_bytes:
            raise StepAside
        route = self._route(topic)
        try:
            # Decoded first: json.loads would guess UTF-16/32 from bytes, pydantic does not.
            doc = json.loads(payload.decode())
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise StepAside from None
        if type(doc) is not dict:
            raise StepAside
        ts = doc.get("ts")
        if type(ts) is not int or not TS_MIN_MS <= ts <= TS_MAX_MS:
            raise StepAside
        if not now - limits.max_past_s * 1000 <= ts <= now + limits.max_future_s * 1000:
            raise StepAside
        if route.ref.kind is MessageKind.MEASUREMENTS:
            line = fastpath.measurements_line(route, doc, ts)
        else:
            line = fastpath.energy_line(route, doc, ts)
        return Accepted(route.ref, [line], ts)
