"""The alarm rules inside a real (not started) agent: fed by its polls, said in its status,
its /api/state, its /metrics and the outbox as retained ``alarms`` messages.

tests/support/agents.py feeds 20 minutes of 10-second polls from T0: main 120 kW,
sub (main's child) 40 kW, parts counting; spare never answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from agent.cli.status import render
from agent.config import parse_config
from agent.contract.build import encode
from agent.http.state import state_document
from agent.runtime.agent import Agent
from agent.runtime.alarms import ACTIVE_MAX, IntervalCoverage
from agent.runtime.outbox import MemoryOutbox
from drivers.quantities import Quantity
from tests.support.agents import CONFIG, LIBRARY, MIN, T0, make_agent, poll

RULES = """
alarms:
  rules:
    - {id: spare-off, condition: offline, minutes: 5, devices: [spare]}
    - {id: main-high, condition: power_above, limit_kw: 100, minutes: 1, devices: [main]}
    - {id: cover, condition: coverage_below, percent: 95}
"""


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    agent = make_agent(tmp_path, minutes=20, extra=RULES)
    agent.alarms.evaluator.started_ms = T0  # spare is offline since the (test's) start
    return agent


def alarm_payloads(agent: Agent) -> list[dict[str, object]]:
    entries = agent.outbox.take(100_000)
    return [json.loads(e.payload) for e in entries if e.topic.endswith("/alarms")]


def test_alarms_are_raised_said_everywhere_and_stored_retained(agent: Agent) -> None:
    # +20 min: spare has not answered for 20 min (>= 5): raised at once. main is above
    # 100 kW from this first look on: raised one minute later. Coverage: main and parts
    # closed intervals, spare none: 2 of 3 roots = 66.667 % < 95 (sub is not a root).
    first = agent.alarms.tick(agent.status(T0 + 20 * MIN))
    assert [(c.state, c.alarm.id, c.alarm.value) for c in first] == [
        ("raised", "spare-off/spare", 20.0),
        ("raised", "cover/site", pytest.approx(200 / 3)),
    ]
    second = agent.alarms.tick(agent.status(T0 + 21 * MIN))
    assert [(c.state, c.alarm.id, c.alarm.value) for c in second] == [
        ("raised", "main-high/main", 120.0)
    ]
    status = agent.status(T0 + 21 * MIN)
    assert [a.id for a in status.alarms] == ["spare-off/spare", "main-high/main", "cover/site"]
    doc = state_document(status)["alarms"]
    assert doc[1] == {
        "id": "main-high/main",
        "rule": "main-high",
        "condition": "power_above",
        "subject": "main",
        "state": "raised",
        "value": 120.0,
        "limit": 100.0,
        "since_ms": T0 + 20 * MIN,
        "text": "main: power 120 kW above 100 kW",
    }
    assert doc[0]["value"] == 21.0 and doc[0]["since_ms"] == T0
    agent.metrics.watch(lambda: status)
    metrics = {
        (s.name, s.labels.get("rule")): s.value
        for f in text_string_to_metric_families(agent.metrics.exposition().decode())
        for s in f.samples
        if s.name.startswith("energy_agent_alarm")
    }
    assert metrics[("energy_agent_alarms_raised", None)] == 3
    assert metrics[("energy_agent_alarm_raised", "main-high")] == 1
    changes = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(agent.metrics.exposition().decode())
        for s in f.samples
        if s.name == "energy_agent_alarm_changes_total"
    }
    assert changes == {"raised": 3, "cleared": 0}
    # Three retained messages, the last listing every alarm raised.
    payloads = alarm_payloads(agent)
    assert [(p["rule"], p["state"]) for p in payloads] == [
        ("spare-off", "raised"),
        ("cover", "raised"),
        ("main-high", "raised"),
    ]
    assert [a["rule"] for a in payloads[-1]["active"]] == ["spare-off", "main-high", "cover"]


def test_an_answer_clears_the_offline_alarm(agent: Agent) -> None:
    agent.alarms.tick(agent.status(T0 + 20 * MIN))
    values = {Quantity.ENERGY_IMPORT_KWH: 10.0, Quantity.ACTIVE_POWER_KW: 5.0}
    agent.on_result(poll("spare"), T0 + 20 * MIN + 5_000, values, None, 0.01)
    changes = agent.alarms.tick(agent.status(T0 + 20 * MIN + 10_000))
    assert [(c.state, c.alarm.id) for c in changes] == [("cleared", "spare-off/spare")]
    assert "spare-off/spare" not in [a.id for a in agent.status(T0 + 21 * MIN).alarms]
    cleared = alarm_payloads(agent)[-1]
    assert (cleared["state"], cleared["text"]) == ("cleared", "spare-off cleared for spare")
    assert [a["rule"] for a in cleared["active"]] == ["cover"]


def test_coverage_is_judged_when_every_root_reported_or_two_intervals_later() -> None:
    cov = IntervalCoverage(["a", "b"], 60)
    cov.add("a", {"ts": 60_000, "quality": "measured"})
    assert cov.latest is None  # b may still come
    cov.add("b", {"ts": 60_000, "quality": "interpolated"})
    assert cov.latest == (60_000, 50.0)  # 1 of 2 measured
    cov.add("a", {"ts": 120_000, "quality": "measured"})
    cov.add("a", {"ts": 180_000, "quality": "measured"})
    assert cov.latest == (60_000, 50.0)  # 180 - 120 s < 2 intervals: b may still come
    cov.add("a", {"ts": 240_000, "quality": "measured"})
    assert cov.latest == (120_000, 50.0)  # 240 - 120 >= 120 s: b counts as missing
    cov.add("b", {"ts": 120_000, "quality": "measured"})  # too late: already judged
    assert cov.latest == (120_000, 50.0)
    cov.add("x", {"ts": 300_000, "quality": "measured"})  # not a root: ignored
    assert cov.latest == (120_000, 50.0)


def test_status_lists_the_raised_alarms(agent: Agent) -> None:
    """`energy-agent status` renders /api/state's ``alarms``: one row each, its age."""
    agent.alarms.tick(agent.status(T0 + 20 * MIN))
    agent.alarms.tick(agent.status(T0 + 22 * MIN))  # the value moves on with each look
    doc = state_document(agent.status(T0 + 22 * MIN))
    console = Console(width=160, record=True)
    console.print(render(doc))
    text = console.export_text()
    assert "alarms raised: 3" in text
    assert len([line for line in text.splitlines() if "(since " in line]) == 3
    # spare: offline since T0, 22 min before the document
    assert "spare has not answered for 22 min (limit 5 min)" in text


