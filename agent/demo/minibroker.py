"""A small MQTT 5.0 broker for `energy-agent demo` when mosquitto is not installed.

The demo must publish somewhere with nothing installed, and no broker on PyPI
fits: amqtt speaks only MQTT 3.1.1 and mqttools' broker only QoS 0, while the
agent uses MQTT 5 with QoS 1, a persistent session, a retained birth message and
last will, and a subscription to the live emission factor. So this module
implements what those clients need, per OASIS mqtt-v5.0-os: QoS 0 and 1 both
ways, retained messages, wills, wildcards, subscription options, persistent
sessions held in memory with QoS 1 redelivery, flow control by the client's
Receive Maximum, keep alive and session takeover.

**Not for production**: no TLS, no authentication (any user name and password
is accepted), nothing survives a restart, one asyncio loop, loopback only.
Refused rather than half done: QoS 2, shared subscriptions, subscription
identifiers, topic aliases (Topic Alias Maximum 0), enhanced authentication;
Will Delay and Message Expiry intervals are passed on but not acted on. For a
real site run mosquitto: deploy/ ships its configuration.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from agent.demo.mqttcodec import (
    MqttError,
    PacketType,
    Prop,
    Props,
    Reader,
    Reason,
    ack,
    check_topic_name,
    disconnect,
    encode_props,
    malformed,
    matches,
    packet,
    read_packet,
    string,
    valid_filter,
)

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_PACKET = 1 << 20  # the agent's messages are a few kB; a 256 MB announcement is refused
QUEUE_LIMIT = 100_000  # QoS 1 messages kept per absent session before the oldest go
WRITE_BUFFER_LIMIT = 8 << 20  # QoS 0 to a client that reads this slowly is dropped
CONNECT_TIMEOUT_S = 10.0
NEVER_EXPIRES = 0xFFFFFFFF
#: Properties of a PUBLISH that travel from publisher to subscriber unchanged.
FORWARDED = (
    Prop.PAYLOAD_FORMAT_INDICATOR,
    Prop.MESSAGE_EXPIRY_INTERVAL,
    Prop.CONTENT_TYPE,
    Prop.RESPONSE_TOPIC,
    Prop.CORRELATION_DATA,
    Prop.USER_PROPERTY,
)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: Props = field(default_factory=Props)
    sender: str = ""  # client id, for No Local


@dataclass
class Subscription:
    qos: int
    no_local: bool
    retain_as_published: bool


@dataclass
class Session:
    """What the broker keeps for a client id, connected or not (while unexpired)."""

    client_id: str
    queue_limit: int = QUEUE_LIMIT
    expiry_s: int = 0
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    inflight: OrderedDict[int, Message] = field(default_factory=OrderedDict)
    conn: Connection | None = None
    expiry_timer: asyncio.TimerHandle | None = None
    dropped: int = 0
    _ids: itertools.cycle[int] = field(
        init=False, repr=False, default_factory=lambda: itertools.cycle(range(1, 65536))
    )

    def next_id(self) -> int:
        while (pid := next(self._ids)) in self.inflight:
            pass
        return pid

    def enqueue(self, msg: Message) -> None:
        if len(self.queue) >= self.queue_limit:
            self.queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning(
                    "session %s: queue full (%d), dropped its oldest message (%d so far)",
                    self.client_id,
                    self.queue_limit,
                    self.dropped,
                )
        self.queue.append(msg)


@dataclass(eq=False)  # compared and hashed by identity: one per socket
class Connection:
    """One network connection after a valid CONNECT."""

    writer: asyncio.StreamWriter
    session: Session
    keepalive_s: int
    receive_maximum: int  # the client's: at most this many QoS 1 messages unacknowledged
    max_packet: int  # the client's Maximum Packet Size
    will: Message | None
    closed: bool = False

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def send_publish(self, msg: Message, packet_id: int | None, *, dup: bool = False) -> bool:
        """False if the message exceeds the client's Maximum Packet Size (it is discarded)."""
        body = string(msg.topic)
        if packet_id is not None:
            body += struct.pack("!H", packet_id)
        body += encode_props(msg.props) + msg.payload
        flags = (dup << 3) | (msg.qos << 1) | msg.retain
        data = packet(PacketType.PUBLISH, body, flags)
        if len(data) > self.max_packet:
            return False
        self.send(data)
        return True

    def close(self, reason: Reason | None = None) -> None:
        """DISCONNECT with ``reason`` (if any) and close; the read loop then ends."""
        if self.closed:
            return
        if reason is not None:
            self.writer.write(disconnect(reason))
        self.closed = True
        self.writer.close()


