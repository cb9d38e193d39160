"""The shipped broker config bounds the size of one message, against a real mosquitto.

Same broker as test_mosquitto_security.py (deploy/mosquitto/ as shipped, TLS, client
certificates). A message over the bridge's payload limit is refused at the
publisher and never reaches the bridge; a packet announcing more than
``max_packet_size`` ends the connection before the broker buffers it.

The publisher here is a few lines of raw MQTT 5, not paho: mosquitto 2.0.11 answers
an oversized QoS 1 message with reason 0x95 ("packet too large"), which MQTT 5 does not
list for a PUBACK; paho takes it for a malformed packet and hangs up, which would hide
what the broker said.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from pathlib import Path

import pytest

from agent.config.bridge import BridgeSettings
from tests.support.mqtt import LOOPBACK, have_mosquitto, wait_until
from tests.support.shipped_broker import (
    DEPLOY,
    SHARED,
    Peer,
    Pki,
    ShippedBroker,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]

TOPIC = "energy/v1/plant-a/gw-01/m1/measurements"


def shipped(option: str) -> int:
    conf = (DEPLOY / "mosquitto.conf").read_text()
    (value,) = re.findall(rf"^{option}\s+(\d+)\s*$", conf, re.MULTILINE)
    return int(value)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        n, digit = divmod(n, 128)
        out += bytes([digit | (0x80 if n else 0)])
        if not n:
            return out


class RawClient:
    """MQTT 5 over TLS with a client certificate: CONNECT, QoS 1 PUBLISH, read PUBACK."""

    def __init__(self, port: int, ca: Path, cert: tuple[Path, Path]) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        raw = socket.create_connection((LOOPBACK, port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def _packet(self) -> tuple[int, bytes]:
        kind = self._read(1)[0]
        length, shift = 0, 0
        while True:
            digit = self._read(1)[0]
            length |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                return kind, self._read(length)

    def connect(self, client_id: str) -> int:
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x05\x02\x00\x1e\x00" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        kind, connack = self._packet()
        assert kind == 0x20, kind
        return connack[1]

    def publish_header(self, topic: str, payload_len: int, mid: int) -> bytes:
        t = topic.encode()
        head = len(t).to_bytes(2, "big") + t + mid.to_bytes(2, "big") + b"\x00"
        return b"\x32" + _varint(len(head) + payload_len) + head

    def publish(self, topic: str, payload: bytes, mid: int) -> int:
        """The PUBACK's reason code (0 when the broker took the message)."""
        self.sock.sendall(self.publish_header(topic, len(payload), mid) + payload)
        kind, puback = self._packet()
        assert kind == 0x40 and int.from_bytes(puback[:2], "big") == mid, (kind, puback)
        return puback[2] if len(puback) > 2 else 0

    def close(self) -> None:
        self.sock.close()


def peak_rss_mb(broker: ShippedBroker) -> float:
    assert broker._proc is not None
    status = Path(f"/proc/{broker._proc.pid}/status").read_text()
    return int(re.findall(r"^VmHWM:\s+(\d+)", status, re.MULTILINE)[0]) / 1024


async def test_a_message_over_the_bridges_limit_is_refused_at_the_publisher(
    broker: ShippedBroker, pki: Pki, peers: dict[str, Peer]
) -> None:
    limit = BridgeSettings.model_fields["max_payload_bytes"].default
    assert shipped("message_size_limit") == limit
    bridge = peers["bridge"]
    await bridge.subscribe(SHARED)
    gw = await asyncio.to_thread(RawClient, broker.port, pki.ca, pki.cert("plant-a.gw-01"))
    try:
        assert await asyncio.to_thread(gw.connect, "raw-gw-01") == 0
        assert await asyncio.to_thread(gw.publish, TOPIC, b"a" * limit, 1) == 0
        refused = await asyncio.to_thread(gw.publish, TOPIC, b"b" * (limit + 1), 2)
        assert refused >= 0x80, refused  # 0x95 from mosquitto 2.0.11
        # The publisher stays connected, and what follows arrives as usual.
        assert await asyncio.to_thread(gw.publish, TOPIC, b"c", 3) == 0
    finally:
        gw.close()
    await wait_until(lambda: len(bridge.received()) >= 2, 10, "the two messages")
    await asyncio.sleep(0.5)  # anything else would have come by now, in order
    assert [len(p) for _, p in bridge.received()] == [limit, 1]


async def test_a_giant_packet_ends_the_connection_before_the_broker_buffers_it(
    broker: ShippedBroker, pki: Pki, peers: dict[str, Peer]
) -> None:
    """The issue's 200 MB message: announced, then streamed. The broker hangs up on the
    announced length; its memory does not grow and the bridge sees nothing."""
    assert shipped("max_packet_size") >= shipped("message_size_limit") + 65_535
    bridge = peers["bridge"]
    await bridge.subscribe(SHARED)
    before = peak_rss_mb(broker)
    gw = await asyncio.to_thread(RawClient, broker.port, pki.ca, pki.cert("plant-a.gw-01"))
    size = 200_000_000

    def stream() -> int:
        """Bytes of the payload sent before the broker hung up."""
        gw.sock.sendall(gw.publish_header(TOPIC, size, 1))
        chunk, sent = b"x" * 65536, 0
        try:
            while sent < size:
                part = chunk[: size - sent]
                gw.sock.sendall(part)
                sent += len(part)
        except OSError:
            return sent
        return sent

    try:
        assert await asyncio.to_thread(gw.connect, "raw-gw-01") == 0
        sent = await asyncio.to_thread(stream)
    finally:
        gw.close()
    assert sent < size, "the broker read all 200 MB"
    await wait_until(lambda: "oversize packet" in broker.logs(), 10, "the broker's reason")
    assert peak_rss_mb(broker) - before < 20, (before, peak_rss_mb(broker))
    assert bridge.received() == []