def test_a_restart_clears_what_is_no_longer_bad_instead_of_leaving_it_raised(
    agent: Agent, tmp_path: Path
) -> None:
    """state_dir/alarms.json keeps the raised alarms; the next run judges them again."""
    agent.alarms.tick(agent.status(T0 + 21 * MIN))  # spare-off, cover, main-high pending
    agent.alarms.tick(agent.status(T0 + 22 * MIN))  # main-high raised
    saved = json.loads((tmp_path / "alarms.json").read_text())
    assert [r["rule"] for r in saved] == ["spare-off", "main-high", "cover"]
    # The next run: spare answers, main's power is still above its limit.
    again = make_agent(tmp_path, minutes=0, extra=RULES)
    values = {Quantity.ENERGY_IMPORT_KWH: 10.0, Quantity.ACTIVE_POWER_KW: 5.0}
    again.on_result(poll("spare"), T0 + 30 * MIN, values, None, 0.01)
    main = {Quantity.ENERGY_IMPORT_KWH: 1100.0, Quantity.ACTIVE_POWER_KW: 130.0}
    again.on_result(poll("main"), T0 + 30 * MIN, main, None, 0.01)
    changes = again.alarms.tick(again.status(T0 + 30 * MIN + 1000))
    assert [(c.state, c.alarm.id) for c in changes] == [("cleared", "spare-off/spare")]
    # main-high stays raised (no second raise); cover waits for the next closed interval.
    assert [a.id for a in again.status(T0 + 31 * MIN).alarms] == ["main-high/main", "cover/site"]


def test_a_messages_active_list_is_capped(tmp_path: Path) -> None:
    """150 devices offline at once: 150 raises, each listing the first 100 (rule order)."""
    devices = "\n".join(
        f"  - {{id: m{i:03d}, bus: bus-1, unit: {i + 10}, profile: eastron-sdm630}}"
        for i in range(150)
    )
    rules = "\nalarms:\n  rules:\n    - {id: offl, condition: offline, minutes: 1}\n"
    text = CONFIG.replace("STATE", str(tmp_path)).replace("devices:\n", f"devices:\n{devices}\n")
    agent = Agent(parse_config(text + rules, "t.yaml", profiles=LIBRARY), LIBRARY,
                  outbox=MemoryOutbox(50_000_000))  # fmt: skip
    agent.alarms.evaluator.started_ms = T0
    changes = agent.alarms.tick(agent.status(T0 + 2 * MIN))
    assert len(changes) == 154  # the 150 and the test config's own four
    payloads = alarm_payloads(agent)
    assert len(payloads) == 154 and {len(p["active"]) for p in payloads} == {ACTIVE_MAX}
    assert max(len(encode(p)) for p in payloads) < 32_000


def test_alarms_left_raised_are_cleared_when_the_rules_are_gone(
    agent: Agent, tmp_path: Path
) -> None:
    agent.alarms.tick(agent.status(T0 + 20 * MIN))
    assert json.loads((tmp_path / "alarms.json").read_text())  # spare-off, cover raised
    without = make_agent(tmp_path, minutes=0)  # the same state_dir, no alarms section
    assert without.alarms.on
    changes = without.alarms.tick(without.status(T0 + 21 * MIN))
    assert [(c.state, c.alarm.id) for c in changes] == [
        ("cleared", "spare-off/spare"),
        ("cleared", "cover/site"),
    ]
    assert not without.alarms.on and json.loads((tmp_path / "alarms.json").read_text()) == []


def test_the_last_alarm_message_is_restated_at_every_connect(agent: Agent) -> None:
    """A broker restarted without persistence forgot the retained message: the agent
    publishes the last one again when it reconnects, as it does the devices' statuses."""
    agent.alarms.tick(agent.status(T0 + 20 * MIN))
    last = alarm_payloads(agent)[-1]  # takes everything waiting
    agent._restate()
    assert alarm_payloads(agent) == [last]
