"""Prometheus metrics of one running agent, in a registry of its own.

Two kinds of series, for two reasons:

* Things that happen (a poll and how long it took, a failed poll and why, one
  pass of the core) are counted *when they happen*, by the runtime calling
  :meth:`AgentMetrics.poll` and :meth:`AgentMetrics.core_scan`. A histogram
  cannot be rebuilt later from the runtime's bounded latency lists.
* Levels (buffer depth, age of the oldest buffered record, messages published,
  the MQTT link) are *read at scrape time* from the runtime's own counters by
  a custom collector, so there is one source of truth and nothing to keep in
  step.

No module-level state: every :class:`AgentMetrics` owns its
:class:`~prometheus_client.CollectorRegistry`, so two agents in one process (the
tests) never share or collide on series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

#: Prometheus text exposition format 0.0.4 (what every scraper accepts).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A Modbus poll: a few ms on TCP, tens to hundreds of ms on a 9600-baud RS-485 line,
# up to the timeout (and its retries) when a meter does not answer.
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# One pass of the core for one poll: tens of microseconds when nothing closes, a few
# ms when an interval closes and the site windows are recomputed.
CORE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class Levels(Protocol):
    """What the scrape-time collector reads; the runtime's :class:`Agent` has it all."""

    def metric_levels(self) -> Mapping[str, object]: ...


