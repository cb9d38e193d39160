"""`check --online` tries what a config names: real simulated meters, a real mosquitto,
real files. A bad bus, a missing file and an unreachable broker are each named; a
config whose every part answers passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli import free_port
from tests.support.mqtt import Broker, have_mosquitto, make_tls

pytestmark = pytest.mark.integration

CONFIG = """
site: {{id: plant-c, timezone: Asia/Shanghai}}
gateway: {{id: gw-c}}
buses:
  - {{id: line-ok, tcp: {{host: 127.0.0.1, port: {sim}}}, timeout_s: 0.5}}
  - {{id: line-bad, tcp: {{host: 127.0.0.1, port: {dead}}}, timeout_s: 0.5}}
devices:
  - {{id: incomer, bus: line-ok, unit: 1, profile: eastron-sdm630}}
  - {{id: press, bus: line-bad, unit: 2, profile: eastron-sdm630}}
mqtt: {{host: 127.0.0.1, port: {broker}}}
state_dir: {state}
http: {{listen: "127.0.0.1:18099"{password}}}
"""


def _write(tmp_path: Path, *, sim: int, dead: int, broker: int, password: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    text = CONFIG.format(sim=sim, dead=dead, broker=broker, state=tmp_path / "state",
                         password=password)  # fmt: skip
    path.write_text(text, encoding="utf-8")
    return path


def _rows(stdout: str) -> dict[str, str]:
    """The table's first line of each row: target -> result."""
    return {target: result for target, (result, _) in _table(stdout).items()}


def _table(stdout: str) -> dict[str, tuple[str, str]]:
    """target -> (result, detail), the detail's wrapped lines joined."""
    rows: dict[str, tuple[str, str]] = {}
    last = ""
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) != 4:
            continue
        if cells[0] and cells[2] in ("ok", "FAIL", "warn"):
            last = cells[1]
            rows[last] = (cells[2], cells[3])
        elif not cells[0] and last:
            rows[last] = (rows[last][0], f"{rows[last][1]} {cells[3]}")
    return rows


def test_a_bad_bus_a_missing_file_and_an_unreachable_broker_are_all_named(
    cli, ports, tmp_path: Path
) -> None:
    sim, dead, broker = ports(), ports(), ports()
    missing = tmp_path / "page-password"  # never created
    config = _write(tmp_path, sim=sim, dead=dead, broker=broker,
                    password=f", password_file: {missing}")  # fmt: skip
    with cli.simulate("--tcp", f"127.0.0.1:{sim}", "--profile", "eastron-sdm630", "--freeze"):
        result = cli.run("check", "-c", str(config), "--online", timeout=60)
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stderr
    rows = _rows(result.stdout)
    assert rows["http.password_file"] == "FAIL", rows
    assert rows[f"mqtt://127.0.0.1:{broker}"] == "FAIL", rows
    assert rows[f"line-bad: tcp://127.0.0.1:{dead}"] == "FAIL", rows
    assert rows[f"line-ok: tcp://127.0.0.1:{sim}"] == "ok", rows
    assert rows["incomer (unit 1 on line-ok)"] == "ok", rows
    assert rows[str(tmp_path / "state")] == "warn", rows  # run creates it
    # the summary names all of them, the hints say what to check
    summary = result.stderr.splitlines()[-1]
    assert summary.startswith(f"{config}: 4 checks failed: "), summary
    for name in ("http.password_file", f"mqtt://127.0.0.1:{broker}", "line-bad", "press"):
        assert name in summary, summary
    assert "firewall" in result.stdout and str(missing) in result.stdout


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")
async def test_a_config_whose_every_part_answers_passes(cli, tmp_path: Path) -> None:
    sim, broker_port = free_port(), free_port()
    broker = Broker(tmp_path / "broker", broker_port)
    await broker.start()
    try:
        config = tmp_path / "agent.yaml"
        config.write_text(
            _write(tmp_path, sim=sim, dead=sim, broker=broker_port).read_text()
            .replace("line-bad", "line-two").replace("unit: 2", "unit: 1")
        )  # fmt: skip
        (tmp_path / "state").mkdir()
        with cli.simulate("--tcp", f"127.0.0.1:{sim}", "--profile", "eastron-sdm630"):
            result = await cli.run_async("check", "-c", str(config), "--online", time_limit=60)
    finally:
        await broker.stop()
    assert result.returncode == 0, str(result)
    rows = _rows(result.stdout)
    assert set(rows.values()) == {"ok"}, rows
    assert len(rows) == 6, rows  # state, broker, two buses, two devices
    # the check used an id of its own: a running agent is not knocked off the broker
    assert "as energy-agent-plant-c-gw-c-check" in result.stdout


def test_plain_check_warns_of_a_missing_serial_port_and_state_directory(
    cli, tmp_path: Path
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: {id: plant-w}\n"
        "gateway: {id: gw-w}\n"
        "buses: [{id: rs485, rtu: {port: /dev/ttyUSB97}}]\n"
        "devices: [{id: oven, bus: rs485, unit: 3, profile: eastron-sdm120}]\n"
        "mqtt: {host: 127.0.0.1}\n"
        "state_dir: /proc/nowhere/state\n",
        encoding="utf-8",
    )
    result = cli.run("check", "-c", str(config))
    assert result.returncode == 0, str(result)  # warnings: the config may be for another machine
    assert "warning: bus rs485: /dev/ttyUSB97 does not exist" in result.stderr, str(result)
    assert "warning: state_dir /proc/nowhere/state: does not exist and" in result.stderr
    quiet = cli.run("check", "-c", str(config), "--no-files")
    assert quiet.returncode == 0 and "ttyUSB97" not in quiet.stderr, str(quiet)


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")
async def test_the_broker_is_tried_with_the_configs_tls(cli, tmp_path: Path) -> None:
    """The right CA: connected, TLS verified. Another CA: the certificate is named."""
    tls = make_tls(tmp_path / "pki")
    other = make_tls(tmp_path / "other-pki")
    port = free_port()
    broker = Broker(tmp_path / "broker", port, tls=tls)
    await broker.start()
    results = {}
    try:
        for name, ca in (("right", tls.ca), ("wrong", other.ca)):
            config = tmp_path / f"{name}.yaml"
            config.write_text(
                "site: {id: plant-t}\n"
                "gateway: {id: gw-t}\n"
                "buses: [{id: b, tcp: {host: 127.0.0.1, port: 1}}]\n"
                "devices: [{id: m, bus: b, unit: 1, profile: eastron-sdm630}]\n"
                f"mqtt: {{host: 127.0.0.1, port: {port}, tls: {{ca: {ca}}}}}\n"
                f"state_dir: {tmp_path / 'state'}\n",
                encoding="utf-8",
            )
            results[name] = await cli.run_async("check", "-c", str(config), "--online")
    finally:
        await broker.stop()
    right, wrong = (_rows(results[k].stdout) for k in ("right", "wrong"))
    assert right[f"mqtts://127.0.0.1:{port}"] == "ok", results["right"]
    assert "TLS verified" in results["right"].stdout
    assert wrong[f"mqtts://127.0.0.1:{port}"] == "FAIL", results["wrong"]
    detail = _table(results["wrong"].stdout)[f"mqtts://127.0.0.1:{port}"][1]
    assert detail.startswith("TLS handshake failed: "), detail
    assert "mqtt.tls.ca" in detail and "firewall" not in detail, detail
