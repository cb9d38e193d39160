"""A real :class:`Agent`, not started (no buses, no broker), fed polls through its own
``on_result``: the state, status and metrics it shows are the ones a running gateway
shows, without Modbus or MQTT."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

from agent.config import parse_config
from agent.core.engine import load_kernel
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from agent.runtime.scheduler import DevicePoll
from drivers.errors import ModbusTimeout
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

load_kernel()  # numba's default cache, before a config's state_dir could redirect it
LIBRARY = ProfileLibrary()
MIN = 60_000
T0 = 1_700_000_000_000 // MIN * MIN  # a whole minute

CONFIG = """
site: {id: plant-t, timezone: UTC, name: "Test plant"}
gateway: {id: gw-t}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices:
  - {id: main, bus: bus-1, unit: 1, profile: eastron-sdm630}
  - {id: sub, bus: bus-1, unit: 2, profile: eastron-sdm630, parent: main}
  - {id: spare, bus: bus-1, unit: 3, profile: eastron-sdm630}
  - id: parts
    bus: bus-1
    unit: 9
    kind: production
    registers: [{quantity: output_units, table: holding, address: 0, type: uint32}]
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
http: {listen: "127.0.0.1:0"}
"""


def poll(device: str) -> DevicePoll:
    return cast(DevicePoll, SimpleNamespace(device_id=device))


def make_agent(tmp_path: Path, minutes: int = 20, extra: str = "") -> Agent:
    """An agent fed ``minutes`` of 10-second polls: main 120 kW, sub 40 kW, 6 parts/min.
    ``extra``: more sections of the config (``alarms:``)."""
    text = CONFIG.replace("STATE", str(tmp_path)) + extra
    config = parse_config(text, "t.yaml", profiles=LIBRARY)
    agent = Agent(config, LIBRARY, outbox=MemoryOutbox(10_000_000))
    for k in range(minutes * 6 + 1):
        ts = T0 + k * 10_000
        h = k * 10 / 3600
        agent.on_result(
            poll("main"),
            ts,
            {Quantity.ENERGY_IMPORT_KWH: 1000 + 120 * h, Quantity.ACTIVE_POWER_KW: 120.0},
            None,
            0.02,
        )
        agent.on_result(
            poll("sub"),
            ts,
            {Quantity.ENERGY_IMPORT_KWH: 500 + 40 * h, Quantity.ACTIVE_POWER_KW: 40.0},
            None,
            0.03,
        )
        agent.on_result(poll("parts"), ts, {Quantity.OUTPUT_UNITS: float(k)}, None, 0.01)
    agent.on_result(poll("spare"), T0, None, ModbusTimeout("unit 3: no answer in 0.5 s"), 0.5)
    return agent
