"""`energy-agent demo --broker embedded`: the demo publishes without mosquitto.

The demo runs as a subprocess with /usr/sbin off its PATH (a machine without
mosquitto) on a chosen port; a paho v5 subscriber, the same recorder the `run`
tests use, takes everything under the site's topics, and every message is
checked against the contract with the `run` tests' checker. The run spans a
wall-clock minute boundary so that energy and intensity records close.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import yaml

from agent.cli.demo import demo_config_text
from tests.support.cli import Cli, free_port
from tests.support.mqtt import Subscriber, next_boundary, port_open
from tests.support.run_rig import check_contract

pytestmark = pytest.mark.integration

BASE = "energy/v1/demo-plant/gw-demo"


def _path_without_sbin() -> str:
    return os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.endswith("sbin")
    )


async def test_demo_publishes_the_contract_through_the_embedded_broker(cli: Cli) -> None:
    devices = [d["id"] for d in yaml.safe_load(demo_config_text())["devices"]]
    port = free_port()
    # Long enough to start, cross the next minute boundary and publish what closes there.
    duration = next_boundary(time.time()) - time.time() + 15
    if duration < 25:
        duration += 60
    sub = Subscriber(port, "test-demo-watcher", topic=f"{BASE}/#")
    demo = asyncio.create_task(
        cli.run_async(
            "demo",
            "--broker",
            "embedded",
            "--duration",
            f"{duration:.0f}",
            time_limit=duration + 60,
            env={"DEMO_MQTT_PORT": str(port), "PATH": _path_without_sbin()},
        )
    )
    try:
        await sub.start(within=30)
        result = await demo
    finally:
        await sub.stop()
        if not demo.done():
            demo.cancel()
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr, result
    assert f"broker: embedded demo broker on mqtt://127.0.0.1:{port}" in result.stdout
    assert "MQTT connected" in result.stdout
    received = sub.received()
    kinds = {m.topic.removeprefix(BASE + "/").split("/")[-1] for m in received}
    assert {"measurements", "energy", "status", "intensity"} <= kinds, sorted(kinds)
    assert {m.topic.split("/")[-2] for m in sub.received("measurements")} == set(devices)
    check_contract(received, devices, BASE)
    gateway = [m for m in received if m.topic == f"{BASE}/status"]
    assert gateway and gateway[0].json()["state"] == "online"
    assert gateway[-1].json()["state"] == "offline"  # published at the demo's clean stop
    assert not port_open(port)  # the broker went with the demo
