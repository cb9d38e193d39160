"""The bridge's Prometheus metrics, in a registry of its own (no process-global state).

Names start with ``energy_bridge_``. Reject reasons are the fixed set of
:class:`agent.bridge.validate.Reason`, so a hostile publisher cannot blow up the
label cardinality.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus_client writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class BatchHistogram:
    """A Prometheus histogram fed a whole batch of observations at a time.

    prometheus_client's Histogram takes one value per call, with a lock and a scan
    of the buckets each time: for the per-message acknowledgement latency that was
    a noticeable share of the bridge's CPU. Here a batch costs one sort (its values
    are nearly sorted already) and one binary search per bucket.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = (*sorted(buckets), math.inf)
        self._counts = [0] * len(self._bounds)  # cumulative, like the exposition format
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        ordered = sorted(values)
        if not ordered:
            return
        total = math.fsum(ordered)
        with self._lock:
            for i, bound in enumerate(self._bounds):
                self._counts[i] += bisect.bisect_right(ordered, bound)
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[(_le(b), c) for b, c in zip(self._bounds, counts, strict=True)],
            sum_value=total,
        )

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._flow(self.registry)
        self._ledger(self.registry)

    def _flow(self, r: CollectorRegistry) -> None:
        """The message flow: received, written, acknowledged, rejected, and how fast."""
        self.received = Counter(
            "energy_bridge_messages_received", "MQTT messages received", registry=r
        )
        self.points = Counter(
            "energy_bridge_points_written",
            "points InfluxDB accepted, by measurement",
            ["measurement"],
            registry=r,
        )
        self.messages_written = Counter(
            "energy_bridge_messages_written", "messages whose points InfluxDB accepted", registry=r
        )
        self.batches = Counter(
            "energy_bridge_batches", "write requests, by outcome", ["outcome"], registry=r
        )
        self.retries = Counter(
            "energy_bridge_write_retries", "writes retried after a failure", registry=r
        )
        self.rejects = Counter(
            "energy_bridge_rejects", "messages dead-lettered, by reason", ["reason"], registry=r
        )
        self.acks = Counter("energy_bridge_acks", "MQTT acknowledgements sent", registry=r)
        self.stale_acks = Counter(
            "energy_bridge_acks_skipped",
            "acknowledgements not sent because the connection they belonged to was gone "
            "(the broker redelivers; the rewrite is idempotent)",
            registry=r,
        )
        self.pending = Gauge(
            "energy_bridge_pending_messages", "received, not yet acknowledged", registry=r
        )
        self.connected = Gauge("energy_bridge_mqtt_connected", "1 while connected", registry=r)
        self.subscribed = Gauge(
            "energy_bridge_subscribed", "1 once the broker granted the subscriptions", registry=r
        )
        self.last_progress = Gauge(
            "energy_bridge_last_progress_timestamp_seconds",
            "when a batch was last written and acknowledged or a dead letter last accepted "
            "by the broker (Unix time; the start until then): alert when it lags behind "
            "while messages are pending",
            registry=r,
        )
        self.dead_letters_refused = Counter(
            "energy_bridge_dead_letters_refused",
            "dead letters the broker refused (e.g. its ACL): the original was acknowledged "
            "anyway, the bridge's log is the only record",
            registry=r,
        )
        self.lag = Gauge(
            "energy_bridge_lag_seconds",
            "now minus the payload ts of the newest record written",
            registry=r,
        )
        self.write_seconds = Histogram(
            "energy_bridge_write_seconds",
            "duration of successful write requests",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.ack_latency = BatchHistogram(
            "energy_bridge_ack_latency_seconds",
            "from receiving a message to acknowledging it",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )

    def _ledger(self, r: CollectorRegistry) -> None:
        """The gateways' ledgers as verified here (docs/ledger.md, "At the bridge")."""
        self.ledger_entries = Counter(
            "energy_bridge_ledger_entries",
            "ledger entries by outcome: verified, failed, untrusted (no key in ledger.trust), "
            "skipped (the verification queue was full)",
            ["result"],
            registry=r,
        )
        self.ledger_failures = Counter(
            "energy_bridge_ledger_failures",
            "ledger entries that failed verification, by first reason",
            ["reason"],
            registry=r,
        )
        self.ledger_records = Counter(
            "energy_bridge_ledger_records_checked",
            "energy records read back from the database and hashed for ledger entries",
            registry=r,
        )
        self.ledger_seconds = Counter(
            "energy_bridge_ledger_verify_seconds",
            "time spent verifying ledger entries (reading back and hashing)",
            registry=r,
        )
        self.ledger_pending = Gauge(
            "energy_bridge_ledger_pending", "ledger entries waiting for verification", registry=r
        )
        self.ledger_verified = Gauge(
            "energy_bridge_ledger_verified",
            "1 if the newest verdict on a gateway's ledger was verified, 0 if it failed",
            ["site", "gateway"],
            registry=r,
        )
        self.ledger_seq = Gauge(
            "energy_bridge_ledger_last_seq",
            "seq of the newest ledger entry of a gateway with a verdict",
            ["site", "gateway"],
            registry=r,
        )

    def serve(self, listen: str) -> None:
        """Serve ``/metrics`` on HOST:PORT from a daemon thread."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
