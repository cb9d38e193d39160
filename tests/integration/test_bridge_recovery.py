"""Nothing lost, nothing doubled: a database outage, a `kill -9`, and three bridges sharing.

Idempotence is what makes at-least-once exact: a point written twice (same series
and time) is stored once, in InfluxDB and in victoria-metrics started with
``-dedup.minScrapeInterval=1ms``. So "exactly once" below means every record's
points are there, and no series holds two points at one time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.bridge import (
    Stack,
    assert_same_points,
    expected_points,
    have_victoria_metrics,
    many_measurements,
    wait_until,
    wire,
)
from tests.support.cli import Cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_victoria_metrics(), reason="apt-get install victoria-metrics"),
]

#: The issue asks for the database to be down this long.
OUTAGE_S = 30.0


@pytest.fixture
async def stack(tmp_path: Path, ports: Callable[[], int], cli: Cli) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, ports, cli.command) as s:
        yield s


async def test_database_outage_and_kill_9_mid_batch_lose_and_double_nothing(stack: Stack) -> None:
    base = time.time_ns() // 1_000_000 - 600_000
    first, during, after = (
        many_measurements(base, 600),
        many_measurements(base, 1500, start=600),
        many_measurements(base, 1500, start=2100),
    )
    bridge = stack.bridge(batch_size=200, flush_interval_ms=500, retry_max_s=2.0)
    bridge.start()
    await bridge.wait_ready()
    pub = stack.publisher()

    # 1. Normal operation.
    await pub.publish_all(wire(first))
    await bridge.wait_metric("energy_bridge_messages_written_total", len(first))

    # 2. The database goes away for OUTAGE_S; records keep coming. Nothing may be
    #    acknowledged while it is down: the broker must keep them.
    await stack.vm.stop()
    down_at = time.monotonic()
    acks_before = await bridge.metric("energy_bridge_acks_total")
    await pub.publish_all(wire(during))
    await bridge.wait_metric("energy_bridge_write_retries_total", 3, limit_s=OUTAGE_S)
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    assert await bridge.metric("energy_bridge_acks_total") == acks_before
    assert await bridge.metric("energy_bridge_pending_messages") > 0
    assert bridge.alive()
    await stack.vm.start()

    # 3. While the backlog drains and new records arrive, kill -9 the bridge with a
    #    batch in hand (received, not yet written and acknowledged).
    publishing = asyncio.create_task(pub.publish_all(wire(after), rate=400))
    await bridge.wait_metric("energy_bridge_messages_written_total", len(first) + 200)
    await wait_until(
        lambda: bridge.metrics().get("energy_bridge_pending_messages", 0) > 0,
        20,
        "a batch in flight",
        step=0.01,
    )
    bridge.kill9()

    # 4. Same client id: the broker resends everything unacknowledged.
    restarted = stack.bridge(client_id="bridge-a", batch_size=200, flush_interval_ms=500)
    restarted.start()
    await restarted.wait_ready()
    await publishing
    want = expected_points([*first, *during, *after])

    async def complete() -> bool:
        return len({p[:3] for p in await stack.vm.points()}) >= len(want)

    deadline = time.monotonic() + 60
    while not await complete():
        assert time.monotonic() < deadline, "not every record arrived within 60 s"
        await asyncio.sleep(0.5)
    assert_same_points(await stack.vm.points(), want)
    assert await restarted.metric("energy_bridge_messages_received_total") > 0
    assert restarted.stop() == 0, restarted.output()


async def test_three_bridges_in_one_group_split_the_load_and_write_each_record_once(
    stack: Stack,
) -> None:
    bridges = [stack.bridge(client_id=f"bridge-{i}", batch_size=100) for i in range(3)]
    for b in bridges:
        b.start()
    for b in bridges:
        await b.wait_ready()
    records = many_measurements(time.time_ns() // 1_000_000 - 60_000, 3000)
    await stack.publisher().publish_all(wire(records))

    async def written() -> list[float]:
        return [await b.metric("energy_bridge_messages_written_total") for b in bridges]

    deadline = time.monotonic() + 30
    while sum(await written()) < len(records):
        assert time.monotonic() < deadline, f"written {await written()} of {len(records)}"
        await asyncio.sleep(0.2)
    shares = await written()
    # Once in total: no record was handed to two bridges (nothing doubled at the source)...
    assert sum(shares) == len(records), shares
    assert sum([await b.metric("energy_bridge_acks_total") for b in bridges]) == len(records)
    # ...and the work was shared.
    assert min(shares) >= len(records) * 0.15, shares
    assert_same_points(await stack.vm.points(), expected_points(records))
    for b in bridges:
        assert b.stop() == 0, b.output()
