"""Every incoming message is checked here before it goes near the database.

Order: size (before reading a byte of it), topic shape and ids, JSON and types
(pydantic in strict mode: ``"1.5"`` is not a number, ``true`` is not a
timestamp), finite numbers, plausible ranges (:mod:`agent.plausible`), then the
timestamp window. The first failure is the verdict; its reason code is a small
fixed set (a metrics label), its detail a sentence for the dead-letter message.

What is accepted can be written: every number is bounded (integers far inside
int64, floats inside their plausible range), every key is from a fixed
vocabulary and every tag value matched the id pattern, so the database has no
line to drop in silence (docs/influxdb.md, "What the database would drop").

Two paths, one verdict. :func:`check_strict` is the definition: the contract's
pydantic models, then :func:`agent.bridge.lineproto.to_lines`. It costs about
as much CPU per message as receiving the message, so :class:`Validator` first
tries a hand-written path for the two high-volume kinds (``measurements`` and
``energy``) that only ever *accepts*: on anything it is not sure of (a wrong
type, a non-finite number, an unknown key, a timestamp outside the window, any
other kind of topic) it steps aside and the strict path decides, reason and
detail included. So the fast path can only be wrong by accepting what the
models refuse or by writing different lines, and a property test compares the
two on generated payloads for exactly that.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from agent.bridge.lineproto import LineProtocolError, escape_tag_value, to_lines
from agent.payloads import (
    ENERGY_NUMBERS,
    MODELS,
    TopicError,
    TopicKind,
    TopicRef,
    parse_topic,
)
from agent.plausible import SEQ_MAX, TS_MIN_MS, VALUE_RANGES, energy_ranges


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
    ts: int = model.ts  # type: ignore[attr-defined]  # every payload model has ts
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


# --- the fast path -----------------------------------------------------------------------------

#: Whole numbers whose float conversion is exact, so both paths print the same digits.
_EXACT = 2**53
#: The contract's ``ts`` bound (payloads.Ms).
_MAX_TS = 10**14
#: Remembered per validator; beyond this, new topics are simply not remembered.
_MEMO_LIMIT = 10_000
#: The canonical quantities and their ranges, as a plain dict (the fastest lookup).
_VALUE_RANGES = dict(VALUE_RANGES)

_CARRIERS = frozenset({"electricity", "natural_gas", "production"})
_QUALITIES = frozenset({"measured", "integrated", "interpolated", "gap", "reset", "partial"})
_ENERGY_MUST = frozenset(
    {
        "ts",
        "interval_s",
        "carrier",
        "energy_kwh",
        "co2_kg",
        "avg_power_kw",
        "ef_kg_per_kwh",
        "quality",
    }
)
_ENERGY_KEYS = frozenset({*_ENERGY_MUST, "volume_m3", "units", "unmetered_kwh"})
#: Field order of an energy point, as to_lines writes it.
_ENERGY_FIELDS = ENERGY_NUMBERS
_ENERGY_NOT_NULL = frozenset({"energy_kwh", "co2_kg", "avg_power_kw"})


class _StepAside(Exception):
    """The fast path is not sure; the strict path decides."""


def _number(value: object) -> str:
    """The line-protocol text of a float field, as to_lines would write it."""
    t = type(value)
    if t is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise _StepAside
        return repr(value)
    if t is int and -_EXACT <= value <= _EXACT:  # type: ignore[operator]
        return repr(float(value))  # type: ignore[arg-type]
    raise _StepAside


@dataclass(frozen=True, slots=True)
class _Route:
    """What one topic contributes to its points, worked out once per topic."""

    ref: TopicRef
    site: str  # escaped tag values
    gateway: str
    device: str


class Validator:
    """:func:`check_strict`'s verdicts for a stream of messages, at a fraction of its cost.

    One per consumer: it remembers the topics it has seen (bounded).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._routes: dict[str, _Route] = {}

    def check(self, topic: str, payload: bytes, now_ms: int | None = None) -> Accepted | Rejected:
        now = _now_ms() if now_ms is None else now_ms
        try:
            return self._fast(topic, payload, now)
        except _StepAside:
            return check_strict(topic, payload, self.limits, now)

    def _route(self, topic: str) -> _Route:
        route = self._routes.get(topic)
        if route is not None:
            return route
        try:
            ref = parse_topic(topic, self.limits.prefix)
        except TopicError:
            raise _StepAside from None
        if ref.kind not in (TopicKind.MEASUREMENTS, TopicKind.ENERGY) or ref.device is None:
            raise _StepAside
        try:
            route = _Route(
                ref,
                escape_tag_value(ref.site),
                escape_tag_value(ref.gateway),
                escape_tag_value(ref.device),
            )
        except LineProtocolError:
            raise _StepAside from None
        if len(self._routes) < _MEMO_LIMIT:
            self._routes[topic] = route
        return route

    def _fast(self, topic: str, payload: bytes, now: int) -> Accepted:
        limits = self.limits
        if len(payload) > limits.max_payload_bytes:
            raise _StepAside
        route = self._route(topic)
        try:
            # Decoded first: json.loads would guess UTF-16/32 from bytes, pydantic does not.
            doc = json.loads(payload.decode())
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise _StepAside from None
        if type(doc) is not dict:
            raise _StepAside
        ts = doc.get("ts")
        if type(ts) is not int or not TS_MIN_MS <= ts <= _MAX_TS:
            raise _StepAside
        if not now - limits.max_past_s * 1000 <= ts <= now + limits.max_future_s * 1000:
            raise _StepAside
        if route.ref.kind is TopicKind.MEASUREMENTS:
            line = self._measurements(route, doc, ts)
        else:
            line = self._energy(route, doc, ts)
        return Accepted(route.ref, [line], ts)

    def _measurements(self, route: _Route, doc: dict[str, object], ts: int) -> str:
        seq = doc.get("seq")
        values = doc.get("values")
        if len(doc) != 3 and not (len(doc) == 4 and "implausible" in doc):
            raise _StepAside
        if type(seq) is not int or not 0 <= seq <= SEQ_MAX or type(values) is not dict:
            raise _StepAside
        ranges = _VALUE_RANGES
        fields = [f"seq={seq}i"]
        for key, value in values.items():
            bounds = ranges.get(key)
            if bounds is None:  # not a canonical quantity
                raise _StepAside
            if type(value) is float:  # the common case, inline
                if not bounds[0] <= value <= bounds[1]:  # NaN and inf fail here too
                    raise _StepAside
                fields.append(f"{key}={value!r}")
            elif value is not None:
                text = _number(value)
                if not bounds[0] <= value <= bounds[1]:
                    raise _StepAside
                fields.append(f"{key}={text}")
        if len(doc) == 4:
            _check_named(doc["implausible"], values)
        return (
            f"measurements,device={route.device},gateway={route.gateway},site={route.site} "
            f"{','.join(fields)} {ts}"
        )

    def _energy(self, route: _Route, doc: dict[str, object], ts: int) -> str:
        keys = doc.keys()
        if not _ENERGY_MUST <= keys <= _ENERGY_KEYS:
            raise _StepAside
        interval = doc["interval_s"]
        carrier = doc["carrier"]
        quality = doc["quality"]
        if type(interval) is not int or not 0 < interval <= 86400:
            raise _StepAside
        if type(carrier) is not str or carrier not in _CARRIERS:
            raise _StepAside
        if type(quality) is not str or quality not in _QUALITIES:
            raise _StepAside
        ranges = energy_ranges(interval)
        fields = [f"interval_s={interval}i"]
        for name in _ENERGY_FIELDS:
            value = doc.get(name)
            if value is None:
                if name in _ENERGY_NOT_NULL:
                    raise _StepAside
                continue
            text = _number(value)
            bounds = ranges[name]
            if not bounds[0] <= value <= bounds[1]:  # type: ignore[operator]  # a number
                raise _StepAside
            fields.append(f"{name}={text}")
        return (
            f"energy,carrier={carrier},device={route.device},gateway={route.gateway},"
            f"quality={quality},site={route.site} {','.join(fields)} {ts}"
        )


def _check_named(named: object, values: dict[str, object]) -> None:
    """``implausible``: absent, null, or distinct canonical quantities without a value."""
    if named is None:
        return
    if type(named) is not list:
        raise _StepAside
    for q in named:
        if type(q) is not str or q not in _VALUE_RANGES or values.get(q) is not None:
            raise _StepAside
    if len(set(named)) != len(named):
        raise _StepAside
