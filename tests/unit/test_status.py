"""The agent's status snapshot: what it holds, that it stays put, and that every view
renders the same one.

A real :class:`Agent` (not started: no buses, no broker) gets poll results through
its own ``on_result``, as in ``test_http``; the numbers asserted are worked out by
hand from the polls fed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from agent.cli.demo import _render
from agent.config import parse_config
from agent.http.state import StateView, state_document
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from agent.runtime.status import BufferTrend, status_line
from agent.status import AgentStatus
from drivers.errors import ModbusTimeout
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from tests.unit.test_http import MIN, T0, _poll, make_agent

LIBRARY = ProfileLibrary()
GOLDEN = Path(__file__).resolve().parents[1] / "cases" / "api-state" / "expected.json"

CONFIG = """
site: {id: plant-s, timezone: UTC}
gateway: {id: gw-s}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices:
  - {id: press, bus: bus-1, unit: 1, profile: eastron-sdm630}
  - {id: oven, bus: bus-1, unit: 2, profile: eastron-sdm630}
  - {id: press-motor, bus: bus-1, unit: 3, profile: eastron-sdm630, parent: press}
  - id: boiler
    bus: bus-1
    unit: 4
    kind: gas
    registers: [{quantity: gas_volume_m3, table: holding, address: 0, type: uint32}]
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
"""


def _electricity(kwh: float, kw: float) -> dict[Quantity, float | None]:
    return {Quantity.ENERGY_IMPORT_KWH: kwh, Quantity.ACTIVE_POWER_KW: kw}


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    """press 80 kW, its motor 30 kW, the oven 50 kW then failing, the boiler at 1234.5 m³."""
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    agent = Agent(config, LIBRARY, outbox=MemoryOutbox(10_000_000))
    agent.started_ms = T0 - 60_000
    agent.on_result(_poll("press"), T0, _electricity(100.0, 80.0), None, 0.01)
    agent.on_result(_poll("press-motor"), T0, _electricity(10.0, 30.0), None, 0.01)
    agent.on_result(_poll("oven"), T0, _electricity(50.0, 50.0), None, 0.01)
    agent.on_result(_poll("oven"), T0 + 10_000, None, ModbusTimeout("unit 2: no answer"), 0.5)
    agent.on_result(_poll("boiler"), T0 + 5_000, {Quantity.GAS_VOLUME_M3: 1234.5}, None, 0.01)
    return agent


def test_the_snapshot_says_what_the_polls_left(agent: Agent) -> None:
    s = agent.status(T0 + 12_500)
    assert s.ts == T0 + 12_500
    assert (s.agent.site, s.agent.site_name, s.agent.gateway) == ("plant-s", "plant-s", "gw-s")
    assert s.agent.topic_base == "energy/v1/plant-s/gw-s"
    assert s.agent.uptime_s == 72.5  # started 60 s before T0
    devices = {d.id: d for d in s.devices}
    assert list(devices) == ["press", "oven", "press-motor", "boiler"]  # config order
    press, oven, motor, boiler = (devices[k] for k in ("press", "oven", "press-motor", "boiler"))
    assert (press.state, press.polls, press.failures, press.age_s) == ("ok", 1, 0, 12.5)
    assert press.values == {"energy_import_kwh": 100.0, "active_power_kw": 80.0}
    assert (press.main.quantity, press.main.value, press.main.unit) == (
        "energy_import_kwh",
        100.0,
        "kWh",
    )
    # a failed poll keeps the last good values and says why
    assert (oven.state, oven.reason, oven.polls, oven.failures) == ("error", "timeout", 2, 1)
    assert oven.last_ok_ms == T0 and oven.power_kw == 50.0 and oven.error is not None
    assert "unit 2: no answer" in oven.error
    assert motor.parent == "press" and not motor.root_electricity
    assert (boiler.kind, boiler.power_kw, boiler.main.value, boiler.main.unit) == (
        "gas",
        None,
        1234.5,
        "m³",
    )
    assert boiler.meter == "inline registers" and boiler.age_s == 7.5
    # site power: the roots that answered (press 80 kW); the motor is inside the press, the
    # failing oven makes it incomplete, gas has no power
    assert (s.site.power_kw, s.site.power_meters, s.site.power_complete) == (80.0, 1, False)
    assert s.site.intensity is None  # no interval has closed
    assert [m.device for m in s.site.demand.meters] == ["press", "oven"]
    assert s.site.demand.now_kw is None
    assert s.health.state == "degraded"
    # waiting: a status and a measurement per good poll (4), the oven's error status
    assert s.outbox.depth == 9 and s.outbox.alarm and not s.link.connected
    assert s.health.problems == (
        "MQTT not connected yet",
        "buffering: 9 messages waiting to be sent",
        "1 device failing: oven",
    )


def test_a_snapshot_stays_what_it_was(agent: Agent) -> None:
    """A view may keep a snapshot (the sparklines do): later polls do not change it."""
    before = agent.status(T0 + 12_000)
    agent.on_result(_poll("press"), T0 + 20_000, _electricity(100.5, 90.0), None, 0.01)
    after = agent.status(T0 + 21_000)
    press_before, press_after = before.devices[0], after.devices[0]
    assert (press_before.polls, press_before.power_kw) == (1, 80.0)
    assert (press_after.polls, press_after.power_kw) == (2, 90.0)
    assert press_before.values["active_power_kw"] == 80.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        press_before.state = "error"  # type: ignore[misc]


def test_the_buffer_trend_needs_clear_growth_over_five_seconds() -> None:
    trend = BufferTrend()
    assert not trend.growing(0, 100)
    assert not trend.growing(4_000, 200)  # +100, but seen over 4 s only
    assert trend.growing(5_000, 110)  # 110 >= 100 + 10 over 5 s
    assert not trend.growing(9_000, 109)  # against (0 s, 100): +9 is messages in flight
    # points older than 10 s are forgotten: against (5 s, 110), +5 is not growth, +15 is
    assert not trend.growing(14_500, 115)
    assert trend.growing(19_000, 125)  # against (9 s, 109): +16 over 10 s
    # a clock set back forgets what came after the new now: no growth over negative time
    assert not trend.growing(1_000, 500)
    assert not trend.growing(3_000, 600)
    assert trend.growing(6_000, 600)


def test_every_view_renders_the_same_snapshot(agent: Agent) -> None:
    """Page document, /metrics, systemd's status line and the demo's table agree."""
    status = agent.status(T0 + 12_500)
    doc = state_document(status)
    assert doc["health"]["problems"] == list(status.health.problems)
    assert doc["site"]["power_kw"] == 80.0 and doc["devices"][0]["age_s"] == 12.5

    agent.metrics.watch(lambda: status)
    families = {
        f.name: f for f in text_string_to_metric_families(agent.metrics.exposition().decode())
    }
    up = {s.labels["device"]: s.value for s in families["energy_agent_device_up"].samples}
    assert up == {"press": 1.0, "oven": 0.0, "press-motor": 1.0, "boiler": 1.0}
    ages = families["energy_agent_device_last_ok_age_seconds"].samples
    assert {s.labels["device"]: s.value for s in ages}["boiler"] == 7.5
    assert families["energy_agent_uptime_seconds"].samples[0].value == 72.5
    assert families["energy_agent_buffer_depth"].samples[0].value == status.outbox.depth > 0

    assert status_line(status) == f"polling 4 devices (3 ok), outbox {status.outbox.depth}"

    console = Console(width=160, record=True)
    console.print(_render(status))
    table = console.export_text()
    assert "ERROR timeout" in table and "1,234.50 m³" in table and "80.00" in table
    assert "MQTT DOWN" in table and f"outbox: {status.outbox.depth} messages" in table


def test_the_page_view_keeps_the_snapshot_behind_its_document(agent: Agent) -> None:
    seen: list[AgentStatus] = []

    def source(now_ms: int) -> AgentStatus:
        seen.append(agent.status(now_ms))
        return seen[-1]

    view = StateView(source)
    doc = view.refresh(T0 + 12_000)
    assert view.status() is seen[-1] and view.current() is doc and len(seen) == 1
    assert view.history()["press"] == [[T0, 80.0]]


# --- /api/state, byte for byte -----------------------------------------------------------


def _documents(tmp_path: Path) -> dict[str, Any]:
    """The scenarios of ``tests/cases/api-state/expected.json``, which the page was
    written against (made by ``build_state`` before the status snapshot existed)."""
    out: dict[str, Any] = {}
    a = make_agent(tmp_path / "a")
    a.started_ms = T0 - 5000
    out["full"] = state_document(a.status(T0 + 21 * MIN + 123))
    a.link.state.connected = True
    a.link.state.connects = 2
    out["connected"] = state_document(a.status(T0 + 21 * MIN + 7777))
    a.link.state.connected = False
    a.link.state.last_error = "connection refused"
    a.link.state.disconnects = 1
    out["down"] = state_document(a.status(T0 + 22 * MIN + 1))
    odd = _electricity(0.0, 123.456789) | {Quantity.ENERGY_IMPORT_KWH: None}
    a.on_result(_poll("main"), T0 + 20 * MIN + 20_000, odd, None, 0.01)
    a.on_result(_poll("sub"), T0 + 20 * MIN + 20_000, None, ModbusTimeout("unit 2: no answer"), 0.5)
    out["odd"] = state_document(a.status(T0 + 22 * MIN + 2))
    view = StateView(a.status)
    for k in range(30):
        kwh = 2000 + k / 3600 * 99.87654
        a.on_result(
            _poll("main"),
            T0 + 21 * MIN + k * 1000,
            _electricity(kwh, 99.87654321 + k / 7),
            None,
            0.01,
        )
        view.refresh(T0 + 21 * MIN + k * 1000 + 500)
    out["history"] = view.with_history()
    b = make_agent(tmp_path / "b", minutes=0)
    b.started_ms = T0
    out["fresh"] = state_document(b.status(T0 + 1))
    return out


def test_api_state_is_the_document_the_page_was_written_for(tmp_path: Path) -> None:
    text = json.dumps(_documents(tmp_path), indent=1, allow_nan=False)
    assert text.replace(str(tmp_path), "STATE") + "\n" == GOLDEN.read_text(encoding="utf-8")
