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
from agent.http.state import StateView, state_document
from agent.runtime.agent import Agent
from agent.runtime.status import BufferTrend, status_line
from agent.status import AgentStatus
from drivers.errors import ModbusTimeout
from drivers.quantities import Quantity
from tests.support.agents import MIN, T0, make_agent, poll

GOLDEN = Path(__file__).resolve().parents[2] / "cases" / "api-state" / "expected.json"


def _electricity(kwh: float, kw: float) -> dict[Quantity, float | None]:
    return {Quantity.ENERGY_IMPORT_KWH: kwh, Quantity.ACTIVE_POWER_KW: kw}


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    """One poll each at T0: main 120 kW (1000 kWh), its sub 40 kW, parts at 0 units; spare
    does not answer. Started a minute before."""
    agent = make_agent(tmp_path, minutes=0)
    agent.started_ms = T0 - 60_000
    return agent


def test_the_snapshot_says_what_the_polls_left(agent: Agent) -> None:
    s = agent.status(T0 + 12_500)
    assert s.ts == T0 + 12_500
    assert (s.agent.site, s.agent.site_name, s.agent.gateway) == ("plant-t", "Test plant", "gw-t")
    assert s.agent.topic_base == "energy/v1/plant-t/gw-t"
    assert s.agent.uptime_s == 72.5
    devices = {d.id: d for d in s.devices}
    assert list(devices) == ["main", "sub", "spare", "parts"]  # config order
    main, sub, spare, parts = (devices[k] for k in ("main", "sub", "spare", "parts"))
    assert (main.state, main.polls, main.failures, main.age_s) == ("ok", 1, 0, 12.5)
    assert main.values == {"energy_import_kwh": 1000.0, "active_power_kw": 120.0}
    assert (main.main.quantity, main.main.value, main.main.unit) == (
        "energy_import_kwh",
        1000.0,
        "kWh",
    )
    assert (spare.state, spare.reason, spare.polls, spare.failures) == ("error", "timeout", 1, 1)
    assert spare.error is not None and "unit 3: no answer" in spare.error
    assert spare.last_ok_ms is None and spare.age_s is None and spare.power_kw is None
    assert sub.parent == "main" and not sub.root_electricity and main.root_electricity
    assert (parts.kind, parts.power_kw, parts.main.value, parts.main.unit) == (
        "production",
        None,
        0.0,
        "units",
    )
    assert parts.meter == "inline registers" and main.meter == "eastron-sdm630"
    # site power: the roots that answered (main); sub is inside main, the failing spare
    # makes it incomplete, parts have no power
    assert (s.site.power_kw, s.site.power_meters, s.site.power_complete) == (120.0, 1, False)
    assert s.site.intensity is None and s.site.today is None  # no interval has closed
    assert [m.device for m in s.site.demand.meters] == ["main", "spare"]
    assert s.site.demand.now_kw is None and s.site.demand.period_min == 15
    # waiting: a status and a measurement per good poll (3), the spare's error status
    assert s.outbox.depth == 7 and s.outbox.alarm and not s.link.connected
    assert s.health.state == "degraded"
    assert s.health.problems == (
        "MQTT not connected yet",
        "buffering: 7 messages waiting to be sent",
        "1 device failing: spare",
    )


def test_a_snapshot_stays_what_it_was(agent: Agent) -> None:
    """A view may keep a snapshot (the sparklines do): later polls do not change it."""
    before = agent.status(T0 + 12_000)
    agent.on_result(poll("main"), T0 + 20_000, _electricity(1000.5, 90.0), None, 0.01)
    after = agent.status(T0 + 21_000)
    main_before, main_after = before.devices[0], after.devices[0]
    assert (main_before.polls, main_before.power_kw) == (1, 120.0)
    assert (main_after.polls, main_after.power_kw) == (2, 90.0)
    assert main_before.values["active_power_kw"] == 120.0
    assert before.site.power_kw == 120.0 and after.site.power_kw == 90.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        main_before.state = "error"  # type: ignore[misc]


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
    assert doc["site"]["power_kw"] == 120.0 and doc["devices"][0]["age_s"] == 12.5

    agent.metrics.watch(lambda: status)
    families = {
        f.name: f for f in text_string_to_metric_families(agent.metrics.exposition().decode())
    }
    up = {s.labels["device"]: s.value for s in families["energy_agent_device_up"].samples}
    assert up == {"main": 1.0, "sub": 1.0, "spare": 0.0, "parts": 1.0}
    ages = families["energy_agent_device_last_ok_age_seconds"].samples
    assert {s.labels["device"]: s.value for s in ages} == {"main": 12.5, "sub": 12.5, "parts": 12.5}
    assert families["energy_agent_uptime_seconds"].samples[0].value == 72.5
    assert families["energy_agent_buffer_depth"].samples[0].value == 7

    assert status_line(status) == "polling 4 devices (3 ok), outbox 7"

    console = Console(width=160, record=True)
    console.print(_render(status))
    table = console.export_text()
    assert "ERROR timeout" in table and "1,000.00 kWh" in table and "0.00 units" in table
    assert "120.00" in table and "MQTT DOWN" in table and "outbox: 7 messages" in table


