"""paho-mqtt's private API: every use of it, why it is worth it, and the public fallback.

paho 2.x has no public way to read its socket more than a packet at a time, to
queue many PUBACKs as one write, or to show a topic that is not UTF-8. Where the
gain was measured (docs/performance.md, *Bridge* and *Runtime*), the private API
is used here and nowhere else. Each use is checked once, at import, against what
this module expects (the name and its signature); when paho no longer matches,
the public fallback is taken instead, and :func:`report_fallbacks` says so once
in the log when the first client is made. Nothing else changes: the fallbacks
are slower, not different.

After a paho upgrade run ``tests/unit/runtime/test_paho_compat.py`` and
``tests/integration/test_paho_internals.py``: they fail, naming the internal that
changed, as soon as one no longer exists, has another signature or stops doing
what the code here relies on (on a real client against a real mosquitto).
"""

from __future__ import annotations

import functools
import inspect
import logging
import struct
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

#: A PUBACK's fixed header (type, remaining length 2) above its 16-bit packet id.
_PUBACK_HEAD = PUBACK << 24 | 2 << 16


def _takes(function: Callable[..., Any] | None, *names: str) -> bool:
    """Whether ``function`` exists and its parameters are exactly ``names``."""
    if function is None:
        return False
    try:
        return tuple(inspect.signature(function).parameters) == names
    except (TypeError, ValueError):  # not introspectable: not the function we know
        return False


def _keeps_raw_topic() -> bool:
    message = paho.MQTTMessage(topic=b"\xff")
    return getattr(message, "_topic", None) == b"\xff"


#: ``Client._sock_recv(bufsize)``: the one place paho reads its socket (2.0 to 2.2).
SOCK_RECV = _takes(getattr(paho.Client, "_sock_recv", None), "self", "bufsize")
#: ``Client._packet_queue(command, packet, mid, qos, info)``: queues bytes to send.
PACKET_QUEUE = _takes(
    getattr(paho.Client, "_packet_queue", None), "self", "command", "packet", "mid", "qos", "info"
)
#: ``MQTTMessage._topic``: the topic's bytes, which ``.topic`` decodes as UTF-8.
RAW_TOPIC = _keeps_raw_topic()


def fallbacks() -> list[str]:
    """What runs on the public API because paho's internals are not as expected."""
    return [
        what
        for ok, what in (
            (SOCK_RECV, "socket reads packet by packet (Client._sock_recv)"),
            (PACKET_QUEUE, "one PUBACK call per message (Client._packet_queue)"),
            (RAW_TOPIC, "topics that are not UTF-8 shown as a placeholder (MQTTMessage._topic)"),
        )
        if not ok
    ]


@functools.cache
def report_fallbacks() -> None:
    """One warning per process, when the first client is made, if any fallback is in use."""
    missing = fallbacks()
    if missing:
        log.warning(
            "paho-mqtt %s: its internals differ from what energy-agent expects; slower public "
            "fallbacks in use: %s (nothing is lost; see agent/paho_compat.py)",
            getattr(paho, "__version__", "?"),
            "; ".join(missing),
        )


class BufferedClient(paho.Client):
    """paho's client, reading its socket in 64 KiB chunks instead of packet by packet.

    paho 2.x reads every incoming packet with three to six ``recv()`` calls (the
    type byte, the length one byte at a time, then the body). A system call is
    tens of microseconds on a small VM or gateway: at the bridge's rates that,
    not the parsing, was the largest single cost (18,884 -> 22,509-25,848
    records/s, 1.73x -> 2.20-2.39x the naive path; docs/performance.md, Bridge),
    and the agent reads one PUBACK per message it publishes (Runtime). Here one
    ``recv`` fills a buffer that serves the following reads, and ``loop_read``
    goes on while buffered bytes remain (``select`` cannot see them, so none may
    be left behind).

    Private: overrides ``Client._sock_recv``. Fallback: plain ``paho.Client``
    (see :func:`client_class`).
    """

    CHUNK = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rbuf_sock: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self.socket()
        if sock is not self._rbuf_sock:  # a new connection: nothing of the old one is valid
            self._rbuf.clear()
            self._rbuf_sock = sock
        if not self._rbuf:
            data: bytes = super()._sock_recv(max(bufsize, self.CHUNK))
            if len(data) <= bufsize:
                return data  # also b"" (the peer closed): paho handles it as before
            self._rbuf += data
        out = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return out

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rbuf and self.socket() is not None:
            rc = super().loop_read(1)
        return rc


def client_class() -> type[paho.Client]:
    """The client class to build: buffered when paho reads through ``_sock_recv``."""
    report_fallbacks()
    return BufferedClient if SOCK_RECV else paho.Client


def queue_pubacks(client: paho.Client, mids: list[int]) -> None:
    """Every PUBACK of a batch in one write, instead of paho's one wake-up and send each.

    The bridge acknowledges a written batch of up to 5,000 messages at once; one
    queue entry and one wake-up instead of 5,000 of each keeps that work off the
    GIL that paho's network thread needs (docs/performance.md, Bridge: measured
    together with the batched validation and metrics, runs A-D). A v5 PUBACK
    without reason code or properties is four bytes (0x40, 2, mid), and
    ``_packet_queue`` takes any bytes. The bridge calls this under its own lock:
    while paho's network thread runs, ``_packet_queue`` only appends to a deque
    and writes a byte to a socket pair, so it never waits for a paho lock held
    around a callback (agent.bridge.consumer's note on locks; the integration
    test holds those locks while calling it).

    Private: ``Client._packet_queue``. Fallback: ``client.ack(mid, 1)`` for each.
    """
    if not PACKET_QUEUE or len(mids) == 1:
        for mid in mids:
            client.ack(mid, 1)
        return
    packet = struct.pack(f"!{len(mids)}I", *[_PUBACK_HEAD | mid for mid in mids])
    client._packet_queue(PUBACK, packet, 0, 0)


def raw_topic(message: paho.MQTTMessage) -> str:
    """A topic that is not UTF-8, as Python shows its bytes (for the log and dead letter).

    ``message.topic`` raises UnicodeDecodeError for it; the bytes make the dead
    letter say which publisher sent it. Private: ``MQTTMessage._topic``.
    Fallback: a placeholder (the message is still dead-lettered, with its payload).
    """
    if RAW_TOPIC:
        return repr(message._topic)
    return "<topic not UTF-8>"
