"""A ledger entry in the database: the ``ledger`` point the bridge writes (docs/ledger.md).

One point at the end of the entry's period, with ``seq``, ``period_start``,
``covers`` (how many), ``energy_records`` (over all covers), ``hash48`` and
``prev48`` (the first 48 bits of the entry's hash and of ``prev``: a bridge checks
a chain link against an entry another bridge of its group received), and
``covered_by``; and a ``covered_by`` on the point of every older period it covers
again. ``covered_by`` is the seq of the newest entry covering a period:
VictoriaMetrics keeps the largest value of a field written twice at one time,
InfluxDB the last, and entries come in order, so both keep the newest. The
bridge's verdict (``verified``, ``records``, ``reason``) joins the entry's point
later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.contract.kinds import MessageKind, TopicRef
from agent.contract.points import FieldValue, Point, base_tags, points_of
from agent.ledger.entry import entry_hash, short


def written_points(ref: TopicRef, payload: Mapping[str, Any]) -> list[Point]:
    """What the bridge writes for a validated message of any kind (PointError if it has
    not the shape of its kind)."""
    if ref.kind is MessageKind.LEDGER:
        return ledger_points(base_tags(ref), payload)
    return points_of(ref, payload)


def ledger_points(tags: dict[str, str], entry: Mapping[str, Any]) -> list[Point]:
    seq = int(entry["seq"])
    end = int(entry["period_end"])
    covers = entry["covers"]
    main: dict[str, FieldValue] = {
        "seq": seq,
        "period_start": int(entry["period_start"]),
        "covers": len(covers),
        "energy_records": sum(int(c["energy"]["records"]) for c in covers),
        "hash48": short(entry_hash(entry)),
        "prev48": short(str(entry["prev"])),
    }
    if any(int(c["end"]) == end for c in covers):
        main["covered_by"] = seq
    out = [Point("ledger", dict(tags), main, end)]
    out += [
        Point("ledger", dict(tags), {"covered_by": seq}, int(c["end"]))
        for c in covers
        if int(c["end"]) != end
    ]
    return out
