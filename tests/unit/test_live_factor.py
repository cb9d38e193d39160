"""A live grid emission factor over MQTT: used while fresh, ignored when implausible."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.core.engine import load_kernel
from agent.payloads import Carrier
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from drivers.profile import ProfileLibrary

load_kernel()
LIBRARY = ProfileLibrary()
T0 = 1_700_000_000_000 // 60_000 * 60_000

CONFIG = """
site: {id: plant-t, timezone: UTC}
gateway: {id: gw-t}
carbon:
  electricity:
    kg_per_kwh: 0.5703
    live: {topic: grid/cn-east/factor, max_age_s: 600}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices: [{id: main, bus: bus-1, unit: 1, profile: eastron-sdm630}]
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
"""


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "cfg.yaml", profiles=LIBRARY)
    return Agent(config, LIBRARY, outbox=MemoryOutbox(1_000_000))


def _factor_at(agent: Agent, end_ms: int) -> tuple[float, str]:
    f = agent.site.factors.at(Carrier.ELECTRICITY, end_ms - 60_000, end_ms)
    return f.value, f.origin


def test_the_configured_topic_is_subscribed(agent: Agent) -> None:
    assert "grid/cn-east/factor" in agent.link.subscriptions


def test_a_fresh_live_value_is_used_and_a_stale_one_falls_back(agent: Agent) -> None:
    agent.on_live_factor(b'{"kg_per_kwh": 0.42, "ts": %d}' % T0)
    assert _factor_at(agent, T0 + 60_000) == (0.42, "live")
    assert _factor_at(agent, T0 + 11 * 60_000) == (0.5703, "static")  # older than 600 s
    assert _factor_at(agent, T0 - 60_000) == (0.5703, "static")  # before it was received


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"kg": 0.4}',
        b'{"kg_per_kwh": "lots"}',
        b'{"kg_per_kwh": -1}',
        b'{"kg_per_kwh": 1e9}',
        b"NaN",
        b"[0.4]",
    ],
)
def test_implausible_or_malformed_values_are_ignored(
    agent: Agent, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    agent.on_live_factor(payload)
    assert _factor_at(agent, T0 + 60_000) == (0.5703, "static")
    assert "live emission factor ignored" in caplog.text


def test_a_bare_number_counts_from_now(agent: Agent) -> None:
    agent.on_live_factor(b"0.3")
    now = time.time_ns() // 1_000_000
    assert _factor_at(agent, now + 60_000) == (0.3, "live")
