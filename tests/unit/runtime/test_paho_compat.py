"""agent.paho_compat: the installed paho has the internals it uses; the fallbacks work.

When a paho upgrade breaks the first test, read agent/paho_compat.py: each private
use says what it is for and what the public fallback costs. The behaviour on a real
client against mosquitto is in tests/integration/test_paho_internals.py.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import paho_compat
from agent.bridge.consumer import Consumer
from agent.bridge.metrics import BridgeMetrics
from agent.config.models import BridgeSettings, Mqtt
from agent.mqttclient import new_client


def test_the_installed_paho_has_every_internal_the_adapter_uses() -> None:
    assert paho_compat.fallbacks() == []
    # The same, spelled out, so that a failure names what changed in paho:
    sock_recv = inspect.signature(paho.Client._sock_recv)
    assert list(sock_recv.parameters) == ["self", "bufsize"]
    queue = inspect.signature(paho.Client._packet_queue)
    assert list(queue.parameters) == ["self", "command", "packet", "mid", "qos", "info"]
    assert "_topic" in paho.MQTTMessage.__slots__


def test_a_topic_that_is_not_utf8_is_shown_by_its_bytes() -> None:
    message = paho.MQTTMessage(mid=7, topic=b"energy/v1/\xff/gw/energy")
    with pytest.raises(UnicodeDecodeError):  # what the bridge's consumer catches
        _ = message.topic
    assert paho_compat.raw_topic(message) == r"b'energy/v1/\xff/gw/energy'"


class Recorder(paho.Client):
    """A client that records what would go to the socket instead of sending it."""

    def __init__(self) -> None:
        super().__init__(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.queued: list[bytes] = []
        self.acked: list[int] = []

    def _packet_queue(self, command: int, packet: bytes | bytearray, *_: Any) -> Any:
        self.queued.append(bytes(packet))

    def ack(self, mid: int, qos: int) -> Any:
        self.acked.append(mid)


def test_a_batch_of_pubacks_is_one_packet_queue_entry() -> None:
    client = Recorder()
    paho_compat.queue_pubacks(client, [1, 300, 65535])
    # PUBACK: 0x40, remaining length 2, the packet id big-endian; three of them back to back.
    assert client.queued == [bytes.fromhex("400200014002012c4002ffff")]
    assert client.acked == []


def test_without_the_packet_queue_each_puback_goes_through_paho(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paho_compat, "PACKET_QUEUE", False)
    client = Recorder()
    paho_compat.queue_pubacks(client, [1, 300, 65535])
    assert client.acked == [1, 300, 65535]
    assert client.queued == []


def test_the_probe_refuses_another_signature() -> None:
    def renamed(self: object, size: int) -> bytes:
        return b""

    assert not paho_compat._takes(renamed, "self", "bufsize")
    assert not paho_compat._takes(None, "self", "bufsize")
    assert paho_compat._takes(paho.Client._sock_recv, "self", "bufsize")


@pytest.fixture
def report_again() -> Iterator[None]:
    paho_compat.report_fallbacks.cache_clear()
    yield
    paho_compat.report_fallbacks.cache_clear()


@pytest.mark.usefixtures("report_again")
def test_fallbacks_are_used_and_said_once_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(paho_compat, "SOCK_RECV", False)
    monkeypatch.setattr(paho_compat, "RAW_TOPIC", False)
    settings = Mqtt(host="127.0.0.1", port=1)
    with caplog.at_level(logging.WARNING, logger="agent.paho_compat"):
        clients = [new_client(settings, f"c{i}") for i in range(3)]
    assert all(type(c) is paho.Client for c in clients)  # unbuffered, paho's own
    warnings = [r.getMessage() for r in caplog.records if r.name == "agent.paho_compat"]
    assert len(warnings) == 1
    assert "Client._sock_recv" in warnings[0] and "MQTTMessage._topic" in warnings[0]
    assert "_packet_queue" not in warnings[0]
    message = paho.MQTTMessage(topic=b"\xff")
    assert paho_compat.raw_topic(message) == "<topic not UTF-8>"


@pytest.mark.usefixtures("report_again")
def test_nothing_is_said_when_paho_is_as_expected(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="agent.paho_compat"):
        client = new_client(Mqtt(host="127.0.0.1", port=1), "c")
    assert isinstance(client, paho_compat.BufferedClient)
    assert [r for r in caplog.records if r.name == "agent.paho_compat"] == []


def test_the_bridge_dead_letters_a_topic_that_is_not_utf8(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handed: list[object] = []
    metrics = BridgeMetrics()
    consumer = Consumer(Mqtt(host="127.0.0.1", port=1), BridgeSettings(), metrics, handed.append)
    message = paho.MQTTMessage(mid=7, topic=b"energy/v1/\xff/gw-01/energy")
    message.qos, message.payload = 1, b"{}"
    with caplog.at_level(logging.WARNING, logger="agent.bridge.consumer"):
        consumer._on_message(consumer._client, None, message)
    assert handed == []  # never reaches the writer
    assert metrics.rejects.labels("bad_topic")._value.get() == 1
    assert r"rejected b'energy/v1/\xff/gw-01/energy': bad_topic" in caplog.text
