"""`energy-agent run`: the gateway's main job, wired together.

    buses (scheduler) -> SiteCore (numba core) -> outbox (SQLite) -> Pump -> MQTT

Every message is written to the outbox before it is published and deleted
when the broker acknowledged it; what a full or failing disk refuses is held
in memory and published from there (the outbox's :class:`StorageGuard`). The
core's state is snapshotted every minute and at shutdown. On SIGTERM or
Ctrl-C: the in-flight polls finish, the core is flushed and snapshotted, the
outbox is drained for a few seconds, the retained ``offline`` status is
published, and the process exits 0 (1 if messages that could be neither
stored nor sent were lost, see ``lost_at_exit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from agent import __version__
from agent.config.models import AgentConfig
from agent.contract.build import encode, gateway_status_payload
from agent.contract.kinds import Message, MessageKind, Topics
from agent.contract.vocab import Carrier
from agent.core.channels import RING, SLOT_MS
from agent.core.factors import EmissionFactors, FactorError, parse_live_factor
from agent.core.site import Reading, SiteCore
from agent.http.metrics import AgentMetrics
from agent.mqttclient import client_id_of
from agent.runtime.alarms import AlarmJob
from agent.runtime.commit import TickCommit
from agent.runtime.devices import DeviceState
from agent.runtime.ledger import LedgerJob
from agent.runtime.lowmem import release_compiler_pages
from agent.runtime.mqtt import MqttLink, Pump
from agent.runtime.outbox import (
    LANE_MAX_BYTES,
    Outbox,
    SqliteOutbox,
    StorageGuard,
)
from agent.runtime.reports import ReportJob
from agent.runtime.scheduler import Backoff, BusPoller, DevicePoll, ResultFn, Values
from agent.runtime.snapshots import SEQ_MARK, SNAPSHOT, CoreSnapshots
from agent.runtime.status import StatusSource, status_line
from agent.runtime.throttle import LogThrottle, repeats
from agent.sdnotify import Notifier, State
from agent.status import AgentStatus
from drivers.endpoint import Transport
from drivers.errors import TransportError
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from drivers.reader import DeviceReader, Plans
from drivers.transport import Framing, open_bus

log = logging.getLogger(__name__)

__all__ = ["SEQ_MARK", "SNAPSHOT", "Agent", "DeviceState"]

#: Default polling groups per interval on a Modbus TCP bus (``poll_slots``).
POLL_SLOTS = 4
OUTBOX = "outbox.db"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def open_outbox(config: AgentConfig, outbox: Outbox | None) -> StorageGuard:
    """The SQLite outbox in ``state_dir`` (or ``outbox``, in tests) behind its storage guard.

    What the disk refuses is held in memory, at most ``LANE_MAX_BYTES`` (see the
    guard); a disk that is full at the start is opened later.
    """
    state_dir = Path(config.state_dir)
    max_bytes = int(config.buffer.max_mb * 1024 * 1024)
    memory_bytes = min(LANE_MAX_BYTES, max_bytes)
    if outbox is not None:
        return StorageGuard(outbox, state_dir, memory_bytes=memory_bytes)
    return StorageGuard.opening(
        lambda: SqliteOutbox(state_dir / OUTBOX, max_bytes), state_dir, memory_bytes=memory_bytes
    )


def mqtt_link(config: AgentConfig, topics: Topics) -> MqttLink:
    """The broker link, with the gateway's retained status as its will and birth."""
    assert config.mqtt is not None  # checked by the Agent

    def gateway_status(state: Literal["online", "offline"]) -> tuple[str, bytes]:
        topic = topics.topic(MessageKind.GATEWAY_STATUS)
        return topic, encode(gateway_status_payload(state, now_ms(), __version__))

    return MqttLink(
        config.mqtt,
        client_id=client_id_of(config.mqtt, config.site.id, config.gateway.id),
        will=gateway_status("offline"),
        birth=lambda: gateway_status("online"),
    )


