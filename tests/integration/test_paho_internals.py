"""paho's private API as agent.paho_compat uses it, on real clients against a real mosquitto.

Run after every paho upgrade: each test fails, saying which internal changed, when
paho stops doing what the adapter relies on.

* Batched PUBACKs: mosquitto accepts them (the acknowledged messages are not
  redelivered to the persistent session, the others are, and the connection
  stays up), and queueing them does not wait for paho's callback locks.
* Buffered reads: paho still reads its socket only through ``_sock_recv``, a
  piece of a packet at a time, and a burst arrives whole and in order from few
  socket reads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import paho_compat
from agent.config.common import Mqtt
from agent.mqttclient import new_client
from tests.support.cli import free_port
from tests.support.mqtt import Broker, have_mosquitto, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]

#: mosquitto's default max_inflight_messages: what it sends a client before an ack.
INFLIGHT = 20


class Session:
    """A manual-ack subscriber of ``compat/#`` whose session outlives its connection."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.client = new_client(Mqtt(host="127.0.0.1", port=port), client_id, manual_ack=True)
        self.got: list[tuple[int, bytes]] = []
        self.disconnects: list[Any] = []
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("compat/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnects.append(reason)

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        self.got.append((m.mid, bytes(m.payload)))

    async def start(self) -> Session:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        await wait_until(self.subscribed.is_set, 10, "the subscription")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(port: int) -> paho.Client:
    pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def publish(pub: paho.Client, payloads: list[bytes]) -> None:
    for info in [pub.publish("compat/x", p, qos=1) for p in payloads]:
        info.wait_for_publish(10)


@contextmanager
def paho_inside_a_callback(client: paho.Client) -> Iterator[None]:
    """Hold the locks paho's network thread holds around ``on_publish`` (see the lock note
    in agent.bridge.consumer): the bridge queues PUBACKs while that thread may wait for it."""
    with client._out_message_mutex, client._in_callback_mutex:
        yield


async def test_batched_pubacks_are_accepted_and_never_wait_for_paho(tmp_path: Path) -> None:
    assert paho_compat.PACKET_QUEUE, "paho's Client._packet_queue changed: see paho_compat"
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    pub = publisher(broker.port)
    try:
        first = await Session(broker.port, "compat-acks").start()
        payloads = [f"m{i}".encode() for i in range(INFLIGHT)]
        publish(pub, payloads)
        await wait_until(lambda: len(first.got) == INFLIGHT, 10, "every message")
        acked = [mid for mid, _ in first.got[: INFLIGHT // 2]]
        kept = {payload for _, payload in first.got[INFLIGHT // 2 :]}

        queued = threading.Thread(target=paho_compat.queue_pubacks, args=(first.client, acked))
        with paho_inside_a_callback(first.client):
            queued.start()
            queued.join(5)
            assert not queued.is_alive(), "queueing PUBACKs waited for paho's callback locks"
        await wait_until(lambda: not first.client.want_write(), 5, "the PUBACKs written")
        assert first.disconnects == []  # mosquitto took the packet: no protocol error
        first.stop()

        # The same session again: mosquitto redelivers exactly what was not acknowledged.
        again = await Session(broker.port, "compat-acks").start()
        publish(pub, [b"marker"])  # queued behind any redelivery to this session
        await wait_until(lambda: b"marker" in {p for _, p in again.got}, 10, "the marker")
        redelivered = {payload for _, payload in again.got} - {b"marker"}
        assert redelivered == kept
        again.stop()
    finally:
        pub.disconnect()
        pub.loop_stop()
        await broker.stop()


class CountingClient(paho_compat.BufferedClient):
    """Counts paho's reads (pieces of packets) and the socket reads that served them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paho_reads = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        self.paho_reads += 1
        return super()._sock_recv(bufsize)


async def test_buffered_reads_serve_paho_from_few_socket_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert paho_compat.SOCK_RECV, "paho's Client._sock_recv changed: see paho_compat"
    socket_reads = 0
    paho_sock_recv = paho.Client._sock_recv

    def counted(self: paho.Client, bufsize: int) -> bytes:
        nonlocal socket_reads
        socket_reads += isinstance(self, CountingClient)  # not the publisher's
        return paho_sock_recv(self, bufsize)

    monkeypatch.setattr(paho.Client, "_sock_recv", counted)
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    pub = publisher(broker.port)
    try:
        got: list[bytes] = []
        sub = CountingClient(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        subscribed = threading.Event()
        sub.on_connect = lambda c, *_: c.subscribe("compat/#", qos=0)
        sub.on_subscribe = lambda *_: subscribed.set()
        sub.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
        sub.connect("127.0.0.1", broker.port)
        # No network thread: the loop is driven here, so the burst waits in the socket.
        await wait_until(lambda: sub.loop(0.05) == 0 and subscribed.is_set(), 10, "SUBACK")
        before = sub.paho_reads, socket_reads

        n = 2000
        payloads = [str(i).encode() for i in range(n)]
        publish(pub, payloads)  # each acknowledged by the broker: all sent to `sub` by now

        def drained() -> bool:
            for _ in range(n):  # without the buffer paho reads one packet per loop()
                if sub.loop(0.01) != 0 or len(got) >= n:
                    break
            return len(got) >= n

        await wait_until(drained, 10, "the whole burst")
        assert got == payloads
        paho_reads, reads = sub.paho_reads - before[0], socket_reads - before[1]
        # paho asks for each packet in pieces (type byte, length, body) through _sock_recv ...
        assert paho_reads >= 3 * n, "paho no longer reads its socket through _sock_recv"
        # ... and one socket read serves many packets.
        assert 0 < reads < n / 10, f"{reads} socket reads for {n} messages: not buffered"
        sub.disconnect()
    finally:
        pub.disconnect()
        pub.loop_stop()
        await broker.stop()
