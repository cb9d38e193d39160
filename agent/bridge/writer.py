"""The database side: batches of line protocol through influxdb-client's v2 write API.

One worker thread takes received messages in arrival order, validates them
(rejects go to the dead-letter topic), groups the accepted ones into batches
(``batch_size`` points, or whatever arrived within ``flush_interval_ms`` of the
batch's first message), writes each batch synchronously and only then asks the
consumer to acknowledge its messages. Validating here rather than in paho's
network thread keeps that thread, the bridge's bottleneck, to receiving; metrics
are counted per batch for the same reason. While the database is down or
refusing, the batch is retried with exponential backoff and nothing is
acknowledged; the broker stops sending once ``receive_maximum`` messages are
unacknowledged, which is the back-pressure.

A batch the database rejects as bad data (HTTP 400/422/413) is split in halves
until the offending message is alone; that message is dead-lettered with the
database's reason and the rest are written. A duplicate point (same series and
time) overwrites itself in InfluxDB, so a write retried after an unclear failure
is harmless.
"""

from __future__ import annotations

import collections
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from agent.bridge.consumer import BridgeSetupError, Inbound, read_secret
from agent.bridge.liveness import Liveness
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Reason, Rejected, Validator
from agent.config.bridge import BridgeSettings, Influx

log = logging.getLogger(__name__)

#: Statuses that say "this data is wrong": retrying the same bytes cannot help.
_DATA_REJECTED = {400, 413, 422}
#: After a stop is requested, keep trying to write what was received this long.
STOP_GRACE_S = 10.0


class WriteFailed(Exception):
    """A write did not succeed; ``data_rejected`` says whether the data itself is at fault."""

    def __init__(self, message: str, *, data_rejected: bool) -> None:
        super().__init__(message)
        self.data_rejected = data_rejected


@dataclass(frozen=True)
class InfluxTarget:
    """The write endpoint; a function of the config, so tests can build one directly."""

    url: str
    org: str
    bucket: str
    token: str
    verify_tls: bool = True
    ca: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_config(cls, influx: Influx) -> InfluxTarget:
        token = influx.token
        if influx.token_file is not None:
            token = read_secret(influx.token_file, "influx.token_file")
        return cls(
            url=influx.url,
            org=influx.org,
            bucket=influx.bucket,
            token=token or "",
            verify_tls=influx.verify_tls,
            ca=str(influx.ca) if influx.ca else None,
            timeout_s=influx.timeout_s,
        )


