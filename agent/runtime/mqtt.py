"""MQTT v5 with paho-mqtt 2.x: one client, its network thread, and the outbox pump.

paho runs its own thread (connect, reconnect with backoff, keepalive). Its
callbacks are handed to the asyncio loop with ``call_soon_threadsafe``, so all
bookkeeping happens on the loop's thread: a message id is registered right
after ``publish`` returns, before any acknowledgement can be processed.

The :class:`Pump` moves messages from the outbox to the broker: it takes a
batch, publishes at QoS 1 within an in-flight window and a rate limit, and
accepts each message in the outbox only when the broker has acknowledged it.
On a disconnect everything in flight is rejected and sent again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.models import Mqtt
from agent.mqttclient import TakeoverWatch, new_client
from agent.paho_compat import publishing
from agent.runtime.outbox import Outbox
from agent.runtime.scheduler import Backoff

log = logging.getLogger(__name__)


@dataclass
class LinkState:
    connected: bool = False
    last_error: str = ""
    connects: int = 0
    disconnects: int = 0


class MqttLink:
    """A paho client configured from the config; reports to the asyncio loop."""

    def __init__(
        self,
        settings: Mqtt,
        *,
        client_id: str,
        will: tuple[str, bytes] | None,
        birth: Callable[[], tuple[str, bytes]] | None,
        on_connected: Callable[[], None] | None = None,
        on_ack: Callable[[int, bool], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        subscriptions: dict[str, Callable[[bytes], None]] | None = None,
        session_expiry_s: int = 7 * 86400,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.will = will
        self.birth = birth
        self.on_connected = on_connected
        self.on_ack = on_ack
        self.on_disconnected = on_disconnected
        #: Topics the agent listens to (a live emission factor), topic -> handler on the loop.
        self.subscriptions = dict(subscriptions or {})
        self.session_expiry_s = session_expiry_s
        self.state = LinkState()
        self.connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._refusal_logged = -math.inf
        #: PUBACKs from paho's thread, waiting for the loop (see ``_on_publish``).
        self._acks: list[tuple[int, bool, str]] = []
        self._acks_lock = threading.Lock()
        self._acks_posted = False
        #: Another client with our id (see TakeoverWatch): recognised and explained.
        self._takeover = TakeoverWatch(client_id)
        self._takeover_logged = -math.inf

    def _build(self) -> paho.Client:
        client = new_client(self.settings, self.client_id)
        if self.will is not None:  # None: a client that speaks for no gateway (a backfill)
            topic, payload = self.will
            client.will_set(topic, payload, qos=1, retain=True)
        client.max_inflight_messages_set(1000)  # our Pump holds the real window
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = self._build()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    # --- paho's thread -> the loop -------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._post(self._connected, not reason.is_failure, str(reason))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        handler = self.subscriptions.get(msg.topic)
        if handler is not None:
            self._post(handler, bytes(msg.payload))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` around the connect (TCP, TLS
        # handshake, certificate check): the error being handled is the reason.
        self._post(self._connect_failed, _connect_error(sys.exc_info()[1]))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        from_server = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        self._post(self._disconnected, str(reason), int(reason.value), from_server)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        # Acknowledgements are collected here and handed over in bunches: one wake-up
        # of the event loop per bunch, not per message (a syscall and a loop turn each).
        with self._acks_lock:
            self._acks.append(
                (mid, not reason.is_failure, "" if not reason.is_failure else str(reason))
            )
            if self._acks_posted:
                return
            self._acks_posted = True
        self._post(self._take_acks)

    def _take_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
            self._acks_posted = False
        for mid, ok, reason in acks:
            self._acked(mid, ok, reason)

    # --- on the loop ---------------------------------------------------------------------

    def _connected(self, ok: bool, reason: str) -> None:
        if not ok:
            # Wrong credentials, not authorised...: say it clearly; paho keeps retrying.
            self.state.last_error = f"broker refused the connection: {reason}"
            log.error(
                "mqtt %s:%d: %s", self.settings.host, self.settings.port, self.state.last_error
            )
            return
        self.state.connected = True
        self.state.connects += 1
        now = time.monotonic()
        self._takeover.connected(now)
        if not self._takeover.active(now):
            self.state.last_error = ""
        log.info("mqtt connected to %s:%d", self.settings.host, self.settings.port)
        if self.birth is not None:
            topic, payload = self.birth()  # a fresh timestamp at every connect
            self.publish(topic, payload, retain=True)
        if self._client is not None:
            for sub in self.subscriptions:
                self._client.subscribe(sub, qos=1)
        self.connected.set()
        if self.on_connected is not None:
            self.on_connected()

    def _connect_failed(self, reason: str) -> None:
        # Said once per cause, not at every retry of paho's backoff.
        text = f"cannot connect: {reason}"
        if text != self.state.last_error:
            log.error("mqtt %s:%d: %s (retrying)", self.settings.host, self.settings.port, text)
        self.state.last_error = text

    def _disconnected(self, reason: str, code: int = 0, from_server: bool = False) -> None:
        was = self.state.connected
        clash = self._takeover.dropped(code, from_server, time.monotonic())
        if clash is not None:
            self.state.last_error = clash
            if time.monotonic() - self._takeover_logged >= 60:  # once a minute, not a second
                log.error("mqtt %s:%d: %s", self.settings.host, self.settings.port, clash)
                self._takeover_logged = time.monotonic()
        self.state.connected = False
        self.connected.clear()
        if was:
            self.state.disconnects += 1
            # Our own disconnect at shutdown is routine; anything else is worth a warning.
            level = logging.INFO if reason == "Normal disconnection" else logging.WARNING
            if self._takeover.active(time.monotonic()):
                level = logging.DEBUG  # explained once a minute above, not every second
            log.log(
                level,
                "mqtt disconnected from %s:%d: %s",
                self.settings.host,
                self.settings.port,
                reason,
            )
        elif reason and reason != "Success" and clash is None:
            self.state.last_error = f"cannot connect: {reason}"
        if self.on_disconnected is not None:
            self.on_disconnected()

    def _acked(self, mid: int, ok: bool, reason: str) -> None:
        if not ok:
            # Not authorised (an ACL that does not match this gateway's topics), quota:
            # said once per cause and minute, not once per message.
            text = f"broker refuses messages: {reason}"
            now = time.monotonic()
            if text != self.state.last_error or now - self._refusal_logged >= 60:
                log.error(
                    "mqtt %s:%d: %s; they stay in the outbox and are sent again later",
                    self.settings.host,
                    self.settings.port,
                    text,
                )
                self._refusal_logged = now
            self.state.last_error = text
        elif self.state.last_error.startswith("broker refuses"):
            self.state.last_error = ""
        if self.on_ack is not None:
            self.on_ack(mid, ok)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publishes inside go to paho's thread together (see ``paho_compat.publishing``)."""
        if self._client is None:
            yield
            return
        with publishing(self._client):
            yield

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        """QoS 1 publish; the message id, or None if not connected."""
        if self._client is None or not self.state.connected:
            return None
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    async def stop(self, final: tuple[str, bytes] | None = None, timeout_s: float = 3.0) -> None:
        """Publish ``final`` (the retained offline status) if connected, then disconnect."""
        client = self._client
        if client is None:
            return
        if final is not None and self.state.connected:
            info = client.publish(final[0], final[1], qos=1, retain=True)
            deadline = time.monotonic() + timeout_s
            while not info.is_published() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # paho signals this on its own thread
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self._client = None
        self.state.connected = False
        self.connected.clear()


