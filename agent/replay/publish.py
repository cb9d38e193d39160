"""`replay --publish`: the records through an outbox and MQTT, as `run` sends them.

The agent's own machinery: every message is stored in a SQLite outbox
(:class:`SqliteOutbox`) before the :class:`Pump` publishes it at QoS 1, and
deleted only when the broker acknowledged it; so the central bridge writes a
backfill as it writes live data.

Resumable. The pipeline is deterministic: the n-th message of a backfill is the
same bytes every time it runs over the same inputs and settings. The outbox
keeps, in the same transaction as the messages, how many were stored and a
fingerprint of the inputs and settings; run again after an interruption (Ctrl-C,
kill -9, a power cut), the backfill computes its way back to that point, stores
only what comes after it, and the outbox sends what it still holds. A message
may reach the broker twice (acknowledged, but its deletion not yet on disk),
never with other content; InfluxDB keeps one point per series and time.

The backfill has an outbox and an MQTT client id of its own (``-backfill``
appended), so it runs beside the gateway's `run` without taking its session,
and it sends no gateway status (no birth, no last will).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import threading
import time
from pathlib import Path

from agent.config.models import AgentConfig
from agent.mqttclient import client_id_of
from agent.replay.pipeline import Backfill
from agent.replay.report import Bar
from agent.replay.rows import ReplayError, ReplayInputError
from agent.runtime.mqtt import MqttLink, Pump
from agent.runtime.outbox import Item, OutboxError, SqliteOutbox, item_of

OUTBOX = "backfill-outbox.db"
FINGERPRINT = "backfill:fingerprint"
STORED = "backfill:stored"
DONE = "backfill:done"
DEFAULT_RATE = 5000.0
#: Messages per outbox transaction (one fsync each).
STORE_BATCH = 2000
#: The producer waits while the outbox holds more than this: a backfill is bounded by
#: the broker's pace, not by the disk, and never reaches the outbox's drop policy.
HIGH_WATER = 20_000


class Interrupted(ReplayError):
    """Stopped by a signal; the same command continues it."""


def fingerprint(config: AgentConfig, backfill: Backfill) -> int:
    """Inputs (path, size, mtime) and every setting that shapes the messages."""
    h = hashlib.sha256()
    for s in backfill.sources:
        st = s.path.stat()
        h.update(f"{s.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(config.model_dump_json(exclude={"mqtt", "buffer", "http", "state_dir"}).encode())
    o = backfill.options
    h.update(f"{sorted(t.value for t in o.topics)}\0{o.window_ms}\0{o.final_flush}".encode())
    prefix = config.mqtt.prefix if config.mqtt is not None else ""
    h.update(prefix.encode())
    return int.from_bytes(h.digest()[:8], "big", signed=True)


def publish(
    config: AgentConfig,
    backfill: Backfill,
    *,
    rate: float | None = None,
    progress: bool = False,
    queue: int = HIGH_WATER,
    outbox_path: Path | None = None,
) -> None:
    if config.mqtt is None:
        raise ReplayInputError("--publish needs an `mqtt:` section in the config")
    path = outbox_path or Path(config.state_dir) / OUTBOX
    try:
        outbox = SqliteOutbox(path, int(config.buffer.max_mb * 1024 * 1024))
    except (OutboxError, OSError) as exc:
        raise ReplayInputError(f"cannot open the backfill outbox {path}: {exc}") from None
    try:
        skip = _resume_point(outbox, path, fingerprint(config, backfill))
        if skip is None:
            return
        asyncio.run(_Publisher(config, backfill, outbox, skip, rate, progress, queue).run())
    finally:
        outbox.close()


def _resume_point(outbox: SqliteOutbox, path: Path, fp: int) -> int | None:
    """Messages already stored by an earlier run of this backfill (None: all sent)."""
    marks = outbox.marks()
    depth = outbox.stats().depth
    if marks.get(FINGERPRINT) == fp:
        if marks.get(DONE) and depth == 0:
            raise ReplayInputError(
                f"this backfill was published completely already ({path}); "
                "delete that file to publish it again"
            )
        return marks.get(STORED, 0)
    if FINGERPRINT in marks and (depth or not marks.get(DONE)):
        raise ReplayInputError(
            f"{path} holds an unfinished backfill of other inputs or settings: run that "
            f"command again to finish it, or delete {path} to abandon it"
        )
    outbox.put_many([], {FINGERPRINT: fp, STORED: 0, DONE: 0})
    return 0


class _Publisher:
    def __init__(
        self,
        config: AgentConfig,
        backfill: Backfill,
        outbox: SqliteOutbox,
        skip: int,
        rate: float | None,
        progress: bool,
        queue: int,
    ) -> None:
        assert config.mqtt is not None
        self.queue = queue
        self.backfill = backfill
        self.outbox = outbox
        self.skip = skip
        base = client_id_of(config.mqtt, config.site.id, config.gateway.id)
        self.link = MqttLink(config.mqtt, client_id=f"{base}-backfill", will=None, birth=None)
        self.pump = Pump(outbox, self.link, rate_per_s=rate or DEFAULT_RATE)
        self.bar = Bar(backfill, progress)
        self.stop = threading.Event()
        self.stored = skip
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self.stop.set)
        self.link.start()
        pump = asyncio.create_task(self.pump.run(), name="backfill-pump")
        try:
            producer = asyncio.create_task(asyncio.to_thread(self._produce))
            while not producer.done():
                self.bar.tick(self._state())
                await asyncio.wait({producer}, timeout=0.2)
            producer.result()
            while not self.stop.is_set():
                self.pump.flush_acks()
                if self.outbox.stats().depth == 0:
                    break
                self.bar.tick(self._state())
                await asyncio.sleep(0.1)
        finally:
            self.bar.close()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self.pump.flush_acks()
            await self.link.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.remove_signal_handler(sig)
        if self.stop.is_set():
            raise Interrupted(
                f"interrupted with {self.outbox.stats().depth} messages not yet acknowledged; "
                "run the same command again to continue"
            )

    def _state(self) -> str:
        link = "" if self.link.state.connected else ", waiting for the broker"
        return f", {self.pump.stats.acked:,} published, {self.outbox.stats().depth:,} queued{link}"

    def _produce(self) -> None:
        """On a thread: the pipeline, into the outbox, a transaction per batch."""
        n = 0
        items: list[Item] = []
        for messages in self.backfill.run():
            if self.stop.is_set():
                return
            for m in messages:
                n += 1
                if n > self.skip:
                    items.append(item_of(m))
            if len(items) >= STORE_BATCH:
                self._store(items, n)
                items = []
        self._store(items, n, done=True)

    def _store(self, items: list[Item], n: int, done: bool = False) -> None:
        while self.outbox.stats().depth > self.queue and not self.stop.is_set():
            time.sleep(0.05)
        marks = {STORED: max(n, self.skip)}
        if done:
            marks[DONE] = 1
        self.outbox.put_many(items, marks)
        self.stored = max(n, self.skip)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.pump.wake.set)