def test_the_page_view_keeps_the_snapshot_behind_its_document(agent: Agent) -> None:
    seen: list[AgentStatus] = []

    def source(now_ms: int) -> AgentStatus:
        seen.append(agent.status(now_ms))
        return seen[-1]

    view = StateView(source)
    doc = view.refresh(T0 + 12_000)
    assert view.status() is seen[-1] and view.current() is doc and len(seen) == 1
    assert view.history() == {"main": [[T0, 120.0]], "sub": [[T0, 40.0]], "spare": [], "parts": []}


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
    a.on_result(poll("main"), T0 + 20 * MIN + 20_000, odd, None, 0.01)
    a.on_result(poll("sub"), T0 + 20 * MIN + 20_000, None, ModbusTimeout("unit 2: no answer"), 0.5)
    out["odd"] = state_document(a.status(T0 + 22 * MIN + 2))
    view = StateView(a.status)
    for k in range(30):
        kwh = 2000 + k / 3600 * 99.87654
        a.on_result(
            poll("main"),
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


def _machine_free(doc: Any) -> Any:
    """The disk's free bytes are this machine's (the state_dir exists: the history is
    there): null, as where the directory is unknown."""
    if isinstance(doc, dict):
        return {k: None if k == "free_bytes" else _machine_free(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_machine_free(v) for v in doc]
    return doc


def test_api_state_is_the_document_the_page_was_written_for(tmp_path: Path) -> None:
    text = json.dumps(_machine_free(_documents(tmp_path)), indent=1, allow_nan=False)
    assert text.replace(str(tmp_path), "STATE") + "\n" == GOLDEN.read_text(encoding="utf-8")


# --- what the page must say in words: warm-up, a held record, the zone --------------------


def test_demand_says_how_much_of_its_window_has_data(tmp_path: Path) -> None:
    """Five minutes after the first reading at 120 kW, the 15-minute window holds 5 full
    minutes: 120 kW x 5 min / 15 min = 40 kW "now", over a 5-minute window (warm-up)."""
    warm = make_agent(tmp_path / "warm", minutes=5).status(T0 + 5 * MIN + 1000)
    main = warm.site.demand.meters[0]
    assert (main.device, main.now_kw, main.window_min) == ("main", 40.0, 5)
    full = make_agent(tmp_path / "full", minutes=20).status(T0 + 20 * MIN + 1000)
    assert (full.site.demand.meters[0].now_kw, full.site.demand.meters[0].window_min) == (
        120.0,
        15,
    )
    spare = full.site.demand.meters[1]
    assert (spare.device, spare.now_kw, spare.window_min) == ("spare", None, None)
    doc = state_document(warm)
    assert doc["site"]["demand"]["meters"][0]["window_min"] == 5


def test_a_held_site_record_names_the_meters_it_waits_for(tmp_path: Path) -> None:
    """main and parts close the minute ending T0+21 min, sub is late: the site record of
    that minute waits for sub, at most core.site_hold_s (120 s) past its end."""
    agent = make_agent(tmp_path, minutes=20)
    assert agent.status(T0 + 20 * MIN + 5000).site.held is None
    ts = T0 + 21 * MIN + 10_000
    agent.on_result(poll("main"), ts, _electricity(1000 + 120 * 21.2 / 60, 120.0), None, 0.01)
    agent.on_result(poll("parts"), ts, {Quantity.OUTPUT_UNITS: 128.0}, None, 0.01)
    s = agent.status(ts + 1000)
    assert s.site.held is not None
    assert s.site.held.waiting_for == ("sub",)
    assert (s.site.held.end_ms, s.site.held.until_ms) == (T0 + 21 * MIN, T0 + 23 * MIN)
    assert s.site.intensity is not None and s.site.intensity.ts == T0 + 20 * MIN
    assert state_document(s)["site"]["held"] == {
        "end_ms": T0 + 21 * MIN,
        "waiting_for": ["sub"],
        "until_ms": T0 + 23 * MIN,
    }
    # sub closes the minute: nothing is held any more
    agent.on_result(poll("sub"), ts, _electricity(500 + 40 * 21.2 / 60, 40.0), None, 0.01)
    assert agent.status(ts + 2000).site.held is None


def test_the_snapshot_carries_the_site_zone(tmp_path: Path) -> None:
    s = make_agent(tmp_path, minutes=0).status(T0)
    assert s.agent.timezone == "UTC" and state_document(s)["agent"]["timezone"] == "UTC"
