"""The database side: batches of line protocol through influxdb-client's v2 write API.

One worker thread takes accepted messages in arrival order, groups them into
batches (``batch_size`` points, or whatever arrived within ``flush_interval_ms``
of the batch's first message), writes each batch synchronously and only then
asks the consumer to acknowledge its messages. While the database is down or
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
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Reason, Rejected
from agent.config.models import BridgeSettings, Influx

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


class Writer(threading.Thread):
    """The worker thread between the consumer's ``put`` and its ``ack``."""

    def __init__(
        self,
        settings: BridgeSettings,
        metrics: BridgeMetrics,
        write: Callable[[bytes], None],
        ack: Callable[[list[Inbound]], int],
        reject: Callable[[Inbound, Rejected], None],
    ) -> None:
        super().__init__(name="bridge-writer", daemon=True)
        self.settings = settings
        self.metrics = metrics
        self._write = write
        self._ack = ack
        self._reject = reject
        self._queue: collections.deque[Inbound] = collections.deque()
        self._cond = threading.Condition()
        self._points = 0  # points in the queue
        self._stop_at: float | None = None
        self.idle = threading.Event()

    # --- producer side (paho's thread) ------------------------------------------------------

    def put(self, item: Inbound) -> None:
        with self._cond:
            was_empty = not self._queue
            self._queue.append(item)
            self._points += len(item.lines)
            self.metrics.pending.inc()
            # Wake the worker only when it has something new to decide: a first
            # message (start the flush clock) or a full batch. Not once per message.
            if was_empty or self._points >= self.settings.batch_size:
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
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._write_batch(batch)

    def _next_batch(self) -> list[Inbound] | None:
        """Up to batch_size points; waits at most flush_interval after the first message."""
        limit = self.settings.batch_size
        flush_s = self.settings.flush_interval_ms / 1000.0
        with self._cond:
            while not self._queue:
                if self.stopping:
                    return None
                self.idle.set()
                self._cond.wait()
            self.idle.clear()
            deadline = self._queue[0].received + flush_s
            while self._points < limit and not self.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[Inbound] = []
            points = 0
            while self._queue and points < limit:
                item = self._queue.popleft()
                batch.append(item)
                points += len(item.lines)
            self._points -= points
            return batch

    def _write_batch(self, batch: list[Inbound]) -> None:
        body = "\n".join(line for item in batch for line in item.lines).encode()
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
                with self._cond:
                    self._cond.wait_for(self._give_up, timeout=delay)
                delay = min(delay * 2, self.settings.retry_max_s) * random.uniform(0.8, 1.0)
                continue
            self.metrics.write_seconds.observe(time.monotonic() - started)
            self.metrics.batches.labels("ok").inc()
            self._done(batch)
            return

    def _bisect(self, batch: list[Inbound], reason: str) -> None:
        if len(batch) == 1:
            item = batch[0]
            self._reject(item, Rejected(Reason.DB_REJECTED, f"database refused: {reason}"))
            self.metrics.pending.dec()
            return
        half = len(batch) // 2
        self._write_batch(batch[:half])
        self._write_batch(batch[half:])

    def _done(self, batch: list[Inbound]) -> None:
        counts: dict[str, int] = {}
        for item in batch:
            counts[item.measurement] = counts.get(item.measurement, 0) + len(item.lines)
        for measurement, n in counts.items():
            self.metrics.points.labels(measurement).inc(n)
        self.metrics.messages_written.inc(len(batch))
        self._ack(batch)
        now = time.monotonic()
        for item in batch:
            self.metrics.ack_latency.observe(now - item.received)
        self.metrics.pending.dec(len(batch))
        newest = max(item.ts_ms for item in batch)
        self.metrics.lag.set(max(0.0, time.time() - newest / 1000.0))

    def _drop(self, batch: list[Inbound]) -> None:
        self.metrics.pending.dec(len(batch))
