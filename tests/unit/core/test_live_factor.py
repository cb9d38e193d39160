"""A live grid emission factor over MQTT: used while fresh, ignored when implausible.

Whoever may publish on the factor topic reaches every CO2 figure of the site, so
the hostile payloads below are the ones a broken or careless publisher sends:
each must leave the static factor in force and say why in the log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.contract import Carrier
from agent.core.engine import load_kernel
from agent.core.factors import (
    LIVE_MAX_KG_PER_KWH,
    LIVE_TS_MAX_MS,
    LIVE_TS_MIN_MS,
    FactorError,
    LiveValue,
    parse_live_factor,
)
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from drivers.profile import ProfileLibrary

load_kernel()
LIBRARY = ProfileLibrary()
T0 = 1_700_000_000_000 // 60_000 * 60_000
STATIC = (0.5703, "static")

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


def _factors_in_force(agent: Agent) -> set[tuple[float, str]]:
    """The factor of the minute after every time a hostile payload could have claimed."""
    now = time.time_ns() // 1_000_000
    claims = (T0, 1_700_000_000_000, T0 // 1000, now, 0, 1, 5, 10**20, 10**29)
    return {_factor_at(agent, t + 60_000) for t in claims}


def test_the_configured_topic_is_subscribed(agent: Agent) -> None:
    assert "grid/cn-east/factor" in agent.link.subscriptions


def test_a_fresh_live_value_is_used_and_a_stale_one_falls_back(agent: Agent) -> None:
    agent.on_live_factor(b'{"kg_per_kwh": 0.42, "ts": %d}' % T0)
    assert _factor_at(agent, T0 + 60_000) == (0.42, "live")
    assert _factor_at(agent, T0 + 11 * 60_000) == STATIC  # older than 600 s
    assert _factor_at(agent, T0 - 60_000) == STATIC  # before it was received


def test_a_bare_number_counts_from_now(agent: Agent) -> None:
    agent.on_live_factor(b"0.3")
    now = time.time_ns() // 1_000_000
    assert _factor_at(agent, now + 60_000) == (0.3, "live")


def test_an_object_without_ts_counts_from_now() -> None:
    """Publishers that never sent a time (the README allowed it) keep working."""
    assert parse_live_factor(b'{"kg_per_kwh": 0.42}', 7) == LiveValue(0.42, 7)


def test_an_integer_value_and_the_bounds_are_accepted() -> None:
    assert parse_live_factor(b"0", 7) == LiveValue(0.0, 7)
    assert parse_live_factor(b"5", 7) == LiveValue(LIVE_MAX_KG_PER_KWH, 7)
    doc = b'{"ts": %d, "kg_per_kwh": 1}' % LIVE_TS_MIN_MS  # key order does not matter
    assert parse_live_factor(doc, 7) == LiveValue(1.0, LIVE_TS_MIN_MS)
    last = LIVE_TS_MAX_MS - 1
    assert parse_live_factor(b' {"kg_per_kwh": 0.5, "ts": %d}\n' % last, 7).ts_ms == last


# Payloads today's code refused too (kept so it stays so), each with the reason logged.
MALFORMED = [
    (b"not json", "not JSON"),
    (b"", "not JSON"),
    (b"\xff\xfe0.4", "not JSON"),
    (b'{"kg": 0.4}', 'must be "kg_per_kwh" and optionally "ts", not kg'),
    (b"{}", "not none"),
    (b'{"kg_per_kwh": "lots", "ts": %d}' % T0, 'must be a number, not "lots"'),
    (b'{"kg_per_kwh": -1, "ts": %d}' % T0, "-1 kg/kWh is not plausible"),
    (b'{"kg_per_kwh": 1e9, "ts": %d}' % T0, "1000000000.0 kg/kWh is not plausible"),
    (b"5.000001", "5.000001 kg/kWh is not plausible"),
    (b"NaN", "NaN is not a number"),
    (b"Infinity", "Infinity is not a number"),
    (b"1e400", "Infinity kg/kWh is not plausible"),
    (b"-1e400", "-Infinity kg/kWh is not plausible"),
    (b"1" + b"0" * 5000, "5001 bytes, more than 1024"),  # more digits than Python converts
    (b"[0.4]", "must be a number, not [0.4]"),
    (b"null", "must be a number, not null"),
    (b'{"kg_per_kwh": 0.42, "ts": NaN}', "NaN is not a number"),
    (b"[" * 500 + b"]" * 500, "must be a number, not [[[["),  # as deep as 1024 bytes go
]

# Payloads today's code took as a factor, or crashed on (issue 11, item 7).
HOSTILE = [
    (b"true", "must be a number, not true"),
    (b"false", "must be a number, not false"),
    (b'{"kg_per_kwh": true, "ts": %d}' % T0, "must be a number, not true"),
    (b'{"kg_per_kwh": 0.42, "ts": 1e400}', '"ts" must be an integer (Unix ms), not Infinity'),
    (b'{"kg_per_kwh": 0.42, "ts": -1e400}', "not -Infinity"),
    (b'{"kg_per_kwh": 0.42, "ts": Infinity}', "Infinity is not a number"),
    (b'{"kg_per_kwh": 0.42, "ts": 1e20}', '"ts" must be an integer (Unix ms), not 1e+20'),
    (b'{"kg_per_kwh": 0.42, "ts": 1700000000000.5}', "not 1700000000000.5"),
    (b'{"kg_per_kwh": 0.42, "ts": "1700000000000"}', 'not "1700000000000"'),
    (b'{"kg_per_kwh": 0.42, "ts": true}', "integer (Unix ms), not true"),
    (b'{"kg_per_kwh": 0.42, "ts": 5}', '"ts" 5 is not a Unix ms time in 2000..2100'),
    (b'{"kg_per_kwh": 0.42, "ts": -1}', '"ts" -1 is not a Unix ms time'),
    (b'{"kg_per_kwh": 0.42, "ts": %d}' % 10**29, "is not a Unix ms time"),
    (b'{"kg_per_kwh": 0.42, "ts": %d}' % (T0 // 1000), "is not a Unix ms time"),  # seconds
    (b'{"kg_per_kwh": "0.42", "ts": %d}' % T0, 'must be a number, not "0.42"'),
    (b'"0.42"', 'must be a number, not "0.42"'),
    (b'{"kg_per_kwh": 0.42, "carrier": "gas", "ts": %d}' % T0, "not carrier, kg_per_kwh, ts"),
    (b'{"kg_per_kwh": 4.2, "kg_per_kwh": 0.42, "ts": %d}' % T0, "duplicate keys"),
    (b"1" + b"0" * 400, "kg/kWh is not plausible"),  # valid JSON, overflows float()
    (b"[" * 5000 + b"]" * 5000, "10000 bytes"),
    (b'{"kg_per_kwh": 0.42, "ts": %d, "x": "%s"}' % (T0, b"y" * 2000), "bytes, more than 1024"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED + HOSTILE)
def test_a_rejected_payload_leaves_the_static_factor_and_says_why(
    agent: Agent, payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent.on_live_factor(payload)
    assert _factors_in_force(agent) == {STATIC}
    assert "live emission factor ignored" in caplog.text
    assert reason in caplog.text


@pytest.mark.parametrize(("payload", "reason"), MALFORMED + HOSTILE)
def test_parse_live_factor_raises_one_error_type_with_the_reason(
    payload: bytes, reason: str
) -> None:
    with pytest.raises(FactorError) as info:
        parse_live_factor(payload, T0)
    assert reason in str(info.value)
    assert len(str(info.value)) < 200  # a log line, not the payload


def test_nesting_beyond_the_recursion_limit_is_a_reason_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1024 bytes nest 512 deep, under Python's limit; were the cap raised, still no crash.
    monkeypatch.setattr("agent.core.factors.LIVE_MAX_BYTES", 1_000_000)
    with pytest.raises(FactorError, match="nested too deeply"):
        parse_live_factor(b"[" * 100_000 + b"]" * 100_000, T0)


def test_rejects_are_logged_at_most_once_a_minute(
    agent: Agent, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("agent.runtime.agent.time.monotonic", lambda: clock[0])
    for _ in range(100):
        agent.on_live_factor(b"true")
        clock[0] += 0.5  # a publisher gone wrong, twice a second
    lines = [r.getMessage() for r in caplog.records if "factor ignored" in r.getMessage()]
    assert len(lines) == 1  # 50 s: one line
    clock[0] += 10.0
    agent.on_live_factor(b"NaN")
    lines = [r.getMessage() for r in caplog.records if "factor ignored" in r.getMessage()]
    assert len(lines) == 2
    assert lines[1].endswith("(NaN is not a number); 99 more ignored since the last such line")
    agent.on_live_factor(b'{"kg_per_kwh": 0.42, "ts": %d}' % T0)  # good values still count
    assert _factor_at(agent, T0 + 60_000) == (0.42, "live")
