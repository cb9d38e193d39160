"""`energy-agent run`: the gateway's main job, wired together.

    buses (scheduler) -> SiteCore (numba core) -> outbox (SQLite) -> Pump -> MQTT

Every message is written to the outbox before it is published and deleted
when the broker acknowledged it. The core's state is snapshotted every minute
and at shutdown. On SIGTERM or Ctrl-C: the in-flight polls finish, the core
is flushed and snapshotted, the outbox is drained for a few seconds, the
retained ``offline`` status is published, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from agent import __version__
from agent.config.models import AgentConfig
from agent.core.site import Reading, SiteCore, regmap_of
from agent.payloads import (
    Message,
    device_status_payload,
    encode,
    gateway_status_payload,
)
from agent.runtime.mqtt import MqttLink, Pump
from agent.runtime.outbox import Item, Kind, Outbox, SqliteOutbox
from agent.runtime.scheduler import Backoff, BusPoller, DevicePoll, Values
from drivers.errors import TransportError
from drivers.profile import ProfileLibrary
from drivers.reader import DeviceReader
from drivers.transport import Framing, ModbusTransport

log = logging.getLogger(__name__)

SNAPSHOT = "core-snapshot.npz"
OUTBOX = "outbox.db"

_KIND = {
    "measurements": Kind.MEASUREMENT,
    "energy": Kind.ENERGY,
    "intensity": Kind.INTENSITY,
    "status": Kind.STATUS,
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class DeviceState:
    """What the page, `status` and the retained status topic show for a device."""

    state: str = "unknown"  # "ok" | "error"
    error: str | None = None
    reason: str = ""
    last_ok_ms: int | None = None
    polls: int = 0
    failures: int = 0
    last_values: Values | None = None


class Agent:
    def __init__(
        self, config: AgentConfig, library: ProfileLibrary, *, outbox: Outbox | None = None
    ) -> None:
        if config.mqtt is None:
            raise ValueError("`run` needs an `mqtt:` section in the config")
        self.config = config
        self.library = library
        self.state_dir = Path(config.state_dir)
        self.site = SiteCore(config, library)
        self.outbox = outbox or SqliteOutbox(
            self.state_dir / OUTBOX, int(config.buffer.max_mb * 1024 * 1024)
        )
        self.devices = {d.id: DeviceState() for d in config.devices}
        topics = self.site.topics
        self.link = MqttLink(
            config.mqtt,
            client_id=config.mqtt.client_id or f"energy-agent-{config.site.id}-{config.gateway.id}",
            will=(
                topics.status(),
                encode(gateway_status_payload("offline", now_ms(), __version__)),
            ),
            birth=lambda: (
                topics.status(),
                encode(gateway_status_payload("online", now_ms(), __version__)),
            ),
        )
        self.pump = Pump(self.outbox, self.link)
        self.pollers: list[BusPoller] = []
        self.stop = asyncio.Event()
        self.started_ms = now_ms()

    # --- results of polls --------------------------------------------------------------

    def _store(self, messages: list[Message], retain_status: bool = False) -> None:
        if not messages:
            return
        items = []
        for m in messages:
            kind = _KIND[m.topic.rsplit("/", 1)[-1]]
            items.append(
                Item(
                    kind,
                    m.topic,
                    encode(m.payload),
                    retain=kind is Kind.STATUS or retain_status,
                    created_ms=int(m.payload.get("ts", 0)),
                )
            )
        self.outbox.put_many(items)
        self.pump.wake.set()

    def on_result(
        self,
        poll: DevicePoll,
        ts: int,
        values: Values | None,
        error: TransportError | None,
        seconds: float,
    ) -> None:
        st = self.devices[poll.device_id]
        st.polls += 1
        messages: list[Message] = []
        if error is not None:
            st.failures += 1
            text = str(error)
            if st.state != "error" or st.error != text:
                log.warning("device %s: %s", poll.device_id, text)
                messages.append(
                    Message(
                        self.site.topics.device_status(poll.device_id),
                        device_status_payload("error", text, ts),
                    )
                )
            st.state, st.error, st.reason = "error", text, error.reason
        else:
            assert values is not None
            if st.state != "ok":
                if st.state == "error":
                    log.info("device %s: answering again", poll.device_id)
                messages.append(
                    Message(
                        self.site.topics.device_status(poll.device_id),
                        device_status_payload("ok", None, ts),
                    )
                )
            st.state, st.error, st.reason = "ok", None, ""
            st.last_ok_ms = ts
            st.last_values = values
            messages += self.site.feed([Reading(poll.device_id, ts, values)])
        self._store(messages)

    # --- the job -----------------------------------------------------------------------

    def _build_pollers(self, transports: dict[str, ModbusTransport]) -> None:
        rng = random.Random()
        for bus in self.config.buses:
            polls = []
            for dev in self.config.devices:
                if dev.bus != bus.id:
                    continue
                reader = DeviceReader(regmap_of(dev, self.library), dev.unit)
                cap = max(60.0, 10 * dev.interval_s)
                polls.append(
                    DevicePoll(
                        dev.id,
                        reader,
                        dev.interval_s,
                        Backoff(base_s=dev.interval_s, cap_s=cap, rng=rng),
                    )
                )
            if polls:
                self.pollers.append(
                    BusPoller(
                        bus.id,
                        transports[bus.id],
                        polls,
                        self.on_result,
                        serial=bus.framing is not Framing.TCP,
                    )
                )

    async def _housekeeping(self) -> None:
        last_snapshot = time.monotonic()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)
            self._store(self.site.flush(now_ms()))
            if time.monotonic() - last_snapshot >= 60:
                self.snapshot()
                last_snapshot = time.monotonic()

    def snapshot(self) -> None:
        try:
            self.site.save_snapshot(self.state_dir / SNAPSHOT)
        except OSError as exc:
            log.error("cannot write the core snapshot in %s: %s", self.state_dir, exc)

    async def run(self) -> None:
        restored = self.site.load_snapshot(self.state_dir / SNAPSHOT)
        if restored:
            log.info("continuing counters from %s", self.state_dir / SNAPSHOT)
        self.link.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                transports = {}
                for bus in self.config.buses:
                    transports[bus.id] = await stack.enter_async_context(
                        ModbusTransport(bus.endpoint(), bus.timing(), name=bus.id)
                    )
                self._build_pollers(transports)
                pump = asyncio.create_task(self.pump.run(), name="mqtt-pump")
                try:
                    async with asyncio.TaskGroup() as tg:
                        for poller in self.pollers:
                            tg.create_task(poller.run(self.stop), name=f"bus-{poller.bus_id}")
                        tg.create_task(self._housekeeping(), name="housekeeping")
                finally:
                    # Polls have finished: publish what they produced, then leave cleanly.
                    self._store(self.site.flush(now_ms()))
                    self.snapshot()
                    drained = await self.pump.drain(5.0)
                    if not drained:
                        log.warning(
                            "stopping with %d messages in the outbox; they are sent "
                            "after the next start",
                            self.outbox.stats().depth,
                        )
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pump
                    self.pump.flush_acks()
        finally:
            await self.link.stop(
                final=(
                    self.site.topics.status(),
                    encode(gateway_status_payload("offline", now_ms(), __version__)),
                )
            )
            self.outbox.close()
