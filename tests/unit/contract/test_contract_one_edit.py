"""A new field of the energy record is one row in agent/contract/records.py, plus its test.

On a copy of the tree, the test adds a ``curtailed_kwh`` row (a field no record has)
to ``ENERGY`` and its range to the hand-worked ranges of test_contract_tables.py (those two
edits and nothing else), runs the two generators, and then checks that every place that
reads or writes an energy record has it: the builder, the bridge's model, its
line protocol and its fast path (writing the same line), the Telegraf
configuration, the docs' tables and the Parquet columns; and that the
contract's and the bridge's own tests pass on the edited tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

ROW = """        Field(
            "curtailed_kwh",
            NUMBER,
            "energy curtailed in the interval",
            unit="kWh",
            nullable=True,
            when="it curtails",
            plausible=(0.0, _E),
        ),
"""
#: The ENERGY record's last line: the new row goes just above it.
ANCHOR = """    ),
    span="interval_s",
)"""
#: Its test: the range worked out by hand (900 s at the 100 GW ceiling).
TEST_ROW = """        "curtailed_kwh": (0.0, 2.5e7),
"""
TEST_ANCHOR = """        "unmetered_kwh": (-2.5e7, 2.5e7),
"""

CHECK = r"""
import json
from agent.bridge import fastpath
from agent.bridge.validate import Accepted, Limits, Validator, check_strict
from agent.contract import Carrier, encode, energy_payload
from agent.contract import docs, telegraf
from agent.contract.models import EnergyModel
from agent.replay import writers

TS = 1_750_000_000_000
payload = energy_payload(ts=TS, interval_s=60, carrier=Carrier.ELECTRICITY, energy_kwh=1.0,
                         co2_kg=0.5, ef_kg_per_kwh=0.5, quality="measured",
                         curtailed_kwh=0.1 + 0.2)
assert list(payload)[-1] == "curtailed_kwh" and payload["curtailed_kwh"] == 0.3, payload
EnergyModel.model_validate(payload)
topic = "energy/v1/plant-a/gw-01/press-1/energy"
strict = check_strict(topic, encode(payload), Limits(), TS)
fast = Validator(Limits()).check(topic, encode(payload), TS)
assert isinstance(strict, Accepted) and strict == fast, (strict, fast)
assert strict.lines[0].endswith(",curtailed_kwh=0.3 1750000000000"), strict.lines
line = fastpath.energy_line(fastpath.route(topic, "energy/v1"), json.loads(encode(payload)), TS)
assert line == strict.lines[0], line
too_much = check_strict(topic, encode({**payload, "curtailed_kwh": 1e9}), Limits(), TS)
assert too_much.reason.value == "implausible", too_much
assert 'path = "curtailed_kwh"' in telegraf.config()
assert "| `curtailed_kwh` | number | kWh | yes | it curtails |" in "\n".join(docs.records())
assert "`curtailed_kwh` (float; when it curtails)" in "\n".join(docs.schema())
assert "curtailed_kwh" in writers._FLOATS
print("curtailed_kwh everywhere")
"""


def _tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
    for top in ("agent", "confdoc", "drivers", "tests", "docs", "deploy"):
        shutil.copytree(ROOT / top, dest / top, ignore=ignore)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)


def _run(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.integration
def test_a_new_field_is_one_row(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _tree(tree)
    records = tree / "agent/contract/records.py"
    text = records.read_text(encoding="utf-8")
    assert text.count(ANCHOR) == 1
    records.write_text(text.replace(ANCHOR, ROW + ANCHOR), encoding="utf-8")
    ranges_test = tree / "tests/unit/contract/test_contract_tables.py"
    text = ranges_test.read_text(encoding="utf-8")
    assert text.count(TEST_ANCHOR) == 1
    ranges_test.write_text(text.replace(TEST_ANCHOR, TEST_ANCHOR + TEST_ROW), encoding="utf-8")

    conf = _run(tree, "-m", "agent.contract.telegraf")
    assert conf.returncode == 0, conf.stderr
    (tree / "deploy/telegraf/energy-agent.conf").write_text(conf.stdout, encoding="utf-8")
    written = _run(tree, "-m", "agent.contract.docs")
    assert written.returncode == 0, written.stderr

    checked = _run(tree, "-c", CHECK)
    assert checked.returncode == 0, checked.stderr
    assert "curtailed_kwh everywhere" in checked.stdout

    tests = _run(
        tree,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/unit/contract",
        "tests/unit/bridge/test_bridge_fastpath.py",
        "tests/unit/bridge/test_bridge_validate.py",
        "tests/unit/bridge/test_bridge_lineproto.py",
        "-m",
        "not integration",
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
