"""`run` says what it is about to do before the first poll: buses, devices, broker, and
when the first record closes."""

from __future__ import annotations

from pathlib import Path

from agent.cli.serving import start_lines
from agent.config import parse_config
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from drivers.profile import ProfileLibrary

LIBRARY = ProfileLibrary()

CONFIG = """
site: {id: plant-s, timezone: Asia/Shanghai}
gateway: {id: gw-s}
buses:
  - {id: line-a, tcp: {host: 10.0.0.5, port: 502}}
  - {id: rs485, rtu: {port: /dev/ttyUSB0, baudrate: 19200, parity: E}}
devices:
  - {id: incomer, bus: line-a, unit: 1, profile: eastron-sdm630, interval_s: 5}
  - {id: press, bus: rs485, unit: 7, profile: abb-b23}
mqtt: {host: broker.plant, port: 8883, tls: {}}
publish: {energy_interval_s: 300}
state_dir: STATE
http: {listen: "127.0.0.1:8081"}
"""


def test_start_lines_name_everything_and_the_first_close(tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    agent = Agent(config, LIBRARY, outbox=MemoryOutbox(1_000_000))
    # 1,700,000,030,000 ms is 2023-11-14 22:13:50 UTC: minute slot 28,333,333, 3 slots into
    # the 5-slot interval that began at 22:10; it ends at slot 28,333,335 = 22:15:00 UTC,
    # 06:15:00 in Shanghai (UTC+8), 70 s from now.
    lines = start_lines(agent, 1_700_000_030_000)
    assert lines[0] == (
        "bus line-a: tcp://10.0.0.5:502: incomer (unit 1, eastron-sdm630, every 5 s)"
    )
    assert lines[1] == "bus rs485: /dev/ttyUSB0 19200 8E1: press (unit 7, abb-b23, every 1 s)"
    assert lines[2] == (
        "broker broker.plant:8883 (TLS) as client id energy-agent-plant-s-gw-s, "
        "topics under energy/v1/plant-s/gw-s/"
    )
    assert lines[3] == f"live page on http://127.0.0.1:8081/; state in {tmp_path}"
    assert lines[4].startswith(
        "first 300 s energy records close at 06:15:00 CST (site time, in 70 s)"
    )
    assert "120 s longer for a late meter" in lines[4]
