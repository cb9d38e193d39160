"""A flat record's canonical line written straight from its payload (docs/ledger.md).

The general path (:func:`agent.contract.points.points_of`, then a JSON object, then
RFC 8785 text by :mod:`agent.ledger.jcs`) builds two dicts, sorts keys and walks
every value through a recursive encoder for each record: about 20 µs for an
energy record, most of a verification's time (docs/performance.md). A record
kind whose fields are all time, tags and plain numbers (every energy record) has
one point with a fixed set of possible keys, so the sorted key order, each
key's quoted text and each value's conversion can be worked out once from the
contract. What is left per record is a loop over the payload's values.

The bytes are the general path's, not an approximation of them: the same
conversions (``int`` for the time and integer fields, ``str`` for tags, ``float``
for numbers, nulls left out), the same number text (ECMAScript's, through
:func:`agent.ledger.jcs.number` for anything outside the plain fixed-notation
case), the same errors; a property test holds the two equal over arbitrary
payloads (tests/unit/ledger/test_shape.py). Kinds with nested or coded fields
take the general path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent.contract import MessageKind, TopicRef
from agent.contract.points import SHAPE_ERRORS, PointError, field_number
from agent.contract.schema import Store
from agent.ledger import jcs

#: What a field's value is.
TAG, FLOAT, INT = range(3)

#: Keys whose quoted texts sort as the keys do: "a": before "ab": because '"' sorts
#: before every one of these characters (and no escape changes them).
PLAIN_KEY = re.compile(r"[A-Za-z0-9_]+")


def float_text(x: float) -> str:
    """:func:`agent.ledger.jcs.number` of a float, its common case inline: fixed
    notation (1e-4 <= |x| < 1e16) is ``repr`` without a whole number's ``.0``."""
    r = repr(x)
    if "e" in r or "n" in r or x == 0:  # exponents, inf, nan, -0: the full rules
        return jcs.number(x)
    return r[:-2] if r.endswith(".0") else r


def int_text(i: int) -> str:
    """:func:`agent.ledger.jcs.number` of an int: every exact one (|i| <= 2^53 < 1e16) is
    written in fixed notation, which is ``str``; a larger one is refused there."""
    if -jcs.MAX_EXACT <= i <= jcs.MAX_EXACT:
        return str(i)
    return jcs.number(i)


class FlatShape:
    """The canonical line of one flat record kind, compiled from the contract.

    Per record: the topic's quoted tags (cached), the time, then each payload value
    the contract stores, by a dict lookup of its name; the ``"key":value`` parts
    sorted as strings (the keys' order, :data:`PLAIN_KEY`) and joined.
    """

    def __init__(self, kind: MessageKind, fields: dict[str, tuple[str, int]]) -> None:
        self.kind = kind
        self.measurement = kind.spec.measurement
        #: Payload name -> ('"db name":', value kind): the time and the topic's tags aside.
        self.fields = fields
        self._kind_part = '"kind":' + jcs.string(self.measurement)
        self._base: dict[TopicRef, tuple[str, ...]] = {}

    def _tags(self, ref: TopicRef) -> tuple[str, ...]:
        base = self._base.get(ref)
        if base is None:
            tags = [self._kind_part, '"site":' + jcs.string(ref.site)]
            tags.append('"gateway":' + jcs.string(ref.gateway))
            if ref.device is not None:
                tags.append('"device":' + jcs.string(ref.device))
            base = self._base[ref] = tuple(tags)
        return base

    def line(self, ref: TopicRef, obj: Mapping[str, Any]) -> tuple[tuple[str, str, int, int], str]:
        """(order key, canonical text) of the record, as :func:`agent.ledger.canonical.lines_of`."""
        parts = list(self._tags(ref))
        fields = self.fields
        try:
            ts = int(obj["ts"])
            parts.append('"ts":' + int_text(ts))
            for name, value in obj.items():
                slot = fields.get(name)
                if slot is None or value is None:
                    continue
                key, how = slot
                if how == FLOAT:
                    parts.append(key + float_text(field_number(value, False)))
                elif how == TAG:
                    parts.append(key + jcs.string(str(value)))
                else:
                    parts.append(key + int_text(int(field_number(value, True))))
        except SHAPE_ERRORS as exc:
            if isinstance(exc, jcs.CanonicalError):
                raise
            raise PointError(f"{self.kind.value} payload without its shape: {exc!r}") from None
        parts.sort()
        return (self.measurement, ref.device or "", ts, 0), "{" + ",".join(parts) + "}"


def compile_shape(kind: MessageKind) -> FlatShape | None:
    """The compiled line of ``kind``, or None when its records are not flat (nested,
    coded or key-valued fields, a revision, a name used twice or not plain): those
    take the general path."""
    taken = {"kind", "site", "gateway", "device"}
    fields: dict[str, tuple[str, int]] = {}
    has_time = False
    for f in kind.spec.record.fields:
        if f.store is Store.NOT_STORED:
            continue
        if f.store is Store.TIME:
            if f.name != "ts" or has_time:
                return None
            has_time = True
            continue
        if f.store is Store.TAG:
            how = TAG
        elif f.store is Store.FIELD and f.codes is None:
            how = INT if f.type.value == "integer" else FLOAT
        else:
            return None
        db = f.db_name
        if db in taken or db in ("ts", "rev") or not PLAIN_KEY.fullmatch(db):
            return None
        taken.add(db)
        fields[f.name] = (f'"{db}":', how)
    if not has_time or not all(PLAIN_KEY.fullmatch(k) for k in taken):
        return None
    return FlatShape(kind, fields)


#: Compiled once: the energy record, the bulk of every ledger period.
SHAPES: dict[MessageKind, FlatShape] = {
    k: s for k in (MessageKind.ENERGY,) if (s := compile_shape(k)) is not None
}
