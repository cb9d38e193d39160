"""Records as canonical lines, and the hash over a period's lines (docs/ledger.md).

A record is hashed as the database points the bridge writes for it
(:func:`agent.points.points_of`): each point becomes one JSON object,
``{"kind": measurement, <tags>, "ts": ts, <fields>}``, serialised with RFC 8785
(:mod:`agent.ledger.jcs`). Whatever fields a record kind has, today or after a
later change of the contract, they are hashed because they are written: the
hash can be recomputed from database rows, from the gateway's history, or from
an export, by anyone with a JCS library and SHA-256.

A set of lines is hashed in one defined order: by (kind, device or "", ts, rev
or 0), ties by the line's own bytes; each line followed by ``\\n``; SHA-256,
lowercase hex. The empty set hashes to SHA-256 of nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.contract import MessageKind, TopicRef
from agent.contract.points import Point, points_of
from agent.ledger import jcs
from agent.ledger.shape import SHAPES

#: The key every canonical object carries for its measurement.
KIND = "kind"


class Group(StrEnum):
    """The two hashes of a cover: what the database can be checked against, and the rest."""

    #: Device energy records: never revised, the basis of every kWh and CO2 figure;
    #: verified against the database by the bridge.
    ENERGY = "energy"
    #: Site records (intensity windows, every revision; later kinds of record too):
    #: the database keeps only one revision of a key, so these are verified from the
    #: gateway's history or an export only.
    SITE = "site"


def group_of(kind: MessageKind) -> Group | None:
    """Which hash a record of ``kind`` belongs to; None for what is not sealed (raw
    measurements, status messages and the ledger's own entries). Any other kind of
    record, including kinds added later, is a site record."""
    if kind is MessageKind.ENERGY:
        return Group.ENERGY
    if kind in (
        MessageKind.MEASUREMENTS,
        MessageKind.GATEWAY_STATUS,
        MessageKind.DEVICE_STATUS,
        MessageKind.LEDGER,
        # An alarm is what the gateway noticed about its records, not a record.
        MessageKind.ALARM,
    ):
        return None
    return Group.SITE


@dataclass(frozen=True, order=True)
class Line:
    """One canonical line and its place in the order: (kind, device, ts, rev), text."""

    key: tuple[str, str, int, int]
    text: str


def point_object(p: Point) -> dict[str, Any]:
    """The JSON object of a point: kind, tags, ts and fields side by side."""
    obj: dict[str, Any] = {KIND: p.measurement, "ts": p.ts}
    for name, value in (*p.tags.items(), *p.fields.items()):
        if name in obj:
            raise jcs.CanonicalError(f"{p.measurement}: '{name}' is both a key and a name")
        obj[name] = value
    return obj


def line_of_object(obj: Mapping[str, Any]) -> Line:
    rev = obj.get("rev", 0)
    key = (str(obj[KIND]), str(obj.get("device", "")), int(obj["ts"]), int(rev))
    return Line(key, jcs.text(obj))


def lines_of_points(points: Iterable[Point]) -> list[Line]:
    return [line_of_object(point_object(p)) for p in points]


def lines_of(ref: TopicRef, payload: Mapping[str, Any]) -> list[Line]:
    """The canonical lines of one record (one per database point); a flat record's
    (every energy record) written straight from its payload, the same bytes four
    times faster (:mod:`agent.ledger.shape`)."""
    shape = SHAPES.get(ref.kind)
    if shape is not None:
        key, text = shape.line(ref, payload)
        return [Line(key, text)]
    return lines_of_general(ref, payload)


def lines_of_general(ref: TopicRef, payload: Mapping[str, Any]) -> list[Line]:
    """:func:`lines_of` by the definition: points, objects, RFC 8785 text."""
    return lines_of_points(points_of(ref, payload))


@dataclass(frozen=True)
class Digest:
    records: int
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {"records": self.records, "hash": self.hash}


def _order(line: Line) -> tuple[tuple[str, str, int, int], str]:
    return line.key, line.text


def digest(lines: Iterable[Line]) -> Digest:
    """The count and SHA-256 of a set of lines, in the canonical order."""
    h = hashlib.sha256()
    n = 0
    # By (key, text) as the dataclass orders them, compared as plain tuples: the
    # dataclass's own __lt__ is a Python call per comparison.
    for line in sorted(lines, key=_order):
        h.update(line.text.encode("utf-8"))
        h.update(b"\n")
        n += 1
    return Digest(n, h.hexdigest())


def period_of(ts_ms: int, period_ms: int) -> int:
    """The start of the period a record with ``ts`` belongs to: ts is the end of the
    record's interval, so a record at 11:00:00 belongs to 10:00-11:00."""
    return (ts_ms - 1) // period_ms * period_ms
