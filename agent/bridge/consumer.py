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
original is acknowledged when the broker has acknowledged that publication
(:mod:`agent.bridge.deadletters` pairs the two, also when the broker's answer
comes before ``publish()`` has returned), so a crash in between redelivers the
original instead of losing it.

**paho's network thread only hands messages over.** Receiving is the bridge's
bottleneck (paho decodes every packet in Python), so validation, line protocol
and metrics happen a batch at a time in the writer thread, and acknowledgements
of a batch reach the network thread with one wake-up, not one per message.

**Lock order: paho's locks, then ours; never paho under ours.** paho runs every
callback holding its ``_in_callback_mutex``, and ``on_publish`` also holding its
``_out_message_mutex``; ``publish()`` takes ``_out_message_mutex`` in the calling
thread. Our callbacks take :attr:`Consumer._lock` (and, through the sink, the
writer's condition, which the writer never holds while calling paho or us). In
issue 11 the writer called ``publish()`` holding ``_lock`` while paho's thread,
holding ``_out_message_mutex``, waited in ``on_publish`` for ``_lock``: the
bridge stopped for good. So ``publish()``, ``subscribe()``, ``unsubscribe()``,
``disconnect()`` and ``loop_stop()`` are called with no lock of ours held.

One paho call stays under ``_lock``: queueing PUBACKs. It must be atomic with the
generation check, or an acknowledgement checked against the old connection could
be queued after paho's reconnect emptied its queue and go out on the new one.
While the network thread runs that call only appends to a deque and writes a
byte to a non-blocking socket pair (taking paho's ``_callback_mutex`` for an
instant, which paho never holds while calling back), so it cannot wait for a
thread that waits for us (:func:`agent.paho_compat.queue_pubacks`; its test
holds paho's callback locks while calling it). Without the network thread paho would write and call
back synchronously, into ``_lock``: so :meth:`Consumer.stop` refuses further
acknowledgements before it stops the loop.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import mqttclient
from agent.bridge.deadletters import DeadLetterBook, LogThrottle, Original
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Reason, Rejected
from agent.config.bridge import BridgeSettings
from agent.config.common import Mqtt
from agent.contract.kinds import subscription_filters
from agent.mqttclient import MqttConfigError, new_client
from agent.paho_compat import queue_pubacks, raw_topic

log = logging.getLogger(__name__)

#: The liveness probe unsubscribes from this filter, which no bridge ever subscribes to.
PROBE_FILTER = "energy-bridge/liveness-probe"

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


def bridge_client(settings: Mqtt, client_id: str) -> paho.Client:
    """The paho client, set up for manual acknowledgements and for bugs in callbacks."""
    try:
        client = new_client(settings, client_id, manual_ack=True)
    except MqttConfigError as exc:
        raise BridgeSetupError(str(exc)) from None
    # The process boundary for a bug in a callback: paho logs it and its network
    # thread lives on (the message stays unacknowledged and comes back later),
    # instead of the thread dying silently while the process looks healthy.
    client.suppress_exceptions = True
    client.enable_logger(logging.getLogger("paho"))
    client.max_inflight_messages_set(1000)  # our own publishes: dead letters only
    return client


def connect_properties(bridge: BridgeSettings) -> Properties:
    """A persistent session, the broker's sends bounded, and packets no larger than allowed."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = bridge.session_expiry_s
    props.ReceiveMaximum = bridge.receive_max
    props.MaximumPacketSize = max_packet_size(bridge.max_payload_bytes)
    return props


def log_refused_dead_letter(topic: str, reason: ReasonCode) -> None:
    log.error(
        "the broker refused a dead letter on %s (%s); its original is acknowledged "
        "anyway: check the broker's ACL for this bridge",
        topic,
        reason,
    )


class Consumer:
    """Receives and hands messages to ``sink``; acknowledges on request; dead-letters."""

    def __init__(
        self,
        settings: Mqtt,
        bridge: BridgeSettings,
        metrics: BridgeMetrics,
        sink: Callable[[Inbound], None],
        *,
        client_id: str | None = None,
        progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.bridge = bridge
        self.metrics = metrics
        self.sink = sink
        self.progress = progress
        self.client_id = client_id or settings.client_id or default_client_id(bridge.group)
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._closed = False  # no more acknowledgements: the network loop is stopping
        self._intake = True  # False while stopping: new messages stay with the broker
        self._dead: DeadLetterBook[ReasonCode] = DeadLetterBook()
        self._probe_sent: float | None = None  # monotonic time of an unanswered probe
        self._reject_log = LogThrottle()
        self._client = self._build()

    # --- set-up and stop --------------------------------------------------------------------

    def _build(self) -> paho.Client:
        client = bridge_client(self.settings, self.client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=connect_properties(self.bridge),
        )
        self._client.loop_start()

    def pause(self) -> None:
        """Take no more messages (they come back at the next start): a backlog holds no stop."""
        self._intake = False

    def stop(self, limit_s: float) -> bool:
        """Disconnect within ``limit_s``; False if paho's thread did not end in time.

        The session (and anything unacknowledged) stays at the broker. Dead letters
        still waiting for the broker get a moment first, so their originals are
        acknowledged rather than delivered and rejected again.
        """
        deadline = time.monotonic() + limit_s
        while len(self._dead) and time.monotonic() < deadline - limit_s / 2:
            time.sleep(0.02)
        with self._lock:
            self._closed = True
        self._client.disconnect()
        # loop_stop() joins paho's thread without a time limit: wait for it aside.
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.0, deadline - time.monotonic()))
        return not stopper.is_alive()

    # --- paho's network thread -------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s refused: %s", self.settings.host, reason)
            return
        self._new_connection(connected=True)
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
        self._new_connection(connected=False)
        self.metrics.connected.set(0)
        self.metrics.subscribed.set(0)
        log.warning("MQTT disconnected: %s (unacknowledged messages will be redelivered)", reason)

    def _new_connection(self, *, connected: bool) -> None:
        with self._lock:
            self._generation += 1
            self._connected = connected
            self._dead.clear()
            self._probe_sent = None

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("MQTT subscription refused by the broker: %s", ", ".join(refused))
            return
        self.metrics.subscribed.set(1)
        self.subscribed.set()

    def _on_unsubscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        with self._lock:
            self._probe_sent = None  # whatever the broker said: the thread turns

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if not self._intake:
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.metrics.received.inc()
            bad = Rejected(Reason.BAD_TOPIC, "topic is not UTF-8")
            payload = bytes(msg.payload)
            self.reject(raw_topic(msg), payload, msg.mid, msg.qos, self._generation, bad)
            return
        self.sink(
            Inbound(msg.mid, msg.qos, self._generation, time.monotonic(), topic, bytes(msg.payload))
        )

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            original = self._dead.answered(mid, reason)
        if original is not None:
            self._settle(original, reason)

    # --- dead letters (the writer's thread; paho's for a topic that is not UTF-8) -----------

    def reject(
        self, topic: str, payload: bytes, mid: int, qos: int, generation: int, r: Rejected
    ) -> None:
        """Dead-letter one message; its acknowledgement follows the broker's PUBACK."""
        reason = r.reason.value
        self.metrics.rejects.labels(reason).inc()
        sample, left_out = self._reject_log.allow(reason)
        if left_out:
            log.warning("%d more %s rejects in the last minute were not logged", left_out, reason)
        if sample:
            log.warning("rejected %s: %s: %s", topic[:200], reason, r.detail[:300])
        body = dead_letter_payload(topic, payload, r, self.client_id)
        original = Original(mid, qos, generation)
        with self._lock:
            if generation != self._generation or self._closed:
                return  # redelivered later on the new connection, rejected again then
            ticket = self._dead.opening()
        published: int | None = None
        try:
            info = self._client.publish(self.bridge.dead_letter_topic, body, qos=1)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                published = info.mid
            else:  # not connected (paho sends it after the reconnect) or its queue is full
                log.warning("dead letter not sent now (%s): its original comes back", info.rc)
        finally:
            with self._lock:
                live = generation == self._generation
                early = self._dead.filed(ticket, published, original, live=live)
        if early is not None:
            self._settle(original, early)

    def _settle(self, original: Original, reason: ReasonCode) -> None:
        """The broker answered a dead letter: acknowledge its original, once."""
        if reason.is_failure:
            # Keeping the original would hold one of the broker's receive-maximum
            # slots until the next reconnect, and the next copy would be refused too:
            # enough of them stop the bridge. The rejection is in the log above.
            self.metrics.dead_letters_refused.inc()
            log_refused_dead_letter(self.bridge.dead_letter_topic, reason)
        self._ack_many([(original.mid, original.qos, original.generation)])
        self.progress()

    @property
    def dead_letters_pending(self) -> int:
        """Dead letters the broker has not acknowledged yet (their originals wait)."""
        return len(self._dead)

    # --- liveness probe (the main thread) ----------------------------------------------------

    def unanswered_s(self, now: float) -> float:
        """How long paho's network thread has left a probe unanswered; sends one if none is out.

        The probe is an UNSUBSCRIBE from a filter this client never subscribes to: the
        broker answers every one, and the answer is handled on the network thread, so
        an answer proves that the thread turns and the connection carries packets.
        """
        with self._lock:
            if not self._connected or self._closed:
                return 0.0
            if self._probe_sent is not None:
                return now - self._probe_sent
            self._probe_sent = now
        self._client.unsubscribe(PROBE_FILTER)
        return 0.0

    # --- acknowledgements (any thread) -----------------------------------------------------

    def ack(self, items: Iterable[Inbound]) -> int:
        """Acknowledge written messages; returns how many were acknowledged."""
        return self._ack_many((i.mid, i.qos, i.generation) for i in items)

    def _ack_many(self, items: Iterable[tuple[int, int, int]]) -> int:
        sent: list[int] = []
        skipped = 0
        with self._lock:  # held while queueing: see the module's note on locks
            current = self._generation if self._connected and not self._closed else -1
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
                queue_pubacks(self._client, sent)
        if sent:
            self.metrics.acks.inc(len(sent))
        if skipped:
            self.metrics.stale_acks.inc(skipped)
        return len(sent)
