"""A flapping or hostile meter writes one log line per cause a minute, not one per poll."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from agent.config import parse_config
from agent.core.engine import load_kernel
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from agent.runtime.scheduler import DevicePoll
from agent.runtime.throttle import LogThrottle, repeats
from drivers.errors import MalformedResponse, ModbusTimeout
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

load_kernel()
LIBRARY = ProfileLibrary()


def test_one_line_per_key_and_period_then_the_count_left_out() -> None:
    now = [0.0]
    gate = LogThrottle(60.0, clock=lambda: now[0])
    assert gate.due("a") == 0
    for t in (1.0, 30.0, 59.999):  # strictly inside the minute: left out
        now[0] = t
        assert gate.due("a") is None
    assert gate.due("b") == 0  # another cause is its own line
    now[0] = 60.0  # a minute after the last line (inclusive): due, three left out
    assert gate.due("a") == 3
    now[0] = 61.0
    assert gate.due("a") is None
    now[0] = 500.0
    assert gate.due("a") == 1
    assert repeats(0) == "" and repeats(3) == " (3 more since the last such line)"


CONFIG = """
site: {id: plant-t, timezone: UTC}
gateway: {id: gw-t}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices:
  - {id: flaky, bus: bus-1, unit: 1, profile: eastron-sdm630}
  - {id: calm, bus: bus-1, unit: 2, profile: eastron-sdm630}
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
"""


def test_a_flapping_meter_logs_each_cause_once_while_its_status_follows_every_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    outbox = MemoryOutbox(10_000_000)
    agent = Agent(config, LIBRARY, outbox=outbox)
    caplog.set_level(logging.INFO, logger="agent.runtime.agent")
    where = {"bus": "bus-1", "unit": 1, "function_code": 4, "address": 0, "count": 80}
    causes = [
        MalformedResponse("answer with function code 3 to a function code 4 request", **where),
        MalformedResponse("not a Modbus TCP answer (protocol id is not 0)", **where),
        ModbusTimeout("no response", **where),
    ]
    poll = cast(DevicePoll, SimpleNamespace(device_id="flaky"))
    ts = 1_700_000_000_000
    for k in range(90):  # bad, good, bad, good ...: 45 errors in three causes
        ts += 1000
        if k % 2:
            agent.on_result(poll, ts, {Quantity.ENERGY_IMPORT_KWH: 100.0 + k}, None, 0.01)
        else:
            agent.on_result(poll, ts, None, causes[(k // 2) % 3], 0.01)
        agent.commit()
    lines = [r.getMessage() for r in caplog.records if "flaky" in r.getMessage()]
    assert lines == [
        f"device flaky: {causes[0]}",
        "device flaky: answering again",
        f"device flaky: {causes[1]}",
        f"device flaky: {causes[2]}",
    ]
    # The status topic still says every change: 45 errors and 45 recoveries.
    statuses = [i for i in outbox.take(10_000) if i.topic.endswith("/flaky/status")]
    assert len(statuses) == 90
