"""`replay --publish` into real mosquitto, the real bridge and victoria-metrics.

A month of three meters (a reading a minute, 15-minute intervals) is published
through the backfill's outbox; what victoria-metrics holds afterwards must be
exactly the points of the records `replay` prints for the same files (computed
independently by ``expected_points``), each once. Then the same with ``kill -9``
in the middle of the backfill and the same command run again: still every point
once, and a recording subscriber never sees one record with two contents.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

from agent.contract import Message
from tests.support.bridge import (
    LOOPBACK,
    Stack,
    assert_same_points,
    expected_points,
    have_victoria_metrics,
    wait_until,
)
from tests.support.cli import Cli
from tests.support.mqtt import Subscriber

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_victoria_metrics(), reason="apt-get install victoria-metrics"),
]

DAY_MS = 86_400_000
METERS = {"press-1": 40.0, "press-2": 25.0, "boiler": 12.0}  # kW


@pytest.fixture
async def stack(tmp_path: Path, ports: Callable[[], int], cli: Cli) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, ports, cli.command) as s:
        yield s


def _month(tmp: Path) -> Path:
    """30 days ending an hour ago, a reading a minute per meter, in time order."""
    end = (time.time_ns() // 1_000_000 - 3_600_000) // 60_000 * 60_000
    start = end - 30 * DAY_MS
    path = tmp / "month.csv"
    with path.open("w") as f:
        f.write("ts,device,quantity,value\n")
        for k in range((end - start) // 60_000 + 1):
            t = start + k * 60_000
            for dev, kw in METERS.items():
                f.write(f"{t},{dev},energy_import_kwh,{1000 + kw * k / 60:.6f}\n")
    return path


def _config(tmp: Path, mqtt_port: int) -> Path:
    doc = {
        "site": {"id": "plant-b", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw-01"},
        "carbon": {"electricity": {"kg_per_kwh": 0.5703}},
        "buses": [{"id": "bus-1", "tcp": {"host": LOOPBACK}}],
        "devices": [
            {"id": d, "bus": "bus-1", "unit": i + 1, "interval_s": 60, "profile": "eastron-sdm630"}
            for i, d in enumerate(METERS)
        ],
        "mqtt": {"host": LOOPBACK, "port": mqtt_port},
        "publish": {"energy_interval_s": 900},
        "state_dir": str(tmp / "state"),
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _reference(cli: Cli, csv: Path, config: Path) -> list[Message]:
    result = cli.run(
        "replay", str(csv), "-c", str(config), "--topics", "energy,intensity", timeout=120
    )
    assert result.returncode == 0, str(result)
    return [Message.from_json_line(json.loads(line)) for line in result.stdout.splitlines()]


def _allow_history(config: Path) -> None:
    doc = yaml.safe_load(config.read_text())
    doc["bridge"]["max_past_s"] = 40 * 86400  # history: the default refuses 31 days and older
    config.write_text(yaml.safe_dump(doc))


async def _bridge(stack: Stack) -> None:
    bridge = stack.bridge(batch_size=2000, flush_interval_ms=200)
    _allow_history(Path(bridge.command[-1]))
    bridge.start()
    await bridge.wait_ready()


def _same_content(sub: Subscriber, n: int) -> None:
    """Every record arrived, and none twice with different bytes."""
    seen: dict[tuple[str, int], bytes] = {}
    for m in sub.received():
        key = (m.topic, json.loads(m.payload)["ts"])
        assert seen.setdefault(key, m.payload) == m.payload, f"{key} sent with two contents"
    assert len(seen) == n


async def _points_equal(stack: Stack, want: set, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        got = await stack.vm.points()
        if len(got) >= len(want) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert_same_points(got, want)


async def test_a_month_of_three_meters_lands_exactly_once(
    stack: Stack, tmp_path: Path, cli: Cli
) -> None:
    csv, config = _month(tmp_path), _config(tmp_path, stack.mqtt_port)
    reference = _reference(cli, csv, config)
    assert len(reference) == 4 * 30 * 96  # three meters and the site, 96 intervals a day
    await _bridge(stack)
    sub = await Subscriber(stack.mqtt_port, "backfill-watch").start()
    try:
        args = ("replay", str(csv), "-c", str(config), "--topics", "energy,intensity")
        result = await cli.run_async(*args, "--publish", time_limit=300)
        assert result.returncode == 0, str(result)
        await _points_equal(stack, expected_points(reference))
        await wait_until(lambda: len(sub.received()) >= len(reference), 30, "all records")
        _same_content(sub, len(reference))
        # no gateway status (a backfill is not the gateway going online or offline)
        assert not [m for m in sub.received() if m.topic.endswith("/status")]
        # the same command again: nothing more to send, said plainly
        again = await cli.run_async(*args, "--publish", time_limit=120)
        assert again.returncode == 2
        assert "published completely already" in again.stderr
    finally:
        await sub.stop()


async def test_kill_9_mid_backfill_and_again_lands_exactly_once(
    stack: Stack, tmp_path: Path, cli: Cli
) -> None:
    csv, config = _month(tmp_path), _config(tmp_path, stack.mqtt_port)
    reference = _reference(cli, csv, config)
    await _bridge(stack)
    sub = await Subscriber(stack.mqtt_port, "backfill-watch").start()
    args = [*cli.command, "replay", str(csv), "-c", str(config), "--topics", "energy,intensity"]
    # A short queue and a slow rate: the kill finds the backfill still computing (the
    # outbox holds only part of it) with messages in flight.
    slow = [*args, "--publish", "--rate", "1500", "--queue", "1000"]
    try:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started here, killed below
            slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ
        )
        try:
            await wait_until(lambda: len(sub.received()) >= len(reference) // 3, 120, "a third")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        sent_before = len(sub.received())
        assert sent_before < len(reference)
        result = await cli.run_async(*args[len(cli.command) :], "--publish", time_limit=300)
        assert result.returncode == 0, str(result)
        await _points_equal(stack, expected_points(reference))
        await wait_until(lambda: len(sub.received()) >= len(reference), 30, "all records")
        _same_content(sub, len(reference))
        # resumed, not restarted: at most the queue and the window in flight came twice
        assert len(sub.received()) < len(reference) + 1000 + 400
    finally:
        await sub.stop()


def _corrections(tmp: Path) -> Path:
    """Three hours of press-1 ending an hour ago, a reading a minute at 40 kW, with a
    garbage 0, a value 10^6 kWh too high and a meter replaced (it reads 0, 0.67, ...)."""
    end = (time.time_ns() // 1_000_000 - 3_600_000) // 60_000 * 60_000
    start = end - 3 * 3_600_000
    path = tmp / "corrections.csv"
    with path.open("w") as f:
        f.write("ts,device,quantity,value\n")
        for k in range((end - start) // 60_000 + 1):
            value = 1000 + 40 * k / 60 if k < 120 else 40 * (k - 120) / 60
            value = {30: 0.0, 60: value + 1e6}.get(k, value)
            f.write(f"{start + k * 60_000},press-1,energy_import_kwh,{value:.6f}\n")
    return path


async def test_events_land_in_victoria_metrics(stack: Stack, tmp_path: Path, cli: Cli) -> None:
    """`events` through the backfill's outbox, mosquitto and the bridge: each correction
    one point of measurement `events` (tags event, quantity; field value), as printed."""
    csv, config = _corrections(tmp_path), _config(tmp_path, stack.mqtt_port)
    args = ("replay", str(csv), "-c", str(config), "--topics", "energy,events")
    result = cli.run(*args, timeout=120)
    assert result.returncode == 0, str(result)
    reference = [Message.from_json_line(json.loads(line)) for line in result.stdout.splitlines()]
    events = [
        (m.payload["event"], m.payload["value"]) for m in reference if m.kind.value == "events"
    ]
    # the 0 and the 10^6 rejected; the replacement: three rejected readings, then a reset
    # at the first of them (0 kWh)
    assert [e for e, _ in events] == ["glitch", "glitch", "glitch", "glitch", "glitch", "reset"]
    assert events[-1] == ("reset", 0.0) and events[1][1] > 1e6, events
    await _bridge(stack)
    published = await cli.run_async(*args, "--publish", time_limit=120)
    assert published.returncode == 0, str(published)
    want = expected_points(reference)
    assert {p[0] for p in want} >= {"events_value", "energy_energy_kwh"}
    await _points_equal(stack, want)
