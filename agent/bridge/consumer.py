"""The MQTT side: a paho v5 client with a shared subscription and manual acknowledgements.

Why not :mod:`agent.runtime.mqtt`: the gateway's client publishes from an outbox;
this one subscribes, must never let paho acknowledge on its own (``manual_ack``)
and must know which connection a message arrived on.

**Acknowledge only on the connection the message came on.** After a reconnect
the broker resends every unacknowledged message of the persistent session. A
PUBACK for a packet id of the old connection sent on the new one could
acknowledge a *different* message that happens to reuse that id, before it was
written. So every message carries the connection generation it arrived on, and
:meth:`Consumer.ack` drops acknowledgements of older generations; the broker
redelivers those messages and the rewrite is idempotent (same series and time).

Rejected messages are published to the dead-letter topic at QoS 1, and the
original is acknowledged when the broker has acknowledged that publication, so
a crash in between redelivers the original instead of losing it.

**paho's network thread only hands messages over.** Receiving is the bridge's
bottleneck (paho decodes every packet in Python), so validation, line protocol
and metrics happen a batch at a time in the writer thread, and acknowledgements
of a batch reach the network thread with one wake-up, not one per message.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import PUBACK
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import mqttclient
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Reason, Rejected
from agent.config.bridge import BridgeSettings
from agent.config.common import Mqtt
from agent.mqttclient import MqttConfigError, new_client
from agent.payloads import TopicKind, subscription_filters

log = logging.getLogger(__name__)

#: A PUBACK's fixed header (type, remaining length 2) above its 16-bit packet id.
_PUBACK_HEAD = PUBACK << 24 | 2 << 16

#: The first bytes of a rejected payload travel with the dead letter, for diagnosis.
DEAD_LETTER_HEAD = 512

#: The longest topic MQTT can carry, plus a packet's fixed header and properties.
_TOPIC_AND_HEADERS = 65_535 + 1024


def max_packet_size(max_payload_bytes: int) -> int:
    """The MQTT v5 Maximum Packet Size the bridge announces when it connects.

    paho reads a whole packet into memory before anyone can look at it (a 200 MB
    message took the bridge to 545 MB), so the size check in validate.py comes too
    late to bound memory. Announced in CONNECT, the limit makes the broker discard
    larger messages for this client instead of sending them. Twice the payload limit:
    a message moderately over it still arrives and is dead-lettered as ``too_large``
    with its reason. The broker's own limits (deploy/mosquitto/mosquitto.conf) refuse
    oversized messages at the publisher, before anything is stored.
    """
    return 2 * max_payload_bytes + _TOPIC_AND_HEADERS


MEASUREMENT = {
    TopicKind.MEASUREMENTS: "measurements",
    TopicKind.ENERGY: "energy",
    TopicKind.INTENSITY: "intensity",
    TopicKind.GATEWAY_STATUS: "status",
    TopicKind.DEVICE_STATUS: "status",
}


class BridgeSetupError(ValueError):
    """Credentials or certificates cannot be used: fix the config, retrying will not help."""


@dataclass(slots=True)
class Inbound:
    """One message on its way to the database; ``lines`` is None until it is validated."""

    mid: int
    qos: int
    generation: int
    received: float  # time.monotonic()
    topic: str
    payload: bytes
    lines: list[str] | None = None
    ts_ms: int = 0
    measurement: str = ""


def read_secret(path: Path, what: str) -> str:
    try:
        return mqttclient.read_secret(path, what)
    except MqttConfigError as exc:
        raise BridgeSetupError(str(exc)) from None


def default_client_id(group: str) -> str:
    """Stable across restarts (the persistent session is found by it), one per host."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"energy-bridge-{host or 'host'}-{group}"[:64]


def dead_letter_payload(topic: str, payload: bytes, rejected: Rejected, client_id: str) -> bytes:
    return json.dumps(
        {
            "reason": rejected.reason.value,
            "detail": rejected.detail,
            "topic": topic,
            "payload_bytes": len(payload),
            "payload_head": payload[:DEAD_LETTER_HEAD].decode("utf-8", errors="replace"),
            "received_ms": time.time_ns() // 1_000_000,
            "bridge": client_id,
        },
        separators=(",", ":"),
    ).encode()


