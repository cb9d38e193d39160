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
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import __version__
from agent.config.models import AgentConfig
from agent.core.channels import RING
from agent.core.factors import FactorError, parse_live_factor
from agent.core.site import Reading, SiteCore
from agent.core.snapshot import SnapshotError
from agent.http.metrics import AgentMetrics
from agent.http.server import HttpServer
from agent.payloads import (
    Carrier,
    Message,
    device_status_payload,
    encode,
    gateway_status_payload,
)
from agent.runtime.lowmem import release_compiler_pages
from agent.runtime.mqtt import MqttLink, Pump
from agent.runtime.outbox import (
    LANE_MAX_BYTES,
    RECORDS,
    Item,
    Kind,
    Outbox,
    SqliteOutbox,
    StorageGuard,
)
from agent.runtime.scheduler import Backoff, BusPoller, DevicePoll, Values
from agent.runtime.throttle import LogThrottle, repeats
from agent.sdnotify import Notifier, State
from drivers.errors import TransportError
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from drivers.reader import DeviceReader
from drivers.transport import Framing, ModbusTransport

log = logging.getLogger(__name__)

SNAPSHOT = "core-snapshot.npz"
#: Outbox marks holding each device's last measurement seq.
SEQ_MARK = "seq:"
#: How long a poll's messages may wait to share an outbox transaction with others.
COMMIT_DELAY_S = 0.01
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
    #: The last retained status message stored for this device (sent again on reconnect).
    status: Message | None = None


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
        max_bytes = int(config.buffer.max_mb * 1024 * 1024)
        # What the disk refuses is held in memory, at most LANE_MAX_BYTES (see the guard).
        memory_bytes = min(LANE_MAX_BYTES, max_bytes)
        if outbox is None:  # opened later if the disk is full now
            self.outbox = StorageGuard.opening(
                lambda: SqliteOutbox(self.state_dir / OUTBOX, max_bytes),
                self.state_dir,
                memory_bytes=memory_bytes,
            )
        else:
            self.outbox = StorageGuard(outbox, self.state_dir, memory_bytes=memory_bytes)
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
        self.pump = Pump(self.outbox, self.link, rate_per_s=config.buffer.replay_per_s)
        self.link.on_connected = self._restate
        live = config.carbon.electricity.live
        if live is not None:
            self.link.subscriptions[live.topic] = self.on_live_factor
        self.pollers: list[BusPoller] = []
        self.stop = asyncio.Event()
        self.started_ms = now_ms()
        #: Energy records were stored since the last snapshot (see ``_housekeeping``).
        self._closed_since_snapshot = False
        #: A device answered for the first time since the last snapshot: its counter's
        #: starting point must be on disk, or a kill -9 before the next snapshot loses
        #: the energy from there to the restart.
        self._new_baseline = False
        #: Messages waiting for the next outbox transaction (see ``commit``).
        self._pending: list[Item] = []
        #: Devices whose measurement seq moved since the last commit.
        self._seq_moved: set[str] = set()
        self._commit_at: asyncio.TimerHandle | None = None
        #: One log line per cause a minute (a device's, the snapshot's), however often it recurs.
        self._log_throttle = LogThrottle(60.0)
        #: /metrics: poll latency and errors, core time, fed below as they happen.
        self.metrics = AgentMetrics({d.id: d.bus for d in config.devices})
        #: The snapshot's last failure, if it has not been written since.
        self._snapshot_error = ""
        #: Messages that were neither stored nor sent when the job ended (exit 1 if any).
        self.lost_at_exit = 0

    # --- results of polls --------------------------------------------------------------

    def _store(self, messages: list[Message], retain_status: bool = False) -> None:
        if not messages:
            return
        items = []
        for m in messages:
            kind = _KIND[m.topic.rsplit("/", 1)[-1]]
            self._closed_since_snapshot |= kind is Kind.ENERGY
            items.append(
                Item(
                    kind,
                    m.topic,
                    encode(m.payload),
                    retain=kind is Kind.STATUS or retain_status,
                    created_ms=int(m.payload.get("ts", 0)),
                )
            )
        self._pending += items
        if self._commit_at is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the job (tests, tools): store now
                self.commit()
                return
            self._commit_at = loop.call_later(COMMIT_DELAY_S, self.commit)

    def commit(self) -> None:
        """Store what the polls of the last few milliseconds produced, in one transaction.

        Group commit: with one transaction per poll, the outbox was a third of what
        the agent added to a bare poller's CPU. Nothing is published before it is
        stored (the pump reads only the outbox), unless the disk refuses it: then
        the guard holds it in memory and the pump publishes it from there. The
        delay adds at most ``COMMIT_DELAY_S`` to a message's way to the broker.
        """
        if self._commit_at is not None:
            self._commit_at.cancel()
            self._commit_at = None
        if not self._pending:
            return
        items, self._pending = self._pending, []
        # The seq of each device's last measurement, in the same transaction: after
        # kill -9 the numbering continues from what was stored, not from the last
        # snapshot (which would repeat seq numbers with other values). A disk that
        # refuses them gets them with its next write (the guard keeps them).
        marks = {SEQ_MARK + d: self.site.by_id[d].seq for d in self._seq_moved}
        self.outbox.put_many(items, marks)
        self._seq_moved.clear()
        self.pump.wake.set()

    def on_result(
        self,
        poll: DevicePoll,
        ts: int,
        values: Values | None,
        error: TransportError | None,
        seconds: float,
        implausible: Collection[Quantity] = (),
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
                st.status = Message(
                    self.site.topics.device_status(poll.device_id),
                    device_status_payload("error", text, ts),
                )
                messages.append(st.status)
            st.state, st.error, st.reason = "error", text, error.reason
        else:
            assert values is not None
            if st.state != "ok":
                if (
                    st.state == "error"
                    and (n := self._log_throttle.due(poll.device_id)) is not None
                ):
                    log.info("device %s: answering again%s", poll.device_id, repeats(n))
                st.status = Message(
                    self.site.topics.device_status(poll.device_id),
                    device_status_payload("ok", None, ts),
                )
                messages.append(st.status)
            st.state, st.error, st.reason = "ok", None, ""
            if st.last_ok_ms is None:
                self._new_baseline = True
            st.last_ok_ms = ts
            st.last_values = values
            self._seq_moved.add(poll.device_id)
            started = time.perf_counter()
            messages += self.site.feed([Reading(poll.device_id, ts, values, tuple(implausible))])
            self.metrics.core_scan(time.perf_counter() - started)
        self._store(messages)

    #: A rejected live factor is logged at most once per this many seconds (a publisher
    #: gone wrong repeats itself every few seconds); the next line counts the rest.
    FACTOR_LOG_EVERY_S = 60.0
    _factor_logged_at = -math.inf
    _factor_unlogged = 0

    def on_live_factor(self, payload: bytes) -> None:
        """A live grid factor (see :func:`parse_live_factor` for the two accepted shapes).

        Anything else is logged and ignored: the static or scheduled factor stays in force,
        and a wrong factor must never reach a record silently.
        """
        try:
            live = parse_live_factor(payload, now_ms())
        except FactorError as exc:
            now = time.monotonic()
            if now - self._factor_logged_at < self.FACTOR_LOG_EVERY_S:
                self._factor_unlogged += 1
                return
            more = self._factor_unlogged
            tail = f"; {more} more ignored since the last such line" if more else ""
            log.warning("live emission factor ignored: %s%s", exc, tail)
            self._factor_logged_at, self._factor_unlogged = now, 0
            return
        self.site.factors.update_live(Carrier.ELECTRICITY, live.kg_per_kwh, live.ts_ms)

    def _restate(self) -> None:
        """At every connect, the devices' retained statuses again (the gateway's is the
        birth message): a broker restarted without persistence, or another node of a
        cluster, has forgotten them, and they change too rarely to come back by themselves.
        The same payloads as before, queued after anything older: the last one stays."""
        self._store([st.status for st in self.devices.values() if st.status is not None])

    # --- the job -----------------------------------------------------------------------

    def _build_pollers(self, transports: dict[str, ModbusTransport]) -> None:
        rng = random.Random()
        for bus in self.config.buses:
            polls = []
            for resolved in self.config.resolved(self.library):
                dev = resolved.device
                if dev.bus != bus.id:
                    continue
                reader = DeviceReader(resolved.regmap, dev.unit)
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

    async def _housekeeping(self, notifier: Notifier) -> None:
        last_snapshot = time.monotonic()
        last_ping = -math.inf
        storage_ok = True
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)
            self._store(self.site.flush(now_ms()))
            # A disk that refused writes is tried again even when nothing new comes.
            if self.outbox.retry() != storage_ok:
                storage_ok = not storage_ok
                last_ping = -math.inf  # systemd's status says it now, not at the next ping
                self.pump.wake.set()
            # systemd's watchdog: pinged from the event loop, so a hung loop stops the pings.
            if time.monotonic() - last_ping >= min(notifier.watchdog_s or 10.0, 10.0):
                notifier.notify(State.WATCHDOG, status=self._status_line())
                last_ping = time.monotonic()
            # Also right after intervals closed: a restart after kill -9 must continue from
            # a state that has emitted exactly what the outbox holds, or it emits those
            # intervals again with other numbers (and without any snapshot, it would
            # start the counters afresh and lose the energy of the downtime). And once a
            # device has its first reading.
            due = time.monotonic() - last_snapshot >= 60
            if (self._closed_since_snapshot or self._new_baseline or due) and self.snapshot():
                last_snapshot = time.monotonic()

    def snapshot(self) -> bool:
        """Save the core's state unless a record it emitted exists only in memory; True if saved.

        The snapshot says which intervals were emitted, so their records must be on
        disk first, or a restart after kill -9 would never emit them. While the disk
        refuses writes a record may be held in memory (the outbox's guard): then the
        snapshot waits until the record is stored or the broker acknowledged it (one
        that is up does so within milliseconds). Written past such a record, a crash
        would lose it for good; held back, a crash restarts from the older snapshot
        and the core derives those intervals again from the meters' counters (the
        downtime spread evenly, marked interpolated), so no energy is lost. The
        price: a record that reached the broker from memory may come again from the
        restarted core with other (interpolated) numbers, if the disk took no
        snapshot after it; the sum over the intervals is the same. A record that
        memory itself had to drop (full, with the broker away for days) no longer
        holds the snapshot back: it is lost, and said and counted when it goes.

        Held back or refused by the disk, the snapshot keeps its reasons
        (``_closed_since_snapshot``, ``_new_baseline``) and the housekeeping tries
        again every second.
        """
        self.commit()
        if self.outbox.records_held():
            return False
        try:
            self.site.save_snapshot(self.state_dir / SNAPSHOT)
        except OSError as exc:
            self._snapshot_error = f"cannot write the core snapshot in {self.state_dir}: {exc}"
            if (n := self._log_throttle.due(self._snapshot_error)) is not None:
                log.error("%s; trying again every second%s", self._snapshot_error, repeats(n))
            return False
        if self._snapshot_error:
            log.warning("core snapshot written again in %s", self.state_dir)
            self._snapshot_error = ""
        self._closed_since_snapshot = self._new_baseline = False
        return True

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) the core's kernels before the first poll.

        Otherwise the first reading and the first interval close compile them on the
        event loop, and every bus stands still for seconds on a gateway's first start.
        Only reads: an empty feed, and window sums over empty slot ranges.
        """
        started = time.perf_counter()
        # LLVM's pages are released after each kernel, not only at the end: the peak
        # RSS of a start is then one kernel's load, not all of them (160 -> 140 MB).
        release_compiler_pages()
        self.site.feed([])
        release_compiler_pages()
        engine = self.site.engine
        engine.range_sums([0], [0])
        release_compiler_pages()
        engine.weighted_range_sums(self.site.group, np.zeros((2, RING)), [0], [0])
        log.debug("core kernels ready in %.1f s", time.perf_counter() - started)
        if (slow := engine.jit.warning()) is not None:
            log.warning("%s", slow)  # once per start: why numba is not used, how to get it
        release_compiler_pages()

    def _status_line(self) -> str:
        ok = sum(st.state == "ok" for st in self.devices.values())
        line = f"polling {len(self.devices)} devices ({ok} ok), outbox {self.outbox.stats().depth}"
        h = self.outbox.health()
        if not h.ok:
            line += (
                f"; STORAGE FAILING in {h.directory}: {h.error}, "
                f"{h.unstored} messages in memory only"
            )
        return line

    async def run(self) -> None:
        notifier = Notifier()
        path = self.state_dir / SNAPSHOT
        try:
            if self.site.load_snapshot(path):
                log.info("continuing counters from %s", path)
            for name, seq in self.outbox.marks().items():
                info = self.site.by_id.get(name.removeprefix(SEQ_MARK))
                if name.startswith(SEQ_MARK) and info is not None:
                    info.seq = max(info.seq, seq)
        except SnapshotError as exc:
            # A damaged snapshot must not keep the gateway down: keep it for inspection and
            # start the counters afresh (the first interval is then marked partial).
            aside = path.with_name(path.name + ".corrupt")
            path.replace(aside)
            log.error("%s; moved to %s, starting the core afresh", exc, aside)
        self._warm_up()
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
                        tg.create_task(self._housekeeping(notifier), name="housekeeping")
                        # The live page, /api/state, /events, /metrics; ends when stop is set.
                        tg.create_task(HttpServer.for_agent(self).serve(self.stop), name="http")
                        notifier.notify(State.READY, status=self._status_line())
                finally:
                    notifier.notify(State.STOPPING, status="stopping: draining the outbox")
                    # Polls have finished: publish what they produced, then leave cleanly.
                    self._store(self.site.flush(now_ms()))
                    self.snapshot()
                    drained = await self.pump.drain(
                        5.0, wait_for_link=self.outbox.health().unstored > 0
                    )
                    # What memory holds and could not send is said by _close_outbox.
                    stored = self.outbox.stats().depth - self.outbox.health().unstored
                    if not drained and stored:
                        log.warning(
                            "stopping with %d messages in the outbox; they are sent "
                            "after the next start",
                            stored,
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
            self._close_outbox()

    def _close_outbox(self) -> None:
        """The last word on a full disk: store what memory holds if the disk takes it now,
        then the snapshot the drain or the store allowed, then count what is lost."""
        self.outbox.retry(force=True)
        if self._closed_since_snapshot or self._new_baseline:
            self.snapshot()
        self.outbox.close()
        lost = self.outbox.lost_at_close
        self.lost_at_exit = sum(lost.values())
        records = sum(lost[k] for k in RECORDS)
        if records:
            log.error(
                "%d of them are records: the core's snapshot was not written past them, so "
                "the next start derives those intervals again from the meters' counters "
                "(marked interpolated)",
                records,
            )
