"""The outbox pump against a real mosquitto: the replay rate is the rate the broker sees."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from agent.config.common import Mqtt
from agent.runtime.mqtt import MqttLink, Pump
from agent.runtime.outbox import Item, Kind, SqliteOutbox
from tests.support.cli import LOOPBACK, free_port
from tests.support.mqtt import Broker, Subscriber, have_mosquitto, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]


@pytest.mark.parametrize("rate", [10, 25])
async def test_a_backlog_goes_out_at_the_configured_rate_even_below_the_batch_size(
    tmp_path: Path, rate: int
) -> None:
    """``buffer.replay_per_s`` below the pump's batch of 32 once published nothing at all;
    the batch now fits the rate, and the broker sees the rate."""
    n = 3 * rate  # three seconds' worth
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    sub = Subscriber(broker.port, "rate-reader", topic="rate/#")
    box = SqliteOutbox(tmp_path / "outbox.db", 100_000_000)
    box.put_many([Item(Kind.MEASUREMENT, "rate/m", b"%d" % i, created_ms=i) for i in range(n)])
    link = MqttLink(
        Mqtt(host=LOOPBACK, port=broker.port),
        client_id="rate-agent",
        will=("rate/status", b"offline"),
        birth=lambda: ("rate/status", b"online"),
    )
    pump = Pump(box, link, rate_per_s=rate)
    task: asyncio.Task[None] | None = None
    try:
        await sub.start()
        link.start()
        task = asyncio.create_task(pump.run())
        await wait_until(
            lambda: len(sub.received("m")) == n, 3 * n / rate + 10, f"{n} messages at {rate}/s"
        )
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await link.stop()
        box.close()
        await sub.stop()
        await broker.stop()
    got = sub.received("m")
    assert [int(m.payload) for m in got] == list(range(n))
    # The budget starts empty and fills at the rate (10.0/s and 25.0/s measured here).
    seconds = got[-1].at - got[0].at
    measured = (n - 1) / seconds
    assert 0.8 * rate <= measured <= 1.2 * rate, (measured, seconds)
