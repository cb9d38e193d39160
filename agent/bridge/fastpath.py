"""The fast path: the points of the two high-volume kinds, written by hand, that only accepts.

:class:`agent.bridge.validate.Validator` tries it first. It builds exactly the
line :func:`agent.bridge.lineproto.to_lines` would, from the same record tables
(agent/contract/records.py), and raises :class:`StepAside` on anything it is not
sure of (a wrong type, a non-finite number, an unknown key, any other kind): the
strict path then decides, reason and detail included.

An energy record is read from its rows: its span (``interval_s``), its tags with
their choices or pattern (an optional one may be absent), and its integer and
number fields in written order, so a new
number or tag in the table is written here too. A row of another shape (a field
that is not stored, an object) turns the fast path off for energy until it is
taught it; the measurements record is read by hand. Either way the fast path
steps aside rather than guess, and tests/unit/bridge/test_bridge_fastpath.py fails
until it writes both kinds again.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.bridge.lineproto import LineProtocolError, escape_tag_value
from agent.contract.kinds import MessageKind, TopicError, TopicRef, parse_topic
from agent.contract.plausible import VALUE_RANGES
from agent.contract.records import ENERGY, MEASUREMENTS, energy_ranges
from agent.contract.schema import Field, JsonType, Record, Store


class StepAside(Exception):
    """The fast path is not sure; the strict path decides."""


#: Whole numbers whose float conversion is exact, so both paths print the same digits.
_EXACT = 2**53
#: The canonical quantities and their ranges, as a plain dict (the fastest lookup).
_VALUE_RANGES = dict(VALUE_RANGES)
#: The measurements record as :func:`measurements_line` reads it.
MEASUREMENTS_KNOWN = ("ts", "seq", "values", "implausible")


def _int_range(f: Field) -> tuple[int, int]:
    """An integer field's bounds, both ends included."""
    limits = f.limits
    if limits is None or limits.le is None or (limits.ge is None and limits.gt is None):
        raise ValueError(f"{f.name}: an integer field needs both bounds")
    lo = limits.ge if limits.ge is not None else limits.gt + 1  # type: ignore[operator]
    return int(lo), int(limits.le)  # type: ignore[call-overload]


def _number(value: object) -> str:
    """The line-protocol text of a float field, as to_lines would write it."""
    t = type(value)
    if t is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise StepAside
        return repr(value)
    if t is int and -_EXACT <= value <= _EXACT:  # type: ignore[operator]
        return repr(float(value))  # type: ignore[arg-type]
    raise StepAside


def _integer(value: object) -> str:
    if type(value) is not int:
        raise StepAside
    return f"{value}i"


#: Per field after the span, in written order: its name and how its value is written.
_Plan = tuple[tuple[str, Callable[[object], str]], ...]


def _energy_plan(record: Record) -> _Plan | None:
    """How an energy point's fields are written, or None when the record has a row the
    fast path cannot write (it must be the span, then tags with choices or a pattern,
    and numbers and integers)."""
    stored = [f for f in record.fields if f.store is Store.FIELD]
    if record.span is None or not stored or stored[0].name != record.span:
        return None
    plan: list[tuple[str, Callable[[object], str]]] = []
    for f in record.fields:
        if f.store is Store.FIELD and f.type is JsonType.NUMBER and f.plausible:
            plan.append((f.name, _number))
        elif f.store is Store.FIELD and f.type is JsonType.INTEGER:
            if f.name != record.span:
                plan.append((f.name, _integer))
        elif not (f.store is Store.TIME or (f.store is Store.TAG and (f.choices or f.pattern))):
            return None
    return tuple(plan)


_ENERGY_PLAN = _energy_plan(ENERGY)
_ENERGY_MUST = frozenset(f.name for f in ENERGY.fields if f.required)
_ENERGY_NOT_NULL = frozenset(f.name for f in ENERGY.fields if not f.nullable)
_ENERGY_KEYS = frozenset(ENERGY.names)
_SPAN = ENERGY.span or ""
_SPAN_LO, _SPAN_HI = _int_range(ENERGY.field(_SPAN)) if _ENERGY_PLAN is not None else (0, 0)
#: The integers' bounds, beside the numbers' plausible ranges.
_ENERGY_INT_RANGES = {
    f.name: _int_range(f) for f in ENERGY.stored(JsonType.INTEGER) if f.name != _SPAN
}


@functools.lru_cache(maxsize=64)
def _energy_bounds(span: int) -> dict[str, tuple[float, float]]:
    return {**energy_ranges(span), **_ENERGY_INT_RANGES}


#: The payload's tags, in the order they stand in a point's sorted tags; what they may be.
_TAG_FIELDS = sorted((f for f in ENERGY.fields if f.store is Store.TAG), key=lambda f: f.db_name)
_ENERGY_TAGS = tuple(f.db_name for f in _TAG_FIELDS)
_TAG_NAMES = tuple(f.name for f in _TAG_FIELDS)


def _tag_check(f: Field) -> Callable[[object], bool]:
    """Whether a payload value may stand as this tag (None: absent, if optional)."""
    choices = frozenset(f.choices)
    rx = re.compile(f.pattern.removeprefix("^").removesuffix("$") + r"\Z") if f.pattern else None

    def ok(value: object) -> bool:
        if value is None:
            return not f.required
        if type(value) is not str:
            return False
        return value in choices if choices else rx is not None and rx.match(value) is not None

    return ok


