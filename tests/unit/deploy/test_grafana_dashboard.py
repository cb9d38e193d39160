"""deploy/grafana/dashboard.json against the contract, query by query.

Grafana cannot be installed here (no package in the registries this project
uses), so every Flux query is taken apart with regular expressions and held to
what the bridge writes (agent/contract/: measurements, tags, fields, choices):

* every measurement, field and tag a query names exists, and a tag compared to a
  literal is compared to one of its values;
* every query keeps to the chosen site and gateways;
* a query over energy points that adds devices together (a site total, a peak)
  takes root meters only (``root == "true"``): a child's energy is inside its
  parent's; one that keeps devices apart uses the device variable; the per-line
  panel sums children (``root == "false"``) per parent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.contract.kinds import KindSpec, Scope, by_measurement
from agent.contract.schema import Record, Store

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboard.json"
DOC: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
QUERIES = [
    (p["title"], t["query"]) for p in DOC["panels"] for t in p.get("targets", []) if "query" in t
]
MEASUREMENTS = by_measurement()

_MEASUREMENT = re.compile(r'r\._measurement == "(\w+)"')
_FIELD = re.compile(r'r\._field == "(\w+)"')
_COMPARED = re.compile(r'r\.(\w+) (==|!=) "([^"]*)"')
_CONTAINS = re.compile(r"contains\(value: r\.(\w+), set: \$\{(\w+):json\}\)")
_COLUMN = re.compile(r"\br\.(\w+)\b")
_GROUP = re.compile(r"group\((?:columns: \[([^\]]*)\])?\)")
_KEEP = re.compile(r"keep\(columns: \[([^\]]*)\]\)")


def _names(text: str) -> list[str]:
    return re.findall(r'"(\w+)"', text)


def _tags(specs: list[KindSpec]) -> dict[str, tuple[str, ...]]:
    """Each tag of a measurement's points and its values (empty: any id)."""
    tags: dict[str, tuple[str, ...]] = {"site": (), "gateway": ()}
    for spec in specs:
        if spec.scope is Scope.DEVICE:
            tags["device"] = ()
        for f in spec.record.fields:
            if f.store is Store.TAG:
                tags[f.db_name] = f.choices
            if f.store is Store.KEYS_AS_POINTS and f.keys is not None:
                tags[f.db_name] = f.keys.names
    return tags


def _fields(record: Record) -> set[str]:
    out: set[str] = set()
    for f in record.fields:
        if f.store is Store.FIELD:
            out.add(f.db_name)
        elif f.store is Store.KEYS_AS_FIELDS and f.keys is not None:
            out |= set(f.keys.names)
        elif f.store is Store.KEYS_AS_POINTS and isinstance(f.items, Record):
            out |= _fields(f.items)
    return out


def _measurement(query: str) -> str:
    (name,) = set(_MEASUREMENT.findall(query))
    return name


def test_the_dashboard_has_panels_with_queries_and_unique_ids() -> None:
    ids = [p["id"] for p in DOC["panels"]]
    assert len(ids) == len(set(ids)) and len(QUERIES) >= 20
    for p in DOC["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]


@pytest.mark.parametrize(("title", "query"), QUERIES, ids=[t for t, _ in QUERIES])
def test_every_name_a_query_uses_is_the_contracts(title: str, query: str) -> None:
    measurement = _measurement(query)
    assert measurement in MEASUREMENTS, f"{title}: no measurement {measurement!r}"
    specs = MEASUREMENTS[measurement]
    tags = _tags(specs)
    fields = set().union(*(_fields(s.record) for s in specs))
    for field in _FIELD.findall(query):
        assert field in fields, f"{title}: {measurement} has no field {field!r}"
    for tag, _, value in _COMPARED.findall(query):
        if tag in ("_measurement", "_field"):
            continue
        assert tag in tags, f"{title}: {measurement} has no tag {tag!r}"
        if tags[tag] and not value.startswith("$"):
            assert value in tags[tag], f"{title}: {tag} is never {value!r}"
    used = set(_COLUMN.findall(query)) | {c for g in _GROUP.findall(query) for c in _names(g)}
    used |= {c for k in _KEEP.findall(query) for c in _names(k)}
    for column in used - {"_measurement", "_field", "_value", "_time", "with"}:
        assert column in tags, f"{title}: {measurement} has no tag {column!r}"


@pytest.mark.parametrize(("title", "query"), QUERIES, ids=[t for t, _ in QUERIES])
def test_every_query_keeps_to_the_chosen_site_and_gateways(title: str, query: str) -> None:
    assert 'r.site == "${site}"' in query, title
    assert ("gateway", "gateway") in _CONTAINS.findall(query), title


@pytest.mark.parametrize(
    ("title", "query"),
    [(t, q) for t, q in QUERIES if _measurement(q) == "energy"],
    ids=[t for t, q in QUERIES if _measurement(q) == "energy"],
)
def test_energy_summed_over_devices_is_roots_only(title: str, query: str) -> None:
    groups = [_names(g) for g in _GROUP.findall(query)]
    assert groups, f"{title}: says how its series are grouped"
    roots = dict((t, v) for t, op, v in _COMPARED.findall(query) if op == "==").get("root")
    if all("device" in g for g in groups):
        assert ("device", "device") in _CONTAINS.findall(query), f"{title}: device variable"
    elif all("parent" in g for g in groups):
        assert roots == "false", f"{title}: a parent's line is its children"
    else:
        assert roots == "true", f"{title}: a total of devices counts root meters only"


def test_the_peak_demand_is_the_root_electricity_meters_15_minute_energy_times_4() -> None:
    (query,) = [q for t, q in QUERIES if t.startswith("Peak demand")]
    assert 'r.root == "true"' in query and 'r.carrier == "electricity"' in query
    assert 'r._field == "energy_kwh"' in query
    assert "group()\n  |> aggregateWindow(every: 15m, fn: sum" in query
    assert "r._value * 4.0" in query and query.rstrip().endswith("max()")


def test_the_variables_are_site_gateway_and_device_each_narrowed_by_the_one_before() -> None:
    variables = {v["name"]: v for v in DOC["templating"]["list"]}
    assert {"bucket", "site", "gateway", "device"} <= set(variables)
    assert variables["gateway"]["multi"] and variables["device"]["multi"]
    assert 'r.site == "${site}"' in variables["gateway"]["query"]
    device = variables["device"]["query"]
    assert 'r.site == "${site}"' in device and "set: ${gateway:json}" in device
    used = "".join(q for _, q in QUERIES)
    assert "${device:json}" in used and "${gateway:json}" in used


def test_the_panels_the_issue_asks_for_are_there() -> None:
    """Coverage, gas, tce, month totals, per line, per product, alarms."""
    titles = " | ".join(t for t, _ in QUERIES).lower()
    for word in ("coverage", "gas", "tce", "month", "per line", "per product", "alarms"):
        assert word in titles, word
    measured = {_measurement(q) for _, q in QUERIES}
    assert measured == {"energy", "intensity", "alarm"}