class Agent:
    """One gateway's polls, core, outbox and broker link; ``run`` until ``stop`` is set.

    What it shows is :meth:`status` (an :class:`~agent.status.AgentStatus`); the
    views (page, /metrics, ``status``, the demo) render that and nothing else of
    it. The live page's server is not the agent's: ``agent.cli.serving`` runs both.
    """

    def __init__(
        self, config: AgentConfig, library: ProfileLibrary, *, outbox: Outbox | None = None,
        config_file: Path | None = None,
    ) -> None:  # fmt: skip
        if config.mqtt is None:
            raise ValueError("`run` needs an `mqtt:` section in the config")
        self.config = config
        self.library = library
        self.state_dir = Path(config.state_dir)
        self.site = SiteCore(config, library)
        self.outbox = open_outbox(config, outbox)
        self.devices = {d.id: DeviceState() for d in config.devices}
        self.link = mqtt_link(config, self.site.topics)
        self.pump = Pump(self.outbox, self.link, rate_per_s=config.buffer.replay_per_s)
        self.link.on_connected = self._restate
        self.on_live_factor = LiveFactorInput(self.site.factors).receive
        live = config.carbon.electricity.live
        if live is not None:
            self.link.subscriptions[live.topic] = self.on_live_factor
        self.pollers: list[BusPoller] = []
        self.stop = asyncio.Event()
        self.started_ms = now_ms()
        #: The history of records and the signed ledger over it (docs/ledger.md).
        self.ledger = LedgerJob(config, self.site.topics)
        #: Per device, the transformer ratios its counter's limits were last set for.
        self._ratios: dict[str, dict[str, float]] = {}
        #: One log line per cause a minute (a device's, the snapshot's), however often it recurs.
        self._log_throttle = LogThrottle(60.0)
        self.snapshots = CoreSnapshots(
            self.site,
            self.outbox,
            self.state_dir,
            commit=self.commit,
            throttle=self._log_throttle,
            held_elsewhere=self.ledger.held,
        )
        #: /metrics: poll latency and errors, core time, fed below as they happen.
        self.metrics = AgentMetrics({d.id: d.bus for d in config.devices})
        #: Messages that were neither stored nor sent when the job ended (exit 1 if any).
        self.lost_at_exit = 0
        #: The config's alarm rules, judged once a second (README, Alarms).
        self.alarms = AlarmJob(config, self.site.topics, self._store, self.started_ms)
        #: The data path: a tick's messages to the outbox and the history in one go.
        self.commits = TickCommit(
            self.site,
            self.outbox,
            self.snapshots,
            self.ledger,
            wake=self.pump.wake,
            tick_s=config.buffer.tick_s,
            seen=self.alarms.records,
        )
        self.reports = ReportJob(config, config_file)  # report.schedule, after midnight
        self._status = StatusSource(self)

    def status(self, now_ms: int | None = None) -> AgentStatus:
        """What every view shows: devices, link, outbox, storage, the site, the health."""
        return self._status(now_ms)

    def warm_up(self) -> None:
        """Compile the core now (`run` does, before it says when the first record closes)."""
        warm_up(self.site)

    def interval_end_ms(self, now: int) -> int:
        """When the publish interval holding ``now`` closes (`run` says it at start)."""
        engine = self.site.engine
        return (engine.interval_start_slot(now // SLOT_MS) + engine.interval_slots) * SLOT_MS

    @property
    def _closed_since_snapshot(self) -> bool:
        """Energy records were stored since the last snapshot (see ``_housekeeping``)."""
        return self.snapshots.closed_since

    @_closed_since_snapshot.setter
    def _closed_since_snapshot(self, value: bool) -> None:
        self.snapshots.closed_since = value

    # --- results of polls --------------------------------------------------------------

    def _store(self, messages: list[Message]) -> None:
        self.commits.store(messages)

    def commit(self) -> None:
        """Store what the last tick's polls produced, in one transaction (see TickCommit)."""
        self.commits.commit()

    def on_result(
        self,
        poll: DevicePoll,
        ts: int,
        values: Values | None,
        error: TransportError | None,
        seconds: float,
        implausible: Collection[Quantity] = (),
        ratios: Mapping[str, float] | None = None,
    ) -> None:
        st = self.devices[poll.device_id]
        st.polls += 1
        self.metrics.poll(poll.device_id, seconds, None if error is None else error.reason)
        messages: list[Message] = []
        if error is not None:
            st.failures += 1
            text = str(error)
            if st.state != "error" or st.error != text:
                if (n := self._log_throttle.due((poll.device_id, error.detail))) is not None:
                    log.warning("device %s: %s%s", poll.device_id, text, repeats(n))
                messages.append(
                    st.status_message(self.site.topics, poll.device_id, "error", text, ts)
                )
            st.state, st.error, st.reason = "error", text, error.reason
        else:
            assert values is not None
            if st.state != "ok":
                if (
                    st.state == "error"
                    and (n := self._log_throttle.due(poll.device_id)) is not None
                ):
                    log.info("device %s: answering again%s", poll.device_id, repeats(n))
                messages.append(st.status_message(self.site.topics, poll.device_id, "ok", None, ts))
            st.state, st.error, st.reason = "ok", None, ""
            if st.last_ok_ms is None:
                self.snapshots.new_baseline = True
            st.last_ok_ms = ts
            st.last_values = values
            self.commits.seq_moved.add(poll.device_id)
            if ratios and self._ratios.get(poll.device_id) != ratios:
                # Read now (at the first poll, then hourly): the counter's wrap range and
                # glitch limit follow a changed PT or CT before its reading is counted.
                self._ratios[poll.device_id] = dict(ratios)
                self.site.set_ratios(poll.device_id, ratios)
            started = time.perf_counter()
            messages += self.site.feed([Reading(poll.device_id, ts, values, tuple(implausible))])
            self.metrics.core_scan(time.perf_counter() - started)
        self._store(messages)

    def _restate(self) -> None:
        """At every connect, the devices' retained statuses again (the gateway's is the
        birth message): a broker restarted without persistence, or another node of a
        cluster, has forgotten them, and they change too rarely to come back by themselves.
        The same payloads as before, queued after anything older: the last one stays.
        So is the last alarm message, which lists the alarms raised."""
        restated = [st.status for st in self.devices.values() if st.status is not None]
        self._store(restated + ([self.alarms.last] if self.alarms.last is not None else []))

    # --- the job -----------------------------------------------------------------------

    async def _housekeeping(self, notifier: Notifier) -> None:
        last_snapshot = time.monotonic()
        last_ping = -math.inf
        storage_ok = True
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)
            self._store(self.site.flush(now_ms()))
            if self.alarms.on:
                self.alarms.tick(self.status())
            self.reports.tick(now_ms())
            # Ledger entries due now, stored in the history before they are queued here.
            if entries := await self.ledger.tick(now_ms(), self.commit):
                self.outbox.put_many(entries)
                self.ledger.queued()
                self.pump.wake.set()
            # A disk that refused writes is tried again even when nothing new comes.
            if self.outbox.retry() != storage_ok:
                storage_ok = not storage_ok
                last_ping = -math.inf  # systemd's status says it now, not at the next ping
                self.pump.wake.set()
            # systemd's watchdog: pinged from the event loop, so a hung loop stops the pings.
            if time.monotonic() - last_ping >= min(notifier.watchdog_s or 10.0, 10.0):
                notifier.notify(State.WATCHDOG, status=status_line(self.status()))
                last_ping = time.monotonic()
            # Also right after intervals closed: a restart after kill -9 must continue from
            # a state that has emitted exactly what the outbox holds, or it emits those
            # intervals again with other numbers (and without any snapshot, it would
            # start the counters afresh and lose the energy of the downtime). And once a
            # device has its first reading.
            due = time.monotonic() - last_snapshot >= 60
            if (self.snapshots.due or due) and self.snapshot():
                last_snapshot = time.monotonic()

    def snapshot(self) -> bool:
        """Save the core's state now if no record exists only in memory (see CoreSnapshots)."""
        return self.snapshots.save()

    async def run(self) -> None:
        """Poll, publish and keep the snapshot until ``stop`` is set; then leave cleanly."""
        notifier = Notifier()
        self.snapshots.restore()
        warm_up(self.site)
        if entries := self.ledger.start(now_ms()):
            self.outbox.put_many(entries)
            self.ledger.queued()
        self.link.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                transports: dict[str, Transport] = {}
                for bus in self.config.buses:
                    transports[bus.id] = await stack.enter_async_context(
                        open_bus(bus.endpoint(), bus.timing(), name=bus.id)
                    )
                self.pollers = build_pollers(self.config, self.library, transports, self.on_result)
                pump = asyncio.create_task(self.pump.run(), name="mqtt-pump")
                try:
                    async with asyncio.TaskGroup() as tg:
                        for poller in self.pollers:
                            tg.create_task(poller.run(self.stop), name=f"bus-{poller.bus_id}")
                        tg.create_task(self._housekeeping(notifier), name="housekeeping")
                        if self.alarms.webhook is not None:
                            tg.create_task(self.alarms.webhook.run(self.stop), name="webhook")
                        notifier.notify(State.READY, status=status_line(self.status()))
                finally:
                    notifier.notify(State.STOPPING, status="stopping: draining the outbox")
                    await self.reports.close()
                    await self._drain(pump)
        finally:
            await self.link.stop(
                final=(
                    self.site.topics.topic(MessageKind.GATEWAY_STATUS),
                    encode(gateway_status_payload("offline", now_ms(), __version__)),
                )
            )
            self.ledger.history.retry(force=True)
            self.lost_at_exit = self.snapshots.close()
            self.ledger.close()

    async def _drain(self, pump: asyncio.Task[None]) -> None:
        """Polls have finished: publish what they produced, then stop the pump."""
        self._store(self.site.flush(now_ms()))
        self.snapshot()
        drained = await self.pump.drain(5.0, wait_for_link=self.outbox.health().unstored > 0)
        # What memory holds and could not send is said when the outbox closes.
        stored = self.outbox.stats().depth - self.outbox.health().unstored
        if not drained and stored:
            log.warning(
                "stopping with %d messages in the outbox; they are sent after the next start",
                stored,
            )
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        self.pump.flush_acks()


class LiveFactorInput:
    """Live grid factors from the broker (see :func:`parse_live_factor` for the shapes).

    Anything else is logged and ignored: the static or scheduled factor stays in
    force, and a wrong factor must never reach a record silently.
    """

    #: A rejected live factor is logged at most once per this many seconds (a publisher
    #: gone wrong repeats itself every few seconds); the next line counts the rest.
    LOG_EVERY_S = 60.0

    def __init__(self, factors: EmissionFactors) -> None:
        self.factors = factors
        self._logged_at = -math.inf
        self._unlogged = 0

    def receive(self, payload: bytes) -> None:
        try:
            live = parse_live_factor(payload, now_ms())
        except FactorError as exc:
            now = time.monotonic()
            if now - self._logged_at < self.LOG_EVERY_S:
                self._unlogged += 1
                return
            more = self._unlogged
            tail = f"; {more} more ignored since the last such line" if more else ""
            log.warning("live emission factor ignored: %s%s", exc, tail)
            self._logged_at, self._unlogged = now, 0
            return
        self.factors.update_live(Carrier.ELECTRICITY, live.kg_per_kwh, live.ts_ms)


def build_pollers(
    config: AgentConfig,
    library: ProfileLibrary,
    transports: Mapping[str, Transport],
    on_result: ResultFn,
) -> list[BusPoller]:
    """One poller per bus with devices, each device backing off on its own when it fails."""
    rng = random.Random()
    pollers = []
    plans: Plans = {}
    for bus in config.buses:
        polls = [
            DevicePoll(
                dev.id,
                DeviceReader(resolved.regmap, dev.unit, plans=plans),
                dev.interval_s,
                Backoff(base_s=dev.interval_s, cap_s=max(60.0, 10 * dev.interval_s), rng=rng),
            )
            for dev, resolved in zip(config.devices, config.resolved(library), strict=True)
            if dev.bus == bus.id
        ]
        if polls:
            pollers.append(
                BusPoller(
                    bus.id,
                    transports[bus.id],
                    polls,
                    on_result,
                    serial=bus.framing is not Framing.TCP,
                    slots=bus.poll_slots or POLL_SLOTS,
                )
            )
    return pollers


def warm_up(site: SiteCore) -> None:
    """Compile (or load from numba's cache) the core's kernels before the first poll.

    Otherwise the first reading and the first interval close compile them on the
    event loop, and every bus stands still for seconds on a gateway's first start.
    Only reads: an empty feed, and window sums over empty slot ranges.
    """
    started = time.perf_counter()
    # LLVM's pages are released after each kernel, not only at the end: the peak
    # RSS of a start is then one kernel's load, not all of them (160 -> 140 MB).
    release_compiler_pages()
    site.feed([])
    release_compiler_pages()
    engine = site.engine
    engine.range_sums([0], [0])
    release_compiler_pages()
    engine.weighted_range_sums(site.group, np.zeros((2, RING)), [0], [0])
    log.debug("core kernels ready in %.1f s", time.perf_counter() - started)
    if (slow := engine.jit.warning()) is not None:
        log.warning("%s", slow)  # once per start: why numba is not used, how to get it
    release_compiler_pages()