class Router:
    """Who gets a published message: the sessions, their subscriptions, the retained store.

    Kept apart from the connections so that routing (MQTT 5 sections 3.3 and
    4.7) reads on its own, and the broker class only speaks the wire.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}

    def publish(self, msg: Message) -> None:
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = msg
            else:
                self.retained.pop(msg.topic, None)
        for session in list(self.sessions.values()):
            qos, keep_retain = -1, False
            for topic_filter, sub in session.subscriptions.items():
                if sub.no_local and msg.sender == session.client_id:
                    continue
                if matches(topic_filter, msg.topic):
                    qos = max(qos, min(sub.qos, msg.qos))
                    keep_retain = keep_retain or sub.retain_as_published
            if qos >= 0:  # one copy per session, at the highest QoS of its matching filters
                self.deliver(session, msg, qos, retain=msg.retain and keep_retain)

    def deliver(self, session: Session, msg: Message, qos: int, *, retain: bool) -> None:
        out = Message(msg.topic, msg.payload, qos, retain, msg.props, msg.sender)
        conn = session.conn
        if qos == 0:
            # Not queued for an absent client; dropped, not buffered, for one that is too slow.
            if conn is not None and conn.writer.transport.get_write_buffer_size() < (
                WRITE_BUFFER_LIMIT
            ):
                conn.send_publish(out, None)
            return
        session.enqueue(out)
        self.pump(session)

    def pump(self, session: Session) -> None:
        """Send queued QoS 1 messages while the client's Receive Maximum allows."""
        conn = session.conn
        if conn is None or conn.closed:
            return
        while session.queue and len(session.inflight) < conn.receive_maximum:
            msg = session.queue.popleft()
            pid = session.next_id()
            if conn.send_publish(msg, pid):
                session.inflight[pid] = msg

    def gone(self, conn: Connection, graceful: bool) -> None:
        """The connection ended: publish the will unless it ended well, keep or end the session."""
        conn.close()
        session = conn.session
        if session.conn is not conn:
            return  # already handled (session takeover)
        session.conn = None
        if conn.will is not None and not graceful:
            self.publish(conn.will)
        conn.will = None
        if session.expiry_s == 0:
            self.sessions.pop(session.client_id, None)
        elif session.expiry_s != NEVER_EXPIRES:
            loop = asyncio.get_running_loop()
            session.expiry_timer = loop.call_later(
                session.expiry_s, self._expire, session.client_id, session
            )

    def _expire(self, client_id: str, session: Session) -> None:
        if self.sessions.get(client_id) is session and session.conn is None:
            del self.sessions[client_id]

    def release_retained(self, session: Session, topic_filter: str, granted: int) -> None:
        """The retained messages a new subscription gets, after its SUBACK (as mosquitto)."""
        for msg in list(self.retained.values()):
            if matches(topic_filter, msg.topic):
                self.deliver(session, msg, min(msg.qos, granted), retain=True)