_TAG_CHECKS = tuple(_tag_check(f) for f in _TAG_FIELDS)


def _tag_values(doc: dict[str, object]) -> tuple[object, ...]:
    return tuple(map(doc.get, _TAG_NAMES))


#: Heads cached per topic at most (a device's tags are its carrier, quality, place).
_HEADS_MAX = 64
_SEQ_RANGE = _int_range(MEASUREMENTS.field("seq"))
#: The kinds the fast path writes (the others are rare: the strict path takes them).
FAST_KINDS = frozenset(
    k
    for k, ready in (
        (MessageKind.MEASUREMENTS, MEASUREMENTS.names == MEASUREMENTS_KNOWN),
        (MessageKind.ENERGY, _ENERGY_PLAN is not None),
    )
    if ready
)


@dataclass(frozen=True, slots=True)
class Route:
    """What one topic contributes to its points, worked out once per topic."""

    ref: TopicRef
    #: The point's measurement and sorted tags, escaped (measurements: all of them).
    head: str
    #: The topic's tags, escaped (the payload's are added per set of values).
    ids: dict[str, str] = field(default_factory=dict)
    #: The head with each set of the payload's tag values seen so far (a device has one
    #: or two): one lookup checks and writes them.
    heads: dict[tuple[object, ...], str] = field(default_factory=dict)

    def first_head(self, tags: tuple[object, ...]) -> str:
        """The head for tag values not seen before; StepAside unless each may stand."""
        if len(self.heads) >= _HEADS_MAX:
            raise StepAside  # a device whose tags change all the time: not worth caching
        if not all(check(v) for check, v in zip(_TAG_CHECKS, tags, strict=True)):
            raise StepAside
        given = {k: v for k, v in zip(_ENERGY_TAGS, tags, strict=True) if isinstance(v, str)}
        every = {**self.ids, **given}
        head = self.ref.kind.spec.measurement
        for key in sorted(every):
            head += f",{key}={every[key]}"
        self.heads[tags] = head
        return head


def route(topic: str, prefix: str) -> Route:
    """The topic taken apart, for a kind the fast path writes; else StepAside."""
    try:
        ref = parse_topic(topic, prefix)
    except TopicError:
        raise StepAside from None
    if ref.kind not in FAST_KINDS or ref.device is None:
        raise StepAside
    try:
        ids = {
            "site": escape_tag_value(ref.site),
            "gateway": escape_tag_value(ref.gateway),
            "device": escape_tag_value(ref.device),
        }
    except LineProtocolError:
        raise StepAside from None
    head = ref.kind.spec.measurement + "".join(f",{k}={ids[k]}" for k in sorted(ids))
    return Route(ref, head, ids)


def measurements_line(r: Route, doc: dict[str, object], ts: int) -> str:
    seq = doc.get("seq")
    values = doc.get("values")
    if len(doc) != 3 and not (len(doc) == 4 and "implausible" in doc):
        raise StepAside
    if type(seq) is not int or not _SEQ_RANGE[0] <= seq <= _SEQ_RANGE[1]:
        raise StepAside
    if type(values) is not dict:
        raise StepAside
    ranges = _VALUE_RANGES
    fields = [f"seq={seq}i"]
    for key, value in values.items():
        bounds = ranges.get(key)
        if bounds is None:  # not a canonical quantity
            raise StepAside
        if type(value) is float:  # the common case, inline
            if not bounds[0] <= value <= bounds[1]:  # NaN and inf fail here too
                raise StepAside
            fields.append(f"{key}={value!r}")
        elif value is not None:
            text = _number(value)
            if not bounds[0] <= value <= bounds[1]:
                raise StepAside
            fields.append(f"{key}={text}")
    if len(doc) == 4:
        _check_named(doc["implausible"], values)
    return f"{r.head} {','.join(fields)} {ts}"


def energy_line(r: Route, doc: dict[str, object], ts: int) -> str:
    if not _ENERGY_MUST <= doc.keys() <= _ENERGY_KEYS:
        raise StepAside
    span = doc[_SPAN]
    if type(span) is not int or not _SPAN_LO <= span <= _SPAN_HI:
        raise StepAside
    tags = _tag_values(doc)
    try:
        head = r.heads.get(tags)
    except TypeError:  # an unhashable value (a list): not a tag
        raise StepAside from None
    if head is None:
        head = r.first_head(tags)
    bounds_of = _energy_bounds(span)
    fields = [f"{_SPAN}={span}i"]
    for name, write in _ENERGY_PLAN or ():
        value = doc.get(name)
        if value is None:
            if name in _ENERGY_NOT_NULL and name in doc:  # absent is fine when optional
                raise StepAside
            continue
        text = write(value)
        bounds = bounds_of[name]
        if not bounds[0] <= value <= bounds[1]:  # type: ignore[operator]  # a number
            raise StepAside
        fields.append(f"{name}={text}")
    return f"{head} {','.join(fields)} {ts}"


def _check_named(named: object, values: dict[str, object]) -> None:
    """``implausible``: absent, null, or distinct canonical quantities without a value."""
    if named is None:
        return
    if type(named) is not list:
        raise StepAside
    for q in named:
        if type(q) is not str or q not in _VALUE_RANGES or values.get(q) is not None:
            raise StepAside
    if len(set(named)) != len(named):
        raise StepAside
