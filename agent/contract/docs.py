"""The docs' contract tables, written from the contract: README's topics, docs/influxdb.md's
schema and records.

``python -m agent.contract.docs`` rewrites each table between its markers
(``<!-- contract:NAME -->`` ... ``<!-- /contract:NAME -->``); ``--check`` only
says which differ (exit 1). A test keeps the committed docs equal to this output.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.contract.kinds import KINDS, KindSpec, Scope, by_measurement
from agent.contract.plausible import PerHour
from agent.contract.records import WINDOW
from agent.contract.schema import Field, JsonType, Record, Store
from agent.contract.vocab import DEFAULT_PREFIX

ROOT = Path(__file__).resolve().parents[2]


def _code(text: str) -> str:
    return f"`{text}`"


def _payload(record: Record) -> str:
    """A record's keys, as README shows them: choices, objects, optional keys."""
    parts = []
    for f in record.fields:
        text = _code(f.name)
        if f.choices and f.store is not Store.TAG:
            text += " (" + "\\|".join(_code(c) for c in f.choices) + ")"
        elif f.type is JsonType.OBJECT and f.keys is not None:
            text += f" ({f.keys.noun} → {_item(f)})"
        if not f.required:
            text += f" (when {f.when})"
        parts.append(text)
    return ", ".join(parts)


def _item(f: Field) -> str:
    return f.items.name if isinstance(f.items, Record) else "number or null"


def topics() -> Iterator[str]:
    """README: every topic with QoS, retain and payload."""
    yield f"Prefix `{DEFAULT_PREFIX}` (`{{p}}`); JSON; `ts` = Unix ms UTC."
    yield ""
    yield "| topic | QoS/retain | payload |"
    yield "|---|---|---|"
    for spec in KINDS.values():
        where = "{p}/{site}/{gw}/" + ("{dev}/" if spec.scope is Scope.DEVICE else "")
        flags = [str(spec.qos)] + ["retained"] * spec.retained + ["LWT"] * spec.will
        yield (
            f"| `{where}{spec.suffix}` | {', '.join(flags)} | "
            f"{spec.published}: {_payload(spec.record)} |"
        )


def _tags(specs: list[KindSpec]) -> str:
    scopes = {s.scope for s in specs}
    tags = ["`site`", "`gateway`"]
    if scopes == {Scope.DEVICE}:
        tags.append("`device`")
    elif Scope.DEVICE in scopes:
        tags.append("and `device` for a device's " + specs[0].measurement)
    for r in dict.fromkeys(s.record for s in specs):
        for f in r.fields:
            if f.store is Store.TAG:
                values = ", ".join(_code(c) for c in f.choices) if f.choices else "an id"
                tags.append(f"`{f.db_name}` ({values}{'' if f.required else '; when present'})")
            elif f.store is Store.KEYS_AS_POINTS and f.keys is not None:
                tags.append(f"`{f.db_name}` ({', '.join(_code(k) for k in f.keys.names)})")
    return ", ".join(tags)


def _flat(records: list[Record]) -> Iterator[Field]:
    """The fields of the records, and of the records their points come from."""
    for r in records:
        for f in r.fields:
            stored = f.store is not Store.NOT_STORED
            yield from _flat([f.items]) if stored and isinstance(f.items, Record) else (f,)


def _fields(records: list[Record]) -> str:
    """What a measurement's points hold, once each (status: both kinds' codes)."""
    cells: dict[str, str] = {}
    codes: dict[str, list[str]] = {}
    for f in _flat(records):
        when = f"; when {f.when}" if not f.required else ""
        if f.store is Store.FIELD and f.codes:
            codes.setdefault(f.db_name, []).extend(f"{v} {k}" for k, v in f.codes.items())
            cells[f.db_name] = ""
        elif f.store is Store.FIELD:
            kind = "integer" if f.type is JsonType.INTEGER else "float"
            cells.setdefault(f.db_name, f"`{f.db_name}` ({kind}{when})")
        elif f.store is Store.KEYS_AS_FIELDS and f.keys is not None:
            cells.setdefault(f.name, f"every non-null {f.keys.noun} of `{f.name}` (float)")
    for column, items in codes.items():
        cells[column] = f"`{column}` (integer: {', '.join(items)})"
    return ", ".join(cells.values())


def schema() -> Iterator[str]:
    """docs/influxdb.md: one row per InfluxDB measurement."""
    yield "| measurement | one point per | tags | fields |"
    yield "|---|---|---|---|"
    for measurement, specs in by_measurement().items():
        records = list(dict.fromkeys(s.record for s in specs))
        fields = ", ".join(x for x in (_fields(records), *(s.derived for s in specs)) if x)
        yield f"| `{measurement}` | {specs[0].point} | {_tags(specs)} | {fields} |"


def _bound(b: float | PerHour) -> str:
    if isinstance(b, PerHour):
        return f"{b.sign * b.rate * b.factor:g}/h × span"
    return f"{b:g}"


def _row(f: Field) -> str:
    if isinstance(f.items, Record):
        kind = f"{'array' if f.type is JsonType.ARRAY else 'object'} of {f.items.name}"
    else:
        kind = f.type.value
    if f.keys is not None:
        kind += f" by {f.keys.noun}"
    if f.choices:
        kind += ": " + ", ".join(_code(c) for c in f.choices)
    null = "yes" if f.nullable or f.items_nullable else ""
    when = f.when or "always"
    if f.plausible:
        rng = f"[{_bound(f.plausible[0])}, {_bound(f.plausible[1])}]"
    elif f.limits is not None:
        lo = f.limits.ge if f.limits.ge is not None else f"> {f.limits.gt}"
        rng = f"[{lo}, {f.limits.le}]"
    else:
        rng = ""
    store = f"{f.store.value} `{f.db_name}`" if f.db_name != f.name else f.store.value
    unit = f.unit
    return f"| `{f.name}` | {kind} | {unit} | {null} | {when} | {rng} | {store} | {f.meaning} |"


def records() -> Iterator[str]:
    """docs/influxdb.md: every record's fields."""
    seen = [*dict.fromkeys(s.record for s in KINDS.values()), WINDOW]
    for record in seen:
        kinds = [k.value for k, s in KINDS.items() if s.record is record]
        yield f"**{record.name}** ({', '.join(_code(k) for k in kinds) or 'in intensity'})"
        yield ""
        yield "| field | JSON type | unit | null | present | range | InfluxDB | meaning |"
        yield "|---|---|---|---|---|---|---|---|"
        yield from (_row(f) for f in record.fields)
        yield ""


#: Each generated table: the file it stands in and what writes it.
TABLES: dict[str, tuple[str, Callable[[], Iterator[str]]]] = {
    "topics": ("README.md", topics),
    "schema": ("docs/influxdb.md", schema),
    "records": ("docs/influxdb.md", records),
}


def _region(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- contract:{name} -->\n)(.*?)(<!-- /contract:{name} -->)", re.S)


def rendered(name: str, text: str) -> str:
    """``text`` with the table ``name`` written anew between its markers."""
    _, make = TABLES[name]
    body = "\n".join(make()).rstrip("\n") + "\n"
    if not _region(name).search(text):
        raise ValueError(f"no <!-- contract:{name} --> markers")
    return _region(name).sub(lambda m: m[1] + body + m[3], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.contract.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say which tables differ")
    args = parser.parse_args(argv)
    stale = []
    for name, (rel, _) in TABLES.items():
        path = ROOT / rel
        try:
            new = rendered(name, text := path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # not a source tree, or markers removed
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(f"{rel}: the {name} table")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for line in stale:
        print(("stale: " if args.check else "written: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