class Consumer:
    """Receives, validates, hands accepted messages to ``sink``; acknowledges on request."""

    def __init__(
        self,
        settings: Mqtt,
        bridge: BridgeSettings,
        metrics: BridgeMetrics,
        sink: Callable[[Inbound], None],
        *,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.bridge = bridge
        self.metrics = metrics
        self.sink = sink
        self.client_id = client_id or settings.client_id or default_client_id(bridge.group)
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        # dead-letter publication mid -> (original mid, generation)
        self._dead: dict[int, tuple[int, int]] = {}
        self._client = self._build()

    # --- set-up ----------------------------------------------------------------------------

    def _build(self) -> paho.Client:
        try:
            client = new_client(self.settings, self.client_id, manual_ack=True)
        except MqttConfigError as exc:
            raise BridgeSetupError(str(exc)) from None
        # The process boundary for a bug in a callback: paho logs it and its network
        # thread lives on (the message stays unacknowledged and comes back later),
        # instead of the thread dying silently while the process looks healthy.
        client.suppress_exceptions = True
        client.enable_logger(logging.getLogger("paho"))
        client.max_inflight_messages_set(1000)  # our own publishes: dead letters only
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.bridge.session_expiry_s
        props.ReceiveMaximum = self.bridge.receive_max
        props.MaximumPacketSize = max_packet_size(self.bridge.max_payload_bytes)
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly; the session (and anything unacknowledged) stays at the broker."""
        self._client.disconnect()
        self._client.loop_stop()

    # --- paho's network thread -------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s refused: %s", self.settings.host, reason)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
            self._dead.clear()
        self.metrics.connected.set(1)
        log.info(
            "MQTT connected to %s:%s as %s (session present: %s)",
            self.settings.host,
            self.settings.port,
            self.client_id,
            getattr(flags, "session_present", "?"),
        )
        group = self.bridge.group
        client.subscribe(
            [
                (f"$share/{group}/{f}", SubscribeOptions(qos=1))
                for f in subscription_filters(self.settings.prefix)
            ]
        )

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            self._generation += 1
            self._connected = False
            self._dead.clear()
        self.metrics.connected.set(0)
        self.metrics.subscribed.set(0)
        log.warning("MQTT disconnected: %s (unacknowledged messages will be redelivered)", reason)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("MQTT subscription refused by the broker: %s", ", ".join(refused))
            return
        self.metrics.subscribed.set(1)
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.metrics.received.inc()
            bad = Rejected(Reason.BAD_TOPIC, "topic is not UTF-8")
            payload = bytes(msg.payload)
            self.reject(repr(msg._topic), payload, msg.mid, msg.qos, self._generation, bad)
            return
        self.sink(
            Inbound(msg.mid, msg.qos, self._generation, time.monotonic(), topic, bytes(msg.payload))
        )

    def reject(
        self, topic: str, payload: bytes, mid: int, qos: int, generation: int, r: Rejected
    ) -> None:
        """Dead-letter one message; its acknowledgement follows the broker's PUBACK."""
        self.metrics.rejects.labels(r.reason.value).inc()
        log.warning("rejected %s: %s: %s", topic[:200], r.reason.value, r.detail[:300])
        body = dead_letter_payload(topic, payload, r, self.client_id)
        with self._lock:
            if generation != self._generation:
                return  # redelivered later on the new connection, rejected again then
            info = self._client.publish(self.bridge.dead_letter_topic, body, qos=1)
            if qos == 0:
                return
            if info.rc == paho.MQTT_ERR_SUCCESS:
                self._dead[info.mid] = (mid, generation)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            original = self._dead.pop(mid, None)
        if original is None:
            return
        if reason.is_failure:
            log.error("dead-letter publication refused by the broker: %s", reason)
            return
        self._ack_many([(original[0], 1, original[1])])

    # --- acknowledgements (any thread) -----------------------------------------------------

    def ack(self, items: Iterable[Inbound]) -> int:
        """Acknowledge written messages; returns how many were acknowledged."""
        return self._ack_many((i.mid, i.qos, i.generation) for i in items)

    def _ack_many(self, items: Iterable[tuple[int, int, int]]) -> int:
        sent: list[int] = []
        skipped = 0
        with self._lock:
            current = self._generation if self._connected else -1
            for mid, qos, gen in items:
                if qos == 0:
                    continue
                if gen != current:
                    skipped += 1
                    continue
                if qos == 1:
                    sent.append(mid)
                else:
                    self._client.ack(mid, qos)
                    self.metrics.acks.inc()
            if sent:
                self._pubacks(sent)
        if sent:
            self.metrics.acks.inc(len(sent))
        if skipped:
            self.metrics.stale_acks.inc(skipped)
        return len(sent)

    def _pubacks(self, mids: list[int]) -> None:
        """Every PUBACK of a batch in one write, instead of paho's one wake-up and send each.

        paho has no public call for this; its packet queue takes any bytes, and a
        v5 PUBACK without reason code or properties is four bytes (0x40, 2, mid).
        A client without that queue (another paho major) gets paho's own acks.
        """
        queue = getattr(self._client, "_packet_queue", None)
        if queue is None or len(mids) == 1:
            for mid in mids:
                self._client.ack(mid, 1)
            return
        packet = struct.pack(f"!{len(mids)}I", *[_PUBACK_HEAD | mid for mid in mids])
        queue(PUBACK, packet, 0, 0)
