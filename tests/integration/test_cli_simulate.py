"""`simulate -c` takes an agent's config: every device on its bus, where this machine can
serve it, read back with `read` as the agent would; buses it cannot serve are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.simulator.ptypair import PtyPair

pytestmark = pytest.mark.integration

CONFIG = """
site: {{id: plant-s, timezone: Asia/Shanghai}}
gateway: {{id: gw-s}}
buses:
  - {{id: line-a, tcp: {{host: 127.0.0.1, port: {port}}}}}
  - {{id: rs485, rtu: {{port: {serial}, baudrate: 19200}}}}
  - {{id: far, tcp: {{host: 10.1.2.3}}}}
devices:
  - {{id: incomer, bus: line-a, unit: 1, profile: eastron-sdm630}}
  - {{id: press, bus: line-a, unit: 2, profile: abb-b23}}
  - {{id: oven, bus: rs485, unit: 7, profile: eastron-sdm120}}
  - {{id: elsewhere, bus: far, unit: 2, profile: eastron-sdm120}}
mqtt: {{host: 127.0.0.1}}
"""


async def test_simulate_serves_every_device_of_an_agent_config(
    cli, ports, tmp_path: Path, socat_pair: PtyPair
) -> None:
    port = ports()
    pty = socat_pair  # a virtual RS-485 cable: the agent's end a, the simulator's end b
    # a pty takes no parity: the serial bus is 19200 8N1
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.format(port=port, serial=pty.a), encoding="utf-8")
    with cli.simulate("-c", str(config), "--serial", f"rs485={pty.b}") as banner:
        assert f"simulating the devices of agent config {config}" in banner
        assert f"unit 1, 2 on tcp://127.0.0.1:{port}" in banner
        assert f"unit 7 on {pty.b} 19200 8N1" in banner
        reads = {
            "incomer": ["--tcp", f"127.0.0.1:{port}", "--unit", "1", "--profile", "eastron-sdm630"],
            "press": ["--tcp", f"127.0.0.1:{port}", "--unit", "2", "--profile", "abb-b23"],
            "oven": ["--rtu", pty.a, "--baudrate", "19200", "--unit", "7",
                     "--profile", "eastron-sdm120"],
        }  # fmt: skip
        for device, args in reads.items():
            result = await cli.run_async("read", *args, "--json")
            assert result.returncode == 0, f"{device}: {result}"
            values = json.loads(result.stdout)
            assert 200 < values["voltage_l1_v"] < 260, (device, values)
            assert values["energy_import_kwh"] > 0, (device, values)


def test_buses_it_cannot_serve_are_named(cli, ports, tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.format(port=ports(), serial="/dev/ttyUSB9"), encoding="utf-8")
    result = cli.run("simulate", "-c", str(config), "--duration", "0.5")
    assert result.returncode == 0, str(result)
    assert (
        "not simulated: bus rs485 (/dev/ttyUSB9 19200 8N1): serial; give --serial "
        "rs485=DEVICE" in result.stderr
    )
    assert "not simulated: bus far (tcp://10.1.2.3:502): not loopback" in result.stderr
    assert "unit 1, 2 on tcp://127.0.0.1:" in result.stdout


def test_an_agent_config_with_nothing_to_serve_here_exits_2(cli) -> None:
    root = Path(__file__).resolve().parents[2]
    result = cli.run("simulate", "-c", str(root / "configs" / "gateway-example.yaml"))
    assert result.returncode == 2, str(result)
    assert "no bus of this agent config can be simulated here" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_pty_refusing_parity_is_a_clear_error_not_a_traceback(cli, socat_pair: PtyPair) -> None:
    args = ["--rtu", socat_pair.b, "--profile", "eastron-sdm120", "--parity", "E"]
    result = cli.run("simulate", *args, "--duration", "1")
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.stderr
    assert "a pty takes no parity" in result.stderr
