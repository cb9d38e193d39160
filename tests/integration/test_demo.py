"""`energy-agent demo`: one command, nothing to configure, everything it starts is stopped."""

from __future__ import annotations

import socket
import subprocess

import pytest

from agent.demo.broker import find_mosquitto
from tests.support.cli import Cli

pytestmark = pytest.mark.integration


def _running(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def test_demo_polls_every_meter_and_publishes(cli: Cli) -> None:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; scripts/test installs it")
    result = cli.run("demo", "--duration", "8", timeout=90)
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "MQTT connected" in out
    for device in (
        "incomer",
        "press-1",
        "welding",
        "compressor",
        "lighting",
        "chiller",
        "boiler-gas",
        "line-a-count",
    ):
        line = next(x for x in out.splitlines() if f" {device} " in x)
        assert " OK " in line, line
    published = int(out.split("published: ")[-1].split()[0])
    assert published > 50  # twelve meters for eight seconds, plus their statuses
    assert "socat pty pair" in out
    # it stopped what it started: its pty pair's socat and its broker
    pty_dir = out.split("socat pty pair: ")[1].split()[0].rsplit("/", 1)[0]
    assert _running(pty_dir) == []
    port = int(out.split("mqtt://127.0.0.1:")[1].split()[0])
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("127.0.0.1", port))