class EmbeddedBroker:
    """``async with EmbeddedBroker(port):`` an MQTT 5 broker on 127.0.0.1:port in this loop.

    The same shape as :class:`agent.demo.broker.Mosquitto`, so the demo can run
    either. Everything lives in memory and goes when the block ends.
    """

    def __init__(
        self, port: int, *, max_packet: int = MAX_PACKET, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self.port = port
        self.max_packet = max_packet
        self.queue_limit = queue_limit
        self.router = Router()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[Connection] = set()
        self._client_ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._conns):
            conn.close(Reason.SERVER_SHUTTING_DOWN)
        if self._tasks:
            # Connections that never sent CONNECT have nothing to say goodbye to.
            _, pending = await asyncio.wait(set(self._tasks), timeout=3)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for session in self.router.sessions.values():
            if session.expiry_timer is not None:
                session.expiry_timer.cancel()
        self.router.sessions.clear()
        self.router.retained.clear()

    # --- one connection ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn: Connection | None = None
        graceful = False
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                kind, flags, body = await read_packet(reader, self.max_packet)
            if kind != PacketType.CONNECT or flags:
                raise MqttError(Reason.PROTOCOL_ERROR, "the first packet must be CONNECT")
            conn = self._connect(Reader(body), writer)
            if conn is None:
                return
            self._conns.add(conn)
            while not conn.closed:
                limit = conn.keepalive_s * 1.5 if conn.keepalive_s else None
                try:
                    async with asyncio.timeout(limit):
                        kind, flags, body = await read_packet(reader, self.max_packet)
                except TimeoutError:
                    conn.close(Reason.KEEP_ALIVE_TIMEOUT)
                    break
                graceful = self._dispatch(conn, kind, flags, Reader(body))
                await writer.drain()
        except MqttError as exc:
            log.info("mqtt client %s: %s", conn.session.client_id if conn else "?", exc)
            if conn is not None:
                conn.close(exc.reason)  # after CONNACK a DISCONNECT says why
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # no CONNECT in time, or the client went away: its will goes out below
        finally:
            writer.close()
            if conn is not None:
                self._gone(conn, graceful)
            self._tasks.discard(task)

    def _connect(self, r: Reader, writer: asyncio.StreamWriter) -> Connection | None:
        request = parse_connect(r)
        if isinstance(request, bytes):
            writer.write(request)  # refused, in the client's protocol version's terms
            return None
        client_id, flags, props = request.client_id, request.flags, request.props
        answer = Props()
        if not client_id:
            client_id = f"energy-demo-{next(self._client_ids)}"
            answer.values[Prop.ASSIGNED_CLIENT_IDENTIFIER] = client_id
        session = self.router.sessions.get(client_id)
        if session is not None and session.conn is not None:
            old = session.conn
            old.close(Reason.SESSION_TAKEN_OVER)
            self._gone(old, graceful=False)
            session = self.router.sessions.get(client_id)
        if session is not None and flags & 2:  # Clean Start: the old session goes
            self.router.sessions.pop(client_id)
            session = None
        present = session is not None
        if session is None:
            session = self.router.sessions[client_id] = Session(client_id, self.queue_limit)
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        session.expiry_s = props.get_int(Prop.SESSION_EXPIRY_INTERVAL, 0)
        conn = Connection(
            writer,
            session,
            request.keepalive,
            request.receive_maximum,
            request.max_packet,
            request.will,
        )
        session.conn = conn
        answer.values.update(
            {
                Prop.RECEIVE_MAXIMUM: 65535,  # every PUBLISH is acknowledged as it is read
                Prop.MAXIMUM_QOS: 1,
                Prop.RETAIN_AVAILABLE: 1,
                Prop.MAXIMUM_PACKET_SIZE: self.max_packet,
                Prop.TOPIC_ALIAS_MAXIMUM: 0,
                Prop.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
                Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
                Prop.SHARED_SUBSCRIPTION_AVAILABLE: 0,
            }
        )
        writer.write(connack(present, Reason.SUCCESS, answer))
        # Unacknowledged messages first, flagged DUP and with their old ids (4.4), then the queue.
        for pid, msg in session.inflight.items():
            conn.send_publish(msg, pid, dup=True)
        self.router.pump(session)
        return conn

    def _gone(self, conn: Connection, graceful: bool) -> None:
        self._conns.discard(conn)
        self.router.gone(conn, graceful)

    # --- packets -------------------------------------------------------------------------

    def _dispatch(self, conn: Connection, kind: int, flags: int, r: Reader) -> bool:
        """Handle one packet; True once the client said goodbye without its will."""
        expected_flags = 2 if kind in (PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE) else 0
        if kind != PacketType.PUBLISH and flags != expected_flags:
            raise malformed(f"packet type {kind} with flags {flags:#x}")
        match kind:
            case PacketType.PUBLISH:
                self._on_publish(conn, flags, r)
            case PacketType.PUBACK:
                conn.session.inflight.pop(r.u16(), None)
                self.router.pump(conn.session)
            case PacketType.SUBSCRIBE:
                self._on_subscribe(conn, r)
            case PacketType.UNSUBSCRIBE:
                pid, _ = r.u16(), r.props()
                reasons = bytearray()
                while r.left():
                    gone = conn.session.subscriptions.pop(r.string(), None)
                    reasons.append(Reason.SUCCESS if gone else Reason.NO_SUBSCRIPTION_EXISTED)
                if not reasons:
                    raise MqttError(Reason.PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter")
                conn.send(ack(PacketType.UNSUBACK, pid, bytes(reasons)))
            case PacketType.PINGREQ:
                conn.send(packet(PacketType.PINGRESP, b""))
            case PacketType.DISCONNECT:
                return self._on_disconnect(conn, r)
            case PacketType.PUBREC | PacketType.PUBREL | PacketType.PUBCOMP:
                raise MqttError(Reason.QOS_NOT_SUPPORTED, "QoS 2 is not supported")
            case _:
                raise MqttError(Reason.PROTOCOL_ERROR, f"unexpected packet type {kind}")
        return False

    def _on_publish(self, conn: Connection, flags: int, r: Reader) -> None:
        qos, retain = (flags >> 1) & 3, bool(flags & 1)
        if qos == 3:
            raise malformed("PUBLISH with QoS 3")
        if qos == 2:
            raise MqttError(Reason.QOS_NOT_SUPPORTED, "QoS 2 is not supported (Maximum QoS 1)")
        topic = r.string()
        check_topic_name(topic)
        pid = r.u16() if qos else None
        if pid == 0:
            raise MqttError(Reason.PROTOCOL_ERROR, "PUBLISH with packet identifier 0")
        props = r.props()
        if props.has(Prop.TOPIC_ALIAS):
            raise MqttError(Reason.TOPIC_ALIAS_INVALID, "topic aliases are not accepted")
        payload = r.take(r.left())
        sender = conn.session.client_id
        self.router.publish(Message(topic, payload, qos, retain, props.only(*FORWARDED), sender))
        if pid is not None:
            conn.send(ack(PacketType.PUBACK, pid))

    def _on_subscribe(self, conn: Connection, r: Reader) -> None:
        pid, props = r.u16(), r.props()
        if props.has(Prop.SUBSCRIPTION_IDENTIFIER):
            raise MqttError(
                Reason.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, "subscription identifiers"
            )
        reasons = bytearray()
        release: list[tuple[str, int]] = []  # filters whose retained messages go out now
        while r.left():
            topic_filter, options = r.string(), r.byte()
            qos, handling = options & 3, (options >> 4) & 3
            if qos == 3 or handling == 3 or options & 0xC0:
                raise malformed(f"subscription options 0x{options:02x}")
            if topic_filter.startswith("$share/"):
                reasons.append(Reason.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                continue
            if not valid_filter(topic_filter):
                reasons.append(Reason.TOPIC_FILTER_INVALID)
                continue
            granted = min(qos, 1)
            existed = topic_filter in conn.session.subscriptions
            conn.session.subscriptions[topic_filter] = Subscription(
                granted, bool(options & 4), bool(options & 8)
            )
            reasons.append(granted)
            if handling == 0 or (handling == 1 and not existed):
                release.append((topic_filter, granted))
        if not reasons:
            raise MqttError(Reason.PROTOCOL_ERROR, "SUBSCRIBE without a topic filter")
        conn.send(ack(PacketType.SUBACK, pid, bytes(reasons)))
        for topic_filter, granted in release:
            self.router.release_retained(conn.session, topic_filter, granted)

    def _on_disconnect(self, conn: Connection, r: Reader) -> bool:
        reason = r.byte() if r.left() else Reason.SUCCESS
        props = r.props() if r.left() else Props()
        if props.has(Prop.SESSION_EXPIRY_INTERVAL):
            expiry = props.get_int(Prop.SESSION_EXPIRY_INTERVAL, 0)
            if conn.session.expiry_s == 0 and expiry:
                raise MqttError(Reason.PROTOCOL_ERROR, "session expiry set at DISCONNECT")
            conn.session.expiry_s = expiry
        conn.close()
        return reason != Reason.DISCONNECT_WITH_WILL


@dataclass(frozen=True)
class ConnectRequest:
    """A CONNECT packet as read, checked for what does not depend on the broker's state."""

    client_id: str
    flags: int
    keepalive: int
    props: Props
    will: Message | None
    receive_maximum: int
    max_packet: int


def parse_connect(r: Reader) -> ConnectRequest | bytes:
    """Read a CONNECT; a refusal is returned as the CONNACK to send, a broken packet raises."""
    name, level = r.string(), r.byte()
    if name != "MQTT" or level != 5:
        # A v3.1.1 client cannot read a v5 CONNACK: answer in its version's terms
        # (return code 1, unacceptable protocol version), which paho reports as such.
        if name in ("MQTT", "MQIsdp") and level in (3, 4):
            return packet(PacketType.CONNACK, b"\x00\x01")
        return connack(False, Reason.UNSUPPORTED_PROTOCOL_VERSION)
    flags = r.byte()
    will_qos = (flags >> 3) & 3
    if flags & 1 or (not flags & 4 and flags & 0x38) or will_qos == 3:
        raise malformed(f"CONNECT flags 0x{flags:02x}")
    keepalive, props = r.u16(), r.props()
    client_id = r.string()
    will = None
    if flags & 4:
        will_props = r.props().only(*FORWARDED)
        topic, payload = r.string(), r.binary()
        check_topic_name(topic)
        will = Message(topic, payload, will_qos, bool(flags & 0x20), will_props, client_id)
    if flags & 0x80:
        r.string()  # user name: the demo broker lets everyone in
    if flags & 0x40:
        r.binary()
    if r.left():
        raise malformed("bytes after the CONNECT payload")
    if props.has(Prop.AUTHENTICATION_METHOD):
        return connack(False, Reason.BAD_AUTHENTICATION_METHOD)
    if will is not None and will.qos > 1:
        return connack(False, Reason.QOS_NOT_SUPPORTED)
    receive_maximum = props.get_int(Prop.RECEIVE_MAXIMUM, 65535)
    max_packet = props.get_int(Prop.MAXIMUM_PACKET_SIZE, 1 << 28)
    if not receive_maximum or not max_packet:
        raise MqttError(Reason.PROTOCOL_ERROR, "Receive Maximum or Maximum Packet Size 0")
    return ConnectRequest(client_id, flags, keepalive, props, will, receive_maximum, max_packet)


def connack(present: bool, reason: Reason, props: Props | None = None) -> bytes:
    return packet(PacketType.CONNACK, bytes([int(present), reason]) + encode_props(props))


__all__ = ["EmbeddedBroker"]
