"""What is written from the contract is committed as written: Telegraf's config, the docs' tables.

Each committed file must equal its generator's output (the failure says which
command rewrites it), and is also read back on its own terms: the TOML as
Telegraf parses it, the markdown tables row by row.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.contract import KINDS, Scope, telegraf
from agent.contract import docs as contract_docs
from agent.contract.kinds import by_measurement
from agent.contract.schema import Store

ROOT = Path(__file__).resolve().parents[3]
CONF = ROOT / "deploy/telegraf/energy-agent.conf"


def test_the_telegraf_config_is_the_generated_one() -> None:
    assert CONF.read_text(encoding="utf-8") == telegraf.config(), (
        "run: python -m agent.contract.telegraf > deploy/telegraf/energy-agent.conf"
    )


def test_telegraf_reads_each_kinds_topics_and_stored_fields() -> None:
    conf = tomllib.loads(CONF.read_text(encoding="utf-8"))
    consumers = {
        c["client_id"].removeprefix("telegraf-"): c for c in conf["inputs"]["mqtt_consumer"]
    }
    # Every measurement but the ledger's, whose point only the bridge can derive.
    telegraf = {m: s for m, s in by_measurement().items() if all(x.telegraf for x in s)}
    assert list(telegraf) == [m for m in by_measurement() if m != "ledger"]
    assert list(consumers) == list(telegraf) == conf["outputs"]["influxdb_v2"][0]["namepass"]
    for measurement, specs in telegraf.items():
        c = consumers[measurement]
        parsing = {p["topic"]: p["tags"] for p in c["topic_parsing"]}
        for spec in specs:
            topic = "energy/v1/+/+/" + ("+/" if spec.scope is Scope.DEVICE else "") + spec.suffix
            assert f"$share/telegraf/{topic}" in c["topics"]
            assert parsing[topic].endswith(
                "/site/gateway" + ("/device" if spec.scope is Scope.DEVICE else "") + "/_"
            )
        (j,) = c["json_v2"]
        paths = {f["path"]: f for f in j.get("field", [])}
        for f in (f for s in specs for f in s.record.fields if f.store is Store.FIELD):
            assert paths[f.name].get("rename", f.name) == f.db_name
            assert paths[f.name].get("optional", False) == (f.nullable or not f.required)
        tags = [t["path"] for t in j.get("tag", [])]
        assert tags == [f.name for s in specs[:1] for f in s.record.fields if f.store is Store.TAG]


@pytest.mark.parametrize("name", list(contract_docs.TABLES))
def test_the_docs_tables_are_the_generated_ones(name: str) -> None:
    rel, _ = contract_docs.TABLES[name]
    text = (ROOT / rel).read_text(encoding="utf-8")
    assert contract_docs.rendered(name, text) == text, (
        f"{rel}: the {name} table is stale; run: python -m agent.contract.docs"
    )


def _rows(text: str, name: str) -> list[list[str]]:
    """A generated markdown table's cells, row by row (header and rule left out)."""
    body = text.split(f"<!-- contract:{name} -->\n")[1].split(f"<!-- /contract:{name} -->")[0]
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    split: list[list[Any]] = [
        [cell.strip() for cell in line.strip("|").replace("\\|", "/").split("|")] for line in lines
    ]
    return split[1:]


def test_the_readme_topic_table_is_the_contracts() -> None:
    rows = _rows((ROOT / "README.md").read_text(encoding="utf-8"), "topics")
    assert len(rows) == len(KINDS)
    for (topic, flags, payload), spec in zip(rows, KINDS.values(), strict=True):
        device = "{dev}/" if spec.scope is Scope.DEVICE else ""
        assert topic == f"`{{p}}/{{site}}/{{gw}}/{device}{spec.suffix}`"
        assert flags.split(", ")[0] == str(spec.qos)
        assert ("retained" in flags) is spec.retained and ("LWT" in flags) is spec.will
        for f in spec.record.fields:
            assert f"`{f.name}`" in payload


def test_the_schema_table_is_the_contracts() -> None:
    rows = _rows((ROOT / "docs/influxdb.md").read_text(encoding="utf-8"), "schema")
    assert [r[0] for r in rows] == [f"`{m}`" for m in by_measurement()]
    for (_, _, tags, fields), specs in zip(rows, by_measurement().values(), strict=True):
        for f in (f for s in specs for f in s.record.fields):
            if f.store is Store.TAG or f.store is Store.KEYS_AS_POINTS:
                assert f"`{f.db_name}`" in tags
            if f.store is Store.FIELD:
                assert f"`{f.db_name}`" in fields


def test_the_docs_command_rewrites_a_stale_table_and_check_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    for rel in ("README.md", "docs/influxdb.md"):
        (tmp_path / rel).write_text((ROOT / rel).read_text(encoding="utf-8"), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| 1, retained, LWT |", "| 0 |"))
    monkeypatch.setattr(contract_docs, "ROOT", tmp_path)
    assert contract_docs.main(["--check"]) == 1
    assert "stale: README.md: the topics table" in capsys.readouterr().out
    assert contract_docs.main([]) == 0
    assert readme.read_text() == (ROOT / "README.md").read_text()
    assert contract_docs.main(["--check"]) == 0
    readme.write_text("no markers here")
    assert contract_docs.main([]) == 2
    assert "no <!-- contract:topics --> markers" in capsys.readouterr().err
