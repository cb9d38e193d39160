"""The database points of a record: the one mapping from a payload to what InfluxDB holds.

Measurement, tags, fields and time, exactly as the bridge writes them
(docs/influxdb.md): ``null`` numbers are left out, strings other than the two
energy tags are not written, an intensity record is one point per window. Three
users must agree on it to the bit, so it is defined once, here:

* the bridge turns points into line protocol (:mod:`agent.bridge.lineproto`);
* the ledger hashes records as these points (:mod:`agent.ledger.canonical`), so
  a hash can be recomputed from the database's rows;
* the store reads points back from the database (:mod:`agent.store`).

It works on plain payload mappings (what the gateway built, or a validated
model dumped), and does not validate: the bridge validates before it calls it,
the gateway built the payload itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.payloads import ENERGY_NUMBERS, TopicKind, TopicRef

FieldValue = int | float

#: The fields of an intensity window, in the order they are written.
WINDOW_NUMBERS = (
    "energy_kwh",
    "co2_kg",
    "output_units",
    "kwh_per_unit",
    "kgco2_per_unit",
    "intensity_g_per_kwh",
    "tce",
)

#: The measurement each kind of payload is written to.
MEASUREMENT = {
    TopicKind.MEASUREMENTS: "measurements",
    TopicKind.ENERGY: "energy",
    TopicKind.INTENSITY: "intensity",
    TopicKind.GATEWAY_STATUS: "status",
    TopicKind.DEVICE_STATUS: "status",
    TopicKind.LEDGER: "ledger",
}


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    ts: int


class PointError(ValueError):
    """A payload without the shape its kind needs (a caller that skipped validation)."""


def _floats(payload: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, FieldValue]:
    """The non-null numbers among ``names``, as floats (line protocol's float fields)."""
    out: dict[str, FieldValue] = {}
    for name in names:
        v = payload.get(name)
        if v is not None:
            out[name] = float(v)
    return out


def base_tags(ref: TopicRef) -> dict[str, str]:
    tags = {"site": ref.site, "gateway": ref.gateway}
    if ref.device is not None:
        tags["device"] = ref.device
    return tags


def points_of(ref: TopicRef, payload: Mapping[str, Any]) -> list[Point]:
    """The points one message of ``ref``'s kind is written as."""
    tags = base_tags(ref)
    try:
        ts = int(payload["period_end"] if ref.kind is TopicKind.LEDGER else payload["ts"])
        match ref.kind:
            case TopicKind.MEASUREMENTS:
                fields: dict[str, FieldValue] = {"seq": int(payload["seq"])}
                fields.update({k: float(v) for k, v in payload["values"].items() if v is not None})
                return [Point("measurements", tags, fields, ts)]
            case TopicKind.ENERGY:
                tags["carrier"] = str(payload["carrier"])
                tags["quality"] = str(payload["quality"])
                fields = {"interval_s": int(payload["interval_s"])}
                fields.update(_floats(payload, ENERGY_NUMBERS))
                return [Point("energy", tags, fields, ts)]
            case TopicKind.INTENSITY:
                return [
                    Point(
                        "intensity",
                        {**tags, "window": str(window)},
                        _floats(values, WINDOW_NUMBERS),
                        ts,
                    )
                    for window, values in payload["windows"].items()
                ]
            case TopicKind.GATEWAY_STATUS:
                up = int(payload["state"] == "online")
                return [Point("status", tags, {"up": up}, ts)]
            case TopicKind.DEVICE_STATUS:
                return [Point("status", tags, {"up": int(payload["state"] == "ok")}, ts)]
            case TopicKind.LEDGER:
                return ledger_points(tags, payload)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PointError(f"{ref.kind.value} payload without its shape: {exc!r}") from None
    raise PointError(f"no points for {ref.kind.value}")


def ledger_points(tags: dict[str, str], entry: Mapping[str, Any]) -> list[Point]:
    """A ledger entry (docs/ledger.md, "In the database"): one point at the end of its
    period, and a ``covered_by`` on the point of every older period it covers again.

    ``covered_by`` is the seq of the newest entry covering a period: VictoriaMetrics
    keeps the largest value of a field written twice at one time, InfluxDB the last,
    and entries come in order, so both keep the newest. ``hash48`` and ``prev48`` are
    the first 48 bits of the entry's hash and of ``prev``: a bridge checks a chain link
    against an entry another bridge of its group received.
    """
    from agent.ledger.entry import entry_hash, short

    seq = int(entry["seq"])
    end = int(entry["period_end"])
    covers = entry["covers"]
    main: dict[str, FieldValue] = {
        "seq": seq,
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