class InfluxWriter:
    """One synchronous write per call; every failure becomes a :class:`WriteFailed`."""

    def __init__(self, target: InfluxTarget) -> None:
        self.target = target
        try:
            self._client = InfluxDBClient(
                url=target.url,
                token=target.token,
                org=target.org,
                verify_ssl=target.verify_tls,
                ssl_ca_cert=target.ca,
                timeout=int(target.timeout_s * 1000),
            )
        except (OSError, ValueError) as exc:
            raise BridgeSetupError(f"influx: {exc}") from None
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        try:
            self._api.write(
                bucket=self.target.bucket,
                org=self.target.org,
                record=body,
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            detail = (exc.body or exc.reason or "").strip()
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            raise WriteFailed(
                f"HTTP {status}: {str(detail)[:300]}", data_rejected=status in _DATA_REJECTED
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteFailed(f"{type(exc).__name__}: {exc}", data_rejected=False) from None

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


#: Messages the worker validates at a time while a batch fills.
CHUNK = 500
#: put() wakes the worker when the queue reaches this many messages; "never" until it waits.
_NOT_WAITING = sys.maxsize


class Writer(threading.Thread):
    """The worker thread between the consumer's ``put`` and its ``ack``.

    Messages arrive unvalidated (``lines`` None) and are checked by ``validator``
    as they are taken into a batch; messages that already carry lines are taken
    as they are.
    """

    def __init__(
        self,
        settings: BridgeSettings,
        metrics: BridgeMetrics,
        write: Callable[[bytes], None],
        ack: Callable[[list[Inbound]], int],
        reject: Callable[[Inbound, Rejected], None],
        validator: Validator | None = None,
        liveness: Liveness | None = None,
        written: Callable[[list[Inbound]], None] | None = None,
    ) -> None:
        super().__init__(name="bridge-writer", daemon=True)
        #: Told of every batch written and acknowledged (the ledger's verification).
        self._written = written
        self.settings = settings
        self.metrics = metrics
        self._write = write
        self._ack = ack
        self._reject = reject
        self._validator = validator
        self._liveness = liveness
        self._queue: collections.deque[Inbound] = collections.deque()
        self._cond = threading.Condition()
        self._wake_at = _NOT_WAITING
        self._in_hand = 0  # taken from the queue, not yet acknowledged or dropped
        self._stop_at: float | None = None
        metrics.pending.set_function(lambda: self.pending)

    @property
    def pending(self) -> int:
        """Received and not yet written and acknowledged, or handed over as rejected."""
        return len(self._queue) + self._in_hand

    # --- producer side (paho's thread) ------------------------------------------------------

    def put(self, item: Inbound) -> None:
        queue = self._queue
        queue.append(item)  # a deque append needs no lock; waking the worker does
        # Wake the worker only when it has something new to decide: a first message
        # (start the flush clock) or enough for its batch. Not once per message. No
        # wake-up is lost: _take arms _wake_at before it looks at the queue, and
        # notify() here waits for the lock, which the worker holds until it waits.
        if len(queue) >= self._wake_at:
            with self._cond:
                self._wake_at = _NOT_WAITING
                self._cond.notify()

    def stop(self) -> None:
        """Write what has arrived (for up to STOP_GRACE_S), then end."""
        with self._cond:
            self._stop_at = time.monotonic() + STOP_GRACE_S
            self._cond.notify()

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def _give_up(self) -> bool:
        return self._stop_at is not None and time.monotonic() >= self._stop_at

    # --- the worker -------------------------------------------------------------------------

    def run(self) -> None:
        while not self._give_up():  # past the grace: what is left comes back at the next start
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._write_batch(batch)

    def _take(self, wanted: int, deadline: float | None) -> list[Inbound] | None:
        """Up to ``wanted`` messages; the first wait is open-ended, later ones end at ``deadline``.

        None: stopping with nothing queued, or the deadline passed with nothing queued.
        """
        with self._cond:
            if deadline is None:
                self._wake_at = 1
                while not self._queue:
                    if self.stopping:
                        return None
                    self._cond.wait()
                    self._wake_at = 1
            else:
                # Wake for a chunk, not the whole batch: validating while the batch fills
                # leaves only the last chunk's work between the last message and the write.
                need = min(wanted, CHUNK)
                self._wake_at = need
                while len(self._queue) < need and not self.stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    self._wake_at = need
                if not self._queue:
                    self._wake_at = _NOT_WAITING
                    return None
            self._wake_at = _NOT_WAITING
            queue = self._queue
            chunk = [queue.popleft() for _ in range(min(wanted, len(queue)))]
            self._in_hand += len(chunk)
            return chunk

    def _next_batch(self) -> list[Inbound] | None:
        """Up to batch_size points; waits at most flush_interval after the first message.

        Each message has at least one point, so asking the queue for the points still
        missing never takes too many; a message with several points can end the batch
        early, and what it leaves goes back to the front of the queue, validated.
        """
        limit = self.settings.batch_size
        batch: list[Inbound] = []
        points = 0
        deadline: float | None = None
        while points < limit:
            chunk = self._take(limit - points, deadline)
            if chunk is None:
                return batch if deadline is not None else None
            if deadline is None:
                deadline = chunk[0].received + self.settings.flush_interval_ms / 1000.0
            accepted = self._validate(chunk)
            for n, item in enumerate(accepted):
                batch.append(item)
                points += len(item.lines or ())
                if points >= limit:
                    self._give_back(accepted[n + 1 :])
                    break
        return batch

    def _validate(self, chunk: list[Inbound]) -> list[Inbound]:
        """Accepted messages get their lines; rejected ones are dead-lettered."""
        validator = self._validator
        fresh = 0
        accepted = []
        now_ms = time.time_ns() // 1_000_000
        for item in chunk:
            if item.lines is None:
                fresh += 1
                if validator is None:
                    raise TypeError("an unvalidated message reached a writer without a validator")
                verdict = validator.check(item.topic, item.payload, now_ms)
                if isinstance(verdict, Rejected):
                    self._reject(item, verdict)
                    self._in_hand -= 1
                    continue
                item.lines = verdict.lines
                item.ts_ms = verdict.ts_ms
                item.measurement = verdict.ref.kind.spec.measurement
            accepted.append(item)
        if fresh:
            self.metrics.received.inc(fresh)
        return accepted

    def _give_back(self, items: list[Inbound]) -> None:
        if not items:
            return
        with self._cond:
            self._queue.extendleft(reversed(items))
            self._in_hand -= len(items)

    def _write_batch(self, batch: list[Inbound]) -> None:
        body = "\n".join([line for item in batch for line in item.lines or ()]).encode()
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                if body:
                    self._write(body)
            except WriteFailed as exc:
                if exc.data_rejected:
                    self.metrics.batches.labels("rejected").inc()
                    self._bisect(batch, str(exc))
                    return
                self.metrics.batches.labels("failed").inc()
                if self._give_up():
                    log.error("write failed at shutdown, left for redelivery: %s", exc)
                    self._drop(batch)
                    return
                self.metrics.retries.inc()
                log.warning(
                    "write of %d messages failed (%s); retry in %.1f s", len(batch), exc, delay
                )
                if self._liveness is not None:
                    self._liveness.retried()
                self._pause(delay)
                delay = min(delay * 2, self.settings.retry_max_s) * random.uniform(0.8, 1.0)
                continue
            self.metrics.write_seconds.observe(time.monotonic() - started)
            self.metrics.batches.labels("ok").inc()
            self._done(batch)
            return

    def _pause(self, delay: float) -> None:
        """Sleep ``delay`` before a retry, cut short by a stop to the end of its grace."""
        end = time.monotonic() + delay
        with self._cond:
            while True:
                limit = end if self._stop_at is None else min(end, self._stop_at)
                left = limit - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _bisect(self, batch: list[Inbound], reason: str) -> None:
        if len(batch) == 1:
            item = batch[0]
            self._reject(item, Rejected(Reason.DB_REJECTED, f"database refused: {reason}"))
            self._in_hand -= 1
            return
        half = len(batch) // 2
        self._write_batch(batch[:half])
        self._write_batch(batch[half:])

    def _done(self, batch: list[Inbound]) -> None:
        counts: dict[str, int] = {}
        for item in batch:
            counts[item.measurement] = counts.get(item.measurement, 0) + len(item.lines or ())
        for measurement, n in counts.items():
            self.metrics.points.labels(measurement).inc(n)
        self.metrics.messages_written.inc(len(batch))
        self._ack(batch)
        if self._written is not None:
            self._written(batch)
        now = time.monotonic()
        self.metrics.ack_latency.observe_many([now - item.received for item in batch])
        self._in_hand -= len(batch)
        newest = max(item.ts_ms for item in batch)
        self.metrics.lag.set(max(0.0, time.time() - newest / 1000.0))
        if self._liveness is not None:
            self._liveness.progressed()

    def _drop(self, batch: list[Inbound]) -> None:
        self._in_hand -= len(batch)
