"""MQTT 5.0 wire format for the demo's embedded broker (OASIS mqtt-v5.0-os).

Kept apart from the broker so the byte-level rules (variable byte integers,
UTF-8 strings, properties, topic names and filters) can be read and tested on
their own. Every decoding error is a :class:`MqttError` carrying the reason
code the broker sends back before it closes the connection: a client that
sends garbage loses its own connection, never the broker.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Reason(IntEnum):
    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    DISCONNECT_WITH_WILL = 0x04
    NO_SUBSCRIPTION_EXISTED = 0x11
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    BAD_AUTHENTICATION_METHOD = 0x8C
    SERVER_SHUTTING_DOWN = 0x8B
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    QOS_NOT_SUPPORTED = 0x9B
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1


class MqttError(Exception):
    """A packet the broker must refuse; ``reason`` goes into the DISCONNECT it sends."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.name.lower()}: {detail}")
        self.reason = reason


def malformed(detail: str) -> MqttError:
    return MqttError(Reason.MALFORMED_PACKET, detail)


class Prop(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class Kind(IntEnum):
    BYTE = 1
    U16 = 2
    U32 = 3
    VARINT = 4
    STRING = 5
    BINARY = 6
    PAIR = 7


_KIND: dict[Prop, Kind] = {
    **dict.fromkeys(
        (
            Prop.PAYLOAD_FORMAT_INDICATOR,
            Prop.REQUEST_PROBLEM_INFORMATION,
            Prop.REQUEST_RESPONSE_INFORMATION,
            Prop.MAXIMUM_QOS,
            Prop.RETAIN_AVAILABLE,
            Prop.WILDCARD_SUBSCRIPTION_AVAILABLE,
            Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            Prop.SHARED_SUBSCRIPTION_AVAILABLE,
        ),
        Kind.BYTE,
    ),
    **dict.fromkeys(
        (
            Prop.SERVER_KEEP_ALIVE,
            Prop.RECEIVE_MAXIMUM,
            Prop.TOPIC_ALIAS_MAXIMUM,
            Prop.TOPIC_ALIAS,
        ),
        Kind.U16,
    ),
    **dict.fromkeys(
        (
            Prop.MESSAGE_EXPIRY_INTERVAL,
            Prop.SESSION_EXPIRY_INTERVAL,
            Prop.WILL_DELAY_INTERVAL,
            Prop.MAXIMUM_PACKET_SIZE,
        ),
        Kind.U32,
    ),
    Prop.SUBSCRIPTION_IDENTIFIER: Kind.VARINT,
    **dict.fromkeys(
        (
            Prop.CONTENT_TYPE,
            Prop.RESPONSE_TOPIC,
            Prop.ASSIGNED_CLIENT_IDENTIFIER,
            Prop.AUTHENTICATION_METHOD,
            Prop.RESPONSE_INFORMATION,
            Prop.SERVER_REFERENCE,
            Prop.REASON_STRING,
        ),
        Kind.STRING,
    ),
    **dict.fromkeys((Prop.CORRELATION_DATA, Prop.AUTHENTICATION_DATA), Kind.BINARY),
    Prop.USER_PROPERTY: Kind.PAIR,
}

PropValue = int | str | bytes | list[tuple[str, str]]


@dataclass
class Props:
    """A packet's properties; user properties keep their order, others appear once."""

    values: dict[Prop, PropValue] = field(default_factory=dict)

    def get_int(self, prop: Prop, default: int) -> int:
        value = self.values.get(prop, default)
        assert isinstance(value, int)
        return value

    def has(self, prop: Prop) -> bool:
        return prop in self.values

    def only(self, *keep: Prop) -> Props:
        return Props({k: v for k, v in self.values.items() if k in keep})


class Reader:
    """Bounds-checked reads from one packet's body: running off the end is malformed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise malformed(f"packet ends {n - self.left()} bytes early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value = 0
        for i in range(4):
            b = self.byte()
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return value
        raise malformed("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise malformed(f"string is not UTF-8: {exc.reason}") from exc
        if "\x00" in text:
            raise malformed("string contains U+0000")
        return text

    def props(self) -> Props:
        body = Reader(self.take(self.varint()))
        props = Props()
        while body.left():
            ident = body.varint()
            try:
                prop = Prop(ident)
            except ValueError:
                raise malformed(f"unknown property 0x{ident:02x}") from None
            kind = _KIND[prop]
            value = _READ[kind](body)
            if isinstance(value, tuple):  # user properties may repeat
                pairs = props.values.setdefault(prop, [])
                assert isinstance(pairs, list)
                pairs.append(value)
            elif prop in props.values:
                raise MqttError(Reason.PROTOCOL_ERROR, f"property {prop.name} appears twice")
            else:
                props.values[prop] = value
        return props


def _pair(r: Reader) -> tuple[str, str]:
    return r.string(), r.string()


_READ: dict[Kind, Callable[[Reader], int | str | bytes | tuple[str, str]]] = {
    Kind.BYTE: Reader.byte,
    Kind.U16: Reader.u16,
    Kind.U32: Reader.u32,
    Kind.VARINT: Reader.varint,
    Kind.STRING: Reader.string,
    Kind.BINARY: Reader.binary,
    Kind.PAIR: _pair,
}


# --- encoding -------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def binary(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def string(text: str) -> bytes:
    return binary(text.encode("utf-8"))


def encode_props(props: Props | None) -> bytes:
    body = bytearray()
    for prop, value in (props.values if props else {}).items():
        if isinstance(value, list):
            for key, val in value:
                body += varint(prop) + string(key) + string(val)
        elif isinstance(value, str):
            body += varint(prop) + string(value)
        elif isinstance(value, bytes):
            body += varint(prop) + binary(value)
        else:
            body += varint(prop) + _encode_int(_KIND[prop], value)
    return varint(len(body)) + bytes(body)


def _encode_int(kind: Kind, value: int) -> bytes:
    match kind:
        case Kind.BYTE:
            return bytes([value])
        case Kind.U16:
            return struct.pack("!H", value)
        case Kind.U32:
            return struct.pack("!I", value)
        case _:
            return varint(value)


def packet(kind: PacketType, body: bytes, flags: int = 0) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def ack(kind: PacketType, packet_id: int, reasons: bytes = b"") -> bytes:
    """PUBACK (one reason), SUBACK or UNSUBACK (one reason per filter), no properties."""
    if kind is PacketType.PUBACK:
        return packet(kind, struct.pack("!H", packet_id) + reasons)
    return packet(kind, struct.pack("!H", packet_id) + encode_props(None) + reasons)


def disconnect(reason: Reason) -> bytes:
    return packet(PacketType.DISCONNECT, bytes([reason]) + encode_props(None))


async def read_packet(stream: asyncio.StreamReader, max_size: int) -> tuple[int, int, bytes]:
    """(packet type, flags, body); ``IncompleteReadError`` when the peer closes.

    The remaining length is checked before the body is read, so an announced
    256 MB packet costs nothing.
    """
    first = (await stream.readexactly(1))[0]
    length = 0
    for i in range(4):
        b = (await stream.readexactly(1))[0]
        length |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            break
    else:
        raise malformed("remaining length longer than 4 bytes")
    if length + 5 > max_size:
        raise MqttError(Reason.PACKET_TOO_LARGE, f"{length} bytes, at most {max_size - 5}")
    return first >> 4, first & 0x0F, await stream.readexactly(length)


# --- topics ---------------------------------------------------------------------------------


def check_topic_name(topic: str) -> None:
    if not topic or "+" in topic or "#" in topic:
        raise MqttError(Reason.TOPIC_NAME_INVALID, f"'{topic}' is not a topic name")


def valid_filter(topic_filter: str) -> bool:
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return topic_filter != ""


def matches(topic_filter: str, topic: str) -> bool:
    """Topic filter semantics of section 4.7, with wildcards not matching a leading $."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels) or (f != "+" and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)
