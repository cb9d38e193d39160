"""The buffered paho client (agent.paho_compat) against a real mosquitto: a burst of
packets read in big chunks arrives whole, in order and at once, with nothing left
waiting in the buffer for traffic that never comes."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.common import Mqtt
from agent.mqttclient import new_client
from agent.paho_compat import BufferedClient
from tests.support.cli import free_port
from tests.support.mqtt import Broker, have_mosquitto, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]


async def test_a_burst_arrives_whole_in_order_and_without_a_stall(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    try:
        got: list[int] = []
        subscribed = threading.Event()
        sub = new_client(Mqtt(host="127.0.0.1", port=broker.port), "buffered-sub")
        assert isinstance(sub, BufferedClient)
        sub.on_connect = lambda c, *_: c.subscribe("burst/#", qos=1)
        sub.on_subscribe = lambda *_: subscribed.set()

        def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
            got.append(int(m.payload))

        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port, keepalive=60)  # no ping to wake a stall
        sub.loop_start()
        await wait_until(subscribed.is_set, 10, "the subscription")

        pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        infos = [pub.publish("burst/x", str(i).encode(), qos=1) for i in range(3000)]
        for info in infos:
            info.wait_for_publish(10)
        done_at = time.monotonic()
        # Everything, promptly: many packets share one recv(), the last ones included.
        await wait_until(lambda: len(got) >= 3000, 5, "the whole burst")
        assert time.monotonic() - done_at < 5
        assert got == list(range(3000))
        # A lone message after a quiet spell comes at once too.
        await asyncio.sleep(1.0)
        pub.publish("burst/x", b"3000", qos=1).wait_for_publish(5)
        await wait_until(lambda: len(got) == 3001, 1.0, "the lone message")
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    finally:
        await broker.stop()