class AgentMetrics:
    """The agent's /metrics: event series fed by the runtime plus levels read on scrape."""

    def __init__(self, device_bus: Mapping[str, str]) -> None:
        self.registry = CollectorRegistry()
        self._bus_of = dict(device_bus)
        self._levels: LevelCollector | None = None
        self.poll_seconds = Histogram(
            "energy_agent_poll_seconds",
            "Duration of one device poll (all its Modbus requests), per bus",
            ["bus"],
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "energy_agent_poll_errors",
            "Failed polls per device and reason (timeout, connection, malformed, busy, "
            "exception, config, transport)",
            ["device", "reason"],
            registry=self.registry,
        )
        self.core_seconds = Histogram(
            "energy_agent_core_scan_seconds",
            "Time in the core (SiteCore.feed) per successful poll",
            buckets=CORE_BUCKETS,
            registry=self.registry,
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds (Linux /proc).
        ProcessCollector(registry=self.registry)
        # A bus with no poll yet still shows up; the children are looked up once, not
        # per poll (a label lookup takes a lock and a dict of tuples).
        self._poll_seconds_of = {
            bus: self.poll_seconds.labels(bus=bus) for bus in sorted(set(self._bus_of.values()))
        }

    # --- fed by the runtime as things happen ---------------------------------------------

    def poll(self, device: str, seconds: float, reason: str | None) -> None:
        """One finished poll of ``device``; ``reason`` is the error's reason, if it failed."""
        child = self._poll_seconds_of.get(self._bus_of.get(device, ""))
        if child is None:
            child = self.poll_seconds.labels(bus=self._bus_of.get(device, "unknown"))
        child.observe(seconds)
        if reason is not None:
            self.poll_errors.labels(device=device, reason=reason or "unknown").inc()

    def core_scan(self, seconds: float) -> None:
        self.core_seconds.observe(seconds)

    # --- read at scrape time -------------------------------------------------------------

    def watch(self, levels: Callable[[], Mapping[str, object]]) -> None:
        """Read gauge levels from ``levels()`` on every scrape (see :class:`LevelCollector`)."""
        if self._levels is not None:
            self.registry.unregister(self._levels)  # one source of levels at a time
        self._levels = LevelCollector(levels)
        self.registry.register(self._levels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LevelCollector(Collector):
    """Gauges and counters the runtime already keeps, read when Prometheus scrapes.

    ``levels()`` returns plain numbers (see :func:`agent.http.state.metric_levels`);
    a missing key is simply not exported, so a half-started agent still answers.
    """

    def __init__(self, levels: Callable[[], Mapping[str, object]]) -> None:
        self._levels = levels

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until read; keeps registration from calling collect()

    def collect(self) -> Iterable[Metric]:
        lv = self._levels()
        now = time.time()

        def gauge(name: str, doc: str, key: str) -> Iterable[Metric]:
            v = lv.get(key)
            if isinstance(v, int | float):
                yield GaugeMetricFamily(name, doc, value=float(v))

        def counter(name: str, doc: str, key: str) -> Iterable[Metric]:
            v = lv.get(key)
            if isinstance(v, int | float):
                yield CounterMetricFamily(name, doc, value=float(v))

        yield from gauge(
            "energy_agent_buffer_depth", "Messages waiting in the outbox", "buffer_depth"
        )
        yield from gauge(
            "energy_agent_buffer_bytes", "Payload bytes waiting in the outbox", "buffer_bytes"
        )
        oldest = lv.get("buffer_oldest_ms")
        age = GaugeMetricFamily(
            "energy_agent_buffer_oldest_age_seconds",
            "Age of the oldest record in the outbox (0 when it is empty)",
        )
        age.add_metric([], max(0.0, now - oldest / 1000) if isinstance(oldest, int) else 0.0)
        yield age
        dropped = lv.get("buffer_dropped")
        if isinstance(dropped, Mapping):
            fam = CounterMetricFamily(
                "energy_agent_buffer_dropped",
                "Messages dropped because the outbox was full, per kind",
                labels=["kind"],
            )
            for kind, n in sorted(dropped.items()):
                fam.add_metric([str(kind)], float(n))
            yield fam
        yield from gauge(
            "energy_agent_storage_ok",
            "1 when the outbox can write to state_dir, 0 while the disk refuses (full, failing)",
            "storage_ok",
        )
        yield from counter(
            "energy_agent_storage_failures",
            "Outbox write transactions the disk refused",
            "storage_failures",
        )
        yield from gauge(
            "energy_agent_storage_free_bytes",
            "Free space in state_dir (absent when unknown)",
            "storage_free_bytes",
        )
        yield from gauge(
            "energy_agent_unstored_messages",
            "Messages held in memory only: the disk refused them and the broker has not "
            "acknowledged them yet",
            "unstored",
        )
        lost = lv.get("lost")
        if isinstance(lost, Mapping):
            lost_fam = CounterMetricFamily(
                "energy_agent_messages_lost",
                "Messages neither stored nor sent: memory was full while the disk refused "
                "writes, or the agent exited so, per kind",
                labels=["kind"],
            )
            for kind, n in sorted(lost.items()):
                lost_fam.add_metric([str(kind)], float(n))
            yield lost_fam
        yield from counter(
            "energy_agent_messages_published",
            "Messages handed to the MQTT client (including retries)",
            "published",
        )
        yield from counter(
            "energy_agent_messages_acked", "Messages the broker acknowledged (QoS 1)", "acked"
        )
        yield from counter(
            "energy_agent_messages_refused", "Messages the broker refused", "refused"
        )
        yield from gauge(
            "energy_agent_mqtt_connected", "1 when the MQTT link is up", "mqtt_connected"
        )
        yield from counter(
            "energy_agent_mqtt_disconnects", "Times the MQTT link went down", "mqtt_disconnects"
        )
        up = lv.get("device_up")
        if isinstance(up, Mapping):
            up_fam = GaugeMetricFamily(
                "energy_agent_device_up",
                "1 when the device's last poll succeeded, 0 on error or before the first",
                labels=["device"],
            )
            for dev, ok in up.items():
                up_fam.add_metric([str(dev)], 1.0 if ok else 0.0)
            yield up_fam
        ages = lv.get("device_age_s")
        if isinstance(ages, Mapping):
            age_fam = GaugeMetricFamily(
                "energy_agent_device_last_ok_age_seconds",
                "Seconds since the device's last good poll (absent before the first)",
                labels=["device"],
            )
            for dev, a in ages.items():
                if isinstance(a, int | float):
                    age_fam.add_metric([str(dev)], float(a))
            yield age_fam
        yield from gauge(
            "energy_agent_uptime_seconds", "Seconds since the agent started", "uptime_s"
        )
        yield from gauge(
            "energy_agent_history_bytes",
            "Bytes the history of records uses (measured hourly; absent before the first)",
            "history_bytes",
        )
        yield from gauge(
            "energy_agent_history_max_bytes",
            "history.max_mb: at it the oldest days are pruned (warning from 80 %)",
            "history_max_bytes",
        )
        yield from gauge(
            "energy_agent_history_pending_records",
            "Records held in memory because the disk refuses the history's writes",
            "history_pending",
        )
        yield from counter(
            "energy_agent_history_lost_records",
            "Records published but dropped from the history's memory (the disk refused "
            "writes for too long)",
            "history_lost",
        )
        yield from gauge(
            "energy_agent_ledger_on",
            "1 while the ledger seals periods, 0 when it is off (no key, no cryptography)",
            "ledger_on",
        )
        yield from gauge(
            "energy_agent_ledger_seq", "seq of the newest ledger entry sealed", "ledger_seq"
        )