@dataclass
class PumpStats:
    published: int = 0
    acked: int = 0
    refused: int = 0
    retried: int = 0
    in_flight: int = 0
    last_ack_ms: int = 0


ACCEPT_BATCH = 1000
#: Smallest batch taken from the outbox while the rate limit holds the pump back...
MIN_BATCH = 32
#: ... unless the rate gathers it more slowly than this: a message never waits longer
#: for its batch (at 10 messages/s the batch is one message).
MAX_GATHER_S = 0.1


class Pump:
    """Outbox -> broker, at most ``window`` unacknowledged, at most ``rate_per_s``.

    Live first: records and fresh measurements go out in outbox order, the stale
    measurements of a backlog fill the rest of the rate (see the outbox's ``take``).
    """

    def __init__(
        self,
        outbox: Outbox,
        link: MqttLink,
        *,
        window: int = 200,
        rate_per_s: float = 2000.0,
        fresh_s: float = 10.0,
        accept_every_s: float = 0.2,
    ) -> None:
        self.outbox = outbox
        self.link = link
        self.window = window
        self.rate_per_s = rate_per_s
        #: Never more than the rate's budget can hold (it is capped at one second's worth):
        #: a batch of 32 at 10/s was never gathered, and nothing was ever published.
        self.min_batch = max(1, min(MIN_BATCH, int(rate_per_s * MAX_GATHER_S)))
        #: Measurements younger than this are live and go before the backlog's.
        self.fresh_s = fresh_s
        #: Acknowledged messages are deleted from the outbox in one transaction per this
        #: period (or per ``ACCEPT_BATCH``): one per acknowledgement was most of the
        #: outbox's cost. A crash in between only sends them once more.
        self.accept_every_s = accept_every_s
        self._last_accept = time.monotonic()
        self._refusals = Backoff(base_s=5.0, cap_s=300.0)
        self._paused_until = 0.0
        self.wake = asyncio.Event()
        self.stats = PumpStats()
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (outbox id, sent at)
        self._acked: list[int] = []
        self._room = asyncio.Event()
        link.on_ack = self._on_ack
        link.on_disconnected = self._on_disconnect

    def _on_ack(self, mid: int, ok: bool) -> None:
        item = self._inflight.pop(mid, None)
        if item is None:
            return  # the birth message, or a retransmission after a reject
        eid, _ = item
        if not ok:
            # Refused (not authorised, quota): usually the broker's ACL and this
            # gateway's ids disagree, which someone fixes. Deleting the message would
            # lose the data until then; it stays in the outbox (bounded as always)
            # and the pump pauses with a growing delay before trying again.
            self.outbox.reject([eid])
            self.stats.refused += 1
            self._paused_until = time.monotonic() + self._refusals.next_delay()
            self._room.set()
            return
        self._refusals.reset()
        self._acked.append(eid)
        self.stats.acked += 1
        self.stats.last_ack_ms = int(time.time() * 1000)
        self._room.set()

    def _on_disconnect(self) -> None:
        ids = [eid for eid, _ in self._inflight.values()]
        if ids:
            self.outbox.reject(ids)
            self.stats.retried += len(ids)
        self._inflight.clear()
        self._room.set()

    def flush_acks(self) -> None:
        self._last_accept = time.monotonic()
        if self._acked:
            ids, self._acked = self._acked, []
            self.outbox.accept(ids)

    def _maybe_flush_acks(self) -> None:
        if (
            len(self._acked) >= ACCEPT_BATCH
            or time.monotonic() - self._last_accept >= self.accept_every_s
        ):
            self.flush_acks()

    async def run(self) -> None:
        budget = 0.0
        last = time.monotonic()
        while True:
            self._maybe_flush_acks()
            if not self.link.connected.is_set():
                self.flush_acks()
                await self.link.connected.wait()
                continue
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(min(self._paused_until - now, 1.0))
                continue
            budget = min(self.rate_per_s, budget + (now - last) * self.rate_per_s)
            last = now
            room = min(self.window - len(self._inflight), int(budget))
            if budget < self.min_batch <= self.window - len(self._inflight):
                # Replaying at the rate limit: gather the budget for a batch worth a
                # take (a few queries) instead of taking a handful each loop turn.
                await asyncio.sleep((self.min_batch - budget) / self.rate_per_s)
                continue
            if room <= 0:
                self._room.clear()
                await _wait(self._room, 0.05)
                continue
            fresh_from = int((time.time() - self.fresh_s) * 1000)
            batch = self.outbox.take(room, fresh_from_ms=fresh_from)
            if not batch:
                self.wake.clear()
                await _wait(self.wake, self.accept_every_s)
                continue
            sent, published = time.monotonic(), 0
            with self.link.batch():  # one wake-up of paho's thread for the batch
                for e in batch:
                    mid = self.link.publish(e.topic, e.payload, retain=e.retain)
                    if mid is None:
                        self.outbox.reject([x.id for x in batch[published:]])
                        break
                    self._inflight[mid] = (e.id, sent)
                    published += 1
            self.stats.published += published
            budget -= published
            self.stats.in_flight = len(self._inflight)
            await asyncio.sleep(0)

    async def drain(self, timeout_s: float, *, wait_for_link: bool = False) -> bool:
        """Wait until the outbox is empty and everything is acknowledged (shutdown).

        Without a link it gives up at once (what is stored is sent after the next
        start), unless ``wait_for_link``: messages that exist only in memory are lost
        at the exit, so a link that is coming back is worth the rest of the time.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.flush_acks()
            if not self._inflight and self.outbox.stats().depth == 0:
                return True
            if not self.link.connected.is_set() and not wait_for_link:
                return False
            self.wake.set()
            await asyncio.sleep(0.05)
        self.flush_acks()
        return False


def _connect_error(exc: BaseException | None) -> str:
    """Why a connection attempt failed, in a line (no traceback, no secrets)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate is not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return "unknown error" if exc is None else f"{type(exc).__name__}: {exc}"


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``: the loops below also poll for other work."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
