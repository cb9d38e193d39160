"""The bridge's config file: same strict loading and problem reporting as the agent's."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_bridge_config, parse_bridge_config

DESIGN_EXAMPLE = """\
mqtt: {host: broker.example, port: 8883, username: bridge, password_file: /etc/ea/mqtt.pass}
influx: {url: https://influx.example:8086, org: energy, bucket: energy,
         token_file: /etc/energy-agent/influx.token}
bridge: {group: bridge, batch_size: 5000, flush_interval_ms: 1000}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_bridge_config(text, "bridge.yaml", env=env or {})
    return [str(p) for p in info.value.problems]


def test_the_design_example_loads_with_defaults() -> None:
    c = parse_bridge_config(DESIGN_EXAMPLE, env={})
    assert c.bridge.group == "bridge"
    assert c.bridge.receive_max == 10000
    assert c.bridge.dead_letter_topic == "energy/dead-letter"
    assert c.bridge.metrics_listen == "127.0.0.1:9108"
    assert c.influx.token_file == Path("/etc/energy-agent/influx.token")


def test_token_from_the_environment() -> None:
    text = 'mqtt: {host: b}\ninflux: {url: http://i:8086, org: o, bucket: b, token: "${TOK}"}\n'
    assert parse_bridge_config(text, env={"TOK": "s3cret"}).influx.token == "s3cret"
    assert any("TOK is not set" in p for p in problems(text))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b, token: t,"
            " token_file: f}\n",
            "not both",
        ),
        ("mqtt: {host: b}\ninflux: {url: ftp://i, org: o, bucket: b}\n", "influx.url"),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {dead_letter_topic: energy/v1/dead}\n",
            "under mqtt.prefix",
        ),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {dead_letter_topic: 'dead/#'}\n",
            "plain topic",
        ),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {group: 'Bad Group'}\n",
            "bridge.group",
        ),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {receive_maximum: 70000}\n",
            "bridge.receive_maximum",
        ),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {metrics_listen: '9108'}\n",
            "HOST:PORT",
        ),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {batch_sise: 10}\n",
            "batch_sise",
        ),
        ("mqtt: {host: b}\n", "influx"),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {max_future_s: 259200}\n",
            "bridge.max_future_s",
        ),
        (
            "mqtt: {host: b}\ninflux: {url: http://i, org: o, bucket: b}\n"
            "bridge: {max_payload_bytes: 268435456}\n",
            "bridge.max_payload_bytes",
        ),
    ],
)
def test_every_problem_is_reported_with_its_path(text: str, needle: str) -> None:
    found = problems(text)
    assert any(needle in p for p in found), found


def test_a_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_bridge_config(tmp_path / "nope.yaml")
    assert "cannot read" in str(info.value.problems[0])


#: drivers.quantities is the canonical vocabulary, pure data: the only value keys the
#: bridge accepts in a measurements payload (``drivers`` is its package, imported with it).
#: Every other drivers module is Modbus knowledge; the config diagnostics the bridge's
#: loader shares with the agent's are in confdoc.
BRIDGE_MAY_IMPORT_FROM_DRIVERS = {"drivers", "drivers.quantities"}


def test_the_bridge_and_its_config_load_import_no_drivers_numba_or_modbus(tmp_path: Path) -> None:
    """DESIGN: the bridge needs neither drivers nor numba, only the payload models and its
    two clients. Checked in a fresh interpreter, after the config is actually loaded."""
    import json
    import subprocess
    import sys

    config = tmp_path / "bridge.yaml"
    config.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    code = (
        "import json, sys, agent.cli.bridge, agent.bridge.app\n"
        "from agent.config.bridge import load_bridge_config\n"
        "from agent.bridge.app import Bridge\n"
        f"load_bridge_config({str(config)!r}, env={{}}, files=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout))
    assert "agent.bridge.app" in modules  # the check ran where it should
    drivers = {m for m in modules if m == "drivers" or m.startswith("drivers.")}
    assert drivers <= BRIDGE_MAY_IMPORT_FROM_DRIVERS, drivers - BRIDGE_MAY_IMPORT_FROM_DRIVERS
    # (numpy is not on the list: influxdb-client imports it for its DataFrame support.)
    heavy = ("numba", "pymodbus", "serial", "agent.core", "agent.runtime")
    loaded = sorted(m for m in modules if m.split(".")[0] in heavy or m.startswith(heavy))
    assert loaded == []


def test_check_recognises_a_bridge_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`energy-agent check -c FILE` on a bridge config: the bridge model, the same error style."""
    from agent.cli.main import main

    good = tmp_path / "bridge.yaml"
    good.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    # the example's /etc/... files are a central server's, not this machine's
    assert main(["check", "--no-files", "-c", str(good)]) == 0
    assert "OK — bridge config, group bridge" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(DESIGN_EXAMPLE.replace("batch_size: 5000", "batch_size: -1"), encoding="utf-8")
    assert main(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}:4: bridge.batch_size: Input should be greater than or equal to 1" in err
    assert "Traceback" not in err


def test_an_id_with_a_trailing_newline_is_not_an_id() -> None:
    """pydantic's default (Rust) regex ends ``$`` at the end of the text, unlike Python's
    ``re``; the config's ids depend on that, so it is pinned here."""
    from pydantic import TypeAdapter, ValidationError

    from agent.config.common import ID_RX, Id

    assert TypeAdapter(Id).validate_python("gw-01") == "gw-01"
    with pytest.raises(ValidationError):
        TypeAdapter(Id).validate_python("gw-01\n")
    assert ID_RX.match("gw-01")
    assert not ID_RX.match("gw-01\n")
