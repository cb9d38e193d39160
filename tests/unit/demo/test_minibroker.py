"""The demo's embedded MQTT 5 broker, spoken to by paho v5 clients and raw sockets.

The broker runs in the test's event loop on a free loopback port; paho clients
run their own network threads (as the agent's does), so every wait is an
``await`` that lets the broker work. Raw asyncio sockets send the bytes paho
would never send (garbage, oversized lengths, QoS 2, silence).
"""

from __future__ import annotations

import asyncio
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.demo.minibroker import EmbeddedBroker
from agent.demo.mqttcodec import MqttError, Reader, Reason, matches, valid_filter, varint
from tests.support.cli import LOOPBACK, free_port


async def until(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(free_port()) as b:
        yield b


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int


@dataclass
class Peer:
    """A paho v5 client on its own thread that records what it receives."""

    port: int
    client_id: str
    clean_start: bool = True
    expiry_s: int = 0
    receive_maximum: int | None = None
    manual_ack: bool = False
    protocol: int = paho.MQTTv5
    messages: list[Got] = field(default_factory=list)
    connack: list[tuple[str, bool, Any]] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    subacks: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,  # type: ignore[arg-type]
            manual_ack=self.manual_ack,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack.append((str(reason), bool(flags.session_present), props))
        if reason.is_failure:
            self.client.disconnect()  # no retry: the test reads the refusal

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            payload, retain, dup = bytes(msg.payload), bool(msg.retain), bool(msg.dup)
            self.messages.append(Got(msg.topic, payload, msg.qos, retain, dup, msg.mid))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        self.subacks.append([r.value for r in reasons])

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.disconnects.append(str(reason))

    def got(self, topic_prefix: str = "") -> list[Got]:
        with self.lock:
            return [m for m in self.messages if m.topic.startswith(topic_prefix)]

    async def start(self) -> Peer:
        kw: dict[str, Any] = {}
        if self.protocol == paho.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.expiry_s
            if self.receive_maximum is not None:
                props.ReceiveMaximum = self.receive_maximum
            kw = {"clean_start": self.clean_start, "properties": props}
        self.client.connect_async(LOOPBACK, self.port, keepalive=30, **kw)
        self.client.loop_start()
        await until(lambda: bool(self.connack), what=f"CONNACK for {self.client_id}")
        return self

    async def subscribe(self, topic: str, qos: int = 1, **options: Any) -> list[int]:
        n = len(self.subacks)
        self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
        await until(lambda: len(self.subacks) > n, what=f"SUBACK for {topic}")
        return self.subacks[-1]

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        await until(info.is_published, what=f"PUBACK for {topic}")

    async def stop(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


@pytest.fixture
async def peers(broker: EmbeddedBroker) -> AsyncIterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(client_id: str, **kw: Any) -> Peer:
        peer = Peer(broker.port, client_id, **kw)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.stop()


# --- raw bytes ------------------------------------------------------------------------------


def raw_connect(client_id: str, *, keepalive: int = 60, flags: int = 0x02, level: int = 5) -> bytes:
    def s(text: str) -> bytes:
        return struct.pack("!H", len(text)) + text.encode()

    props = b"\x00" if level == 5 else b""
    body = s("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive) + props + s(client_id)
    return bytes([0x10, len(body)]) + body


async def raw_client(port: int, client_id: str, **kw: Any) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(raw_connect(client_id, **kw))
    connack = await asyncio.wait_for(reader.readexactly(2), 3)
    assert connack[0] == 0x20
    await reader.readexactly(connack[1])
    return reader, writer


async def read_until_closed(reader: asyncio.StreamReader, within: float = 3.0) -> bytes:
    """Everything the broker sends until it closes the connection.

    A connection closed with unread input ends in a reset rather than EOF: that
    counts as closed too, after whatever arrived before it.
    """
    got = b""
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(4096)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


# --- the codec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_byte_integers_of_section_1_5_5(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded
    assert Reader(encoded).varint() == value


def test_a_five_byte_variable_integer_and_a_short_string_are_malformed() -> None:
    with pytest.raises(MqttError, match="longer than 4 bytes") as too_long:
        Reader(b"\xff\xff\xff\xff\x01").varint()
    with pytest.raises(MqttError, match="ends 2 bytes early") as short:
        Reader(b"\x00\x05abc").string()
    assert too_long.value.reason == short.value.reason == Reason.MALFORMED_PACKET


# --- topic filters --------------------------------------------------------------------------

MATCHES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "any/thing", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("#", "$SYS/broker", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/broker", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("energy/v1/+/+/+/energy", "energy/v1/site/gw/m1/energy", True),
    ("energy/v1/site/gw/status", "energy/v1/site/gw/status", True),
    ("energy/v1/site/gw/status", "energy/v1/site/gw/status/x", False),
    ("a/b", "A/b", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_topic_filter_matching_follows_section_4_7(
    topic_filter: str, topic: str, expected: bool
) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "valid"),
    [
        ("#", True),
        ("a/#", True),
        ("a/+/b", True),
        ("+", True),
        ("a//b", True),
        ("a/#/b", False),
        ("a#", False),
        ("a/b+", False),
        ("", False),
    ],
)
def test_topic_filter_validity(topic_filter: str, valid: bool) -> None:
    assert valid_filter(topic_filter) is valid


# --- the broker -----------------------------------------------------------------------------


async def test_connack_advertises_limits_and_assigns_a_client_id(
    peers: Callable[..., Peer],
) -> None:
    peer = await peers("").start()
    reason, present, props = peer.connack[0]
    assert (reason, present) == ("Success", False)
    assert props.MaximumQoS == 1
    assert props.TopicAliasMaximum == 0
    assert props.SharedSubscriptionAvailable == 0
    assert props.WildcardSubscriptionAvailable == 1
    assert props.AssignedClientIdentifier.startswith("energy-demo-")


async def test_mqtt_3_1_1_is_refused_as_unsupported(peers: Callable[..., Peer]) -> None:
    peer = await peers("old", protocol=paho.MQTTv311).start()
    assert peer.connack[0][0] == "Unsupported protocol version"


async def test_publish_and_subscribe_with_wildcards_and_dollar_topics(
    peers: Callable[..., Peer],
) -> None:
    sub = await peers("sub").start()
    assert await sub.subscribe("#") == [1]
    assert await sub.subscribe("$SYS/+", qos=0) == [0]
    pub = await peers("pub").start()
    await pub.publish("plant/m1/energy", b"one", qos=1)
    await pub.publish("plant/m1/status", b"two", qos=0)
    await pub.publish("$SYS/uptime", b"three", qos=1)
    await until(lambda: len(sub.got()) == 3, what="three messages")
    assert [(m.topic, m.payload, m.qos) for m in sub.got()] == [
        ("plant/m1/energy", b"one", 1),
        ("plant/m1/status", b"two", 0),
        ("$SYS/uptime", b"three", 0),  # through "$SYS/+" at QoS 0, not through "#"
    ]


async def test_suback_refuses_invalid_and_shared_filters(broker: EmbeddedBroker) -> None:
    # Raw bytes: paho will not even send an invalid filter.
    reader, writer = await raw_client(broker.port, "raw")
    filters = b"".join(
        struct.pack("!H", len(f)) + f + b"\x01" for f in (b"a/#/b", b"$share/g/a", b"ok/+")
    )
    body = b"\x00\x07\x00" + filters
    writer.write(bytes([0x82, len(body)]) + body)
    suback = await asyncio.wait_for(reader.readexactly(8), 3)
    # packet id 7, no properties; Topic Filter invalid, shared not supported, granted QoS 1
    assert suback == b"\x90\x06\x00\x07\x00\x8f\x9e\x01"
    writer.close()


async def test_retained_messages_are_stored_replaced_and_deleted(
    peers: Callable[..., Peer],
) -> None:
    pub = await peers("pub").start()
    await pub.publish("site/status", b"v1", retain=True)
    await pub.publish("site/status", b"v2", retain=True)
    await pub.publish("site/other", b"gone", retain=True)
    await pub.publish("site/other", b"", retain=True)  # an empty payload deletes it
    late = await peers("late").start()
    await late.subscribe("site/#")
    await until(lambda: bool(late.got()), what="the retained message")
    await asyncio.sleep(0.2)
    assert [(m.topic, m.payload, m.retain) for m in late.got()] == [("site/status", b"v2", True)]


async def test_subscription_options_no_local_retain_as_published_retain_handling(
    peers: Callable[..., Peer],
) -> None:
    pub = await peers("pub").start()
    await pub.publish("r/t", b"kept", retain=True)
    me = await peers("me").start()
    await me.subscribe("r/#", noLocal=True, retainAsPublished=True, retainHandling=2)
    plain = await peers("plain").start()
    await plain.subscribe("r/#", retainHandling=1)
    await plain.subscribe("r/#", retainHandling=1)  # existing subscription: no retained again
    await me.publish("r/mine", b"echo?")
    await pub.publish("r/live", b"live", retain=True)
    await until(lambda: len(plain.got()) == 3 and len(me.got()) == 1, what="deliveries")
    await asyncio.sleep(0.2)
    assert [(m.topic, m.retain) for m in me.got()] == [("r/live", True)]  # no own, no stored
    assert [(m.topic, m.retain) for m in plain.got()] == [
        ("r/t", True),  # retained on the first subscribe only
        ("r/mine", False),
        ("r/live", False),  # live, and Retain As Published not asked for
    ]


async def test_will_is_published_retained_when_the_client_is_killed(
    broker: EmbeddedBroker, peers: Callable[..., Peer]
) -> None:
    watcher = await peers("watcher").start()
    await watcher.subscribe("gw/#")
    script = f"""
import sys, time, paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="gw",
                protocol=paho.MQTTv5)
c.will_set("gw/status", b"offline", qos=1, retain=True)
c.connect("{LOOPBACK}", {broker.port}, keepalive=60)
c.loop_start()
c.publish("gw/status", b"online", qos=1, retain=True).wait_for_publish(5)
print("ready", flush=True)
time.sleep(60)
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 15) == b"ready\n"
        await until(lambda: len(watcher.got()) == 1, what="online")
    finally:
        proc.kill()  # SIGKILL: no DISCONNECT, the socket just closes
        await proc.wait()
    await until(lambda: len(watcher.got()) == 2, what="the will")
    assert [m.payload for m in watcher.got()] == [b"online", b"offline"]
    late = await peers("late").start()
    await late.subscribe("gw/status")
    await until(lambda: bool(late.got()), what="the retained will")
    assert (late.got()[0].payload, late.got()[0].retain) == (b"offline", True)


async def test_no_will_after_a_normal_disconnect(peers: Callable[..., Peer]) -> None:
    watcher = await peers("watcher").start()
    await watcher.subscribe("gw/#")
    gw = peers("gw")
    gw.client.will_set("gw/status", b"offline", qos=1, retain=True)
    await gw.start()
    await gw.publish("gw/status", b"bye")
    await gw.stop()
    await until(lambda: len(watcher.got()) == 1, what="bye")
    await asyncio.sleep(0.3)
    assert [m.payload for m in watcher.got()] == [b"bye"]


async def test_persistent_session_gets_what_was_published_while_away(
    peers: Callable[..., Peer],
) -> None:
    away = await peers("away", clean_start=False, expiry_s=3600).start()
    await away.subscribe("q/#")
    await away.stop()
    pub = await peers("pub").start()
    for i in range(50):
        await pub.publish(f"q/{i}", str(i).encode(), qos=1)
    await pub.publish("q/zero", b"qos0 is not queued", qos=0)
    back = await peers("away", clean_start=False, expiry_s=3600).start()
    assert back.connack[0][1] is True  # session present
    await until(lambda: len(back.got()) == 50, what="the 50 queued messages")
    assert [m.payload for m in back.got()] == [str(i).encode() for i in range(50)]
    fresh = await peers("away-2", clean_start=True).start()
    assert fresh.connack[0][1] is False


async def test_an_absent_session_keeps_only_the_newest_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with EmbeddedBroker(free_port(), queue_limit=10) as small:
        away = await Peer(small.port, "away", clean_start=False, expiry_s=60).start()
        await away.subscribe("q/#")
        await away.stop()
        pub = await Peer(small.port, "pub").start()
        for i in range(15):
            await pub.publish(f"q/{i}", str(i).encode())
        await pub.stop()
        back = await Peer(small.port, "away", clean_start=False, expiry_s=60).start()
        await until(lambda: len(back.got()) == 10, what="the ten newest")
        await asyncio.sleep(0.2)
        await back.stop()
    assert [m.payload for m in back.got()] == [str(i).encode() for i in range(5, 15)]
    assert "session away: queue full (10), dropped its oldest message (1 so far)" in caplog.text


async def test_unacknowledged_messages_are_resent_with_dup_and_receive_maximum_holds(
    peers: Callable[..., Peer],
) -> None:
    slow = peers("slow", clean_start=False, expiry_s=3600, receive_maximum=3, manual_ack=True)
    await slow.start()
    await slow.subscribe("q/#")
    pub = await peers("pub").start()
    for i in range(5):
        await pub.publish(f"q/{i}", str(i).encode(), qos=1)
    await until(lambda: len(slow.got()) == 3, what="three messages")
    await asyncio.sleep(0.3)
    assert len(slow.got()) == 3  # the client's Receive Maximum: no more until an ack
    await slow.stop()  # without acknowledging anything
    back = peers("slow", clean_start=False, expiry_s=3600)
    await back.start()
    await until(lambda: len(back.got()) == 5, what="all five after reconnect")
    got = back.got()
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.dup for m in got] == [True, True, True, False, False]


async def test_session_takeover_disconnects_the_old_connection(broker: EmbeddedBroker) -> None:
    old_reader, _old_writer = await raw_client(broker.port, "same")
    new_reader, new_writer = await raw_client(broker.port, "same")
    assert await read_until_closed(old_reader) == b"\xe0\x02\x8e\x00"  # 0x8E session taken over
    new_writer.write(b"\xc0\x00")  # PINGREQ: the new connection is the live one
    assert await asyncio.wait_for(new_reader.readexactly(2), 3) == b"\xd0\x00"
    new_writer.close()


async def test_keep_alive_is_enforced_and_the_will_goes_out(
    broker: EmbeddedBroker, peers: Callable[..., Peer]
) -> None:
    watcher = await peers("watcher").start()
    await watcher.subscribe("quiet/#")
    will = b"\x00" + struct.pack("!H", 10) + b"quiet/will" + struct.pack("!H", 4) + b"gone"
    connect = bytearray(raw_connect("quiet", keepalive=1, flags=0x02 | 0x04 | 0x08))
    connect += will
    connect[1] = len(connect) - 2
    reader, writer = await asyncio.open_connection(LOOPBACK, broker.port)
    writer.write(bytes(connect))
    started = time.monotonic()
    sent = await read_until_closed(reader, within=5)
    assert sent.endswith(b"\xe0\x02\x8d\x00")  # CONNACK, then DISCONNECT keep alive timeout
    assert 1.4 < time.monotonic() - started < 3.0
    await until(lambda: bool(watcher.got()), what="the will")
    assert (watcher.got()[0].payload, watcher.got()[0].qos) == (b"gone", 1)


@pytest.mark.parametrize(
    ("first", "then", "answer"),
    [
        (b"", b"\x00\x01\x02garbage", b""),  # not a CONNECT: closed without a word
        (b"", b"\x10\xff\xff\xff\x7f", b""),  # a 256 MB CONNECT announced
        (b"", b"\x10\xff\xff\xff\xff\x01", b""),  # a five-byte remaining length
        (b"c", b"\x30\xff\xff\xff\x7f", b"\xe0\x02\x95\x00"),  # packet too large
        (b"c", b"\x30\x04\x00\x05ab", b"\xe0\x02\x81\x00"),  # topic runs past the end
        (b"c", b"\x30\x05\x00\x02\xff\xfe\x00", b"\xe0\x02\x81\x00"),  # topic not UTF-8
        (b"c", b"\x34\x07\x00\x01t\x00\x01\x00x", b"\xe0\x02\x9b\x00"),  # QoS 2 refused
        (b"c", b"\x30\x06\x00\x01t\x02\x23\x01", b"\xe0\x02\x81\x00"),  # property cut short
        (b"c", b"\x30\x08\x00\x01t\x03\x23\x00\x01x", b"\xe0\x02\x94\x00"),  # topic alias
        (b"c", b"\x82\x03\x00\x01\x00", b"\xe0\x02\x82\x00"),  # SUBSCRIBE, no filter
        (b"c", b"\x20\x00", b"\xe0\x02\x82\x00"),  # a CONNACK from a client
    ],
)
async def test_malformed_input_costs_only_that_connection(
    broker: EmbeddedBroker, peers: Callable[..., Peer], first: bytes, then: bytes, answer: bytes
) -> None:
    sub = await peers("sub").start()
    await sub.subscribe("ok/#")
    if first:
        reader, writer = await raw_client(broker.port, "bad")
    else:
        reader, writer = await asyncio.open_connection(LOOPBACK, broker.port)
    writer.write(then)
    assert await read_until_closed(reader) == answer
    writer.close()
    pub = await peers("pub").start()
    await pub.publish("ok/still", b"serving")
    await until(lambda: bool(sub.got()), what="a message after the bad client")
    assert sub.got()[0].payload == b"serving"


async def test_unsubscribe_stops_delivery(peers: Callable[..., Peer]) -> None:
    sub = await peers("sub").start()
    await sub.subscribe("u/#")
    done = threading.Event()
    sub.client.on_unsubscribe = lambda *_a: done.set()
    sub.client.unsubscribe("u/#")
    await until(done.is_set, what="UNSUBACK")
    pub = await peers("pub").start()
    await pub.publish("u/x", b"nobody")
    await asyncio.sleep(0.3)
    assert sub.got() == []
