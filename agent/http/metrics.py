"""Prometheus metrics of one running agent, in a registry of its own.

Two kinds of series, for two reasons:

* Things that happen (a poll and how long it took, a failed poll and why, one
  pass of the core) are counted *when they happen*, by the runtime calling
  :meth:`AgentMetrics.poll` and :meth:`AgentMetrics.core_scan`. A histogram
  cannot be rebuilt later from the runtime's bounded latency lists.
* Levels (buffer depth, age of the oldest buffered record, messages published,
  the MQTT link) are *read at scrape time* from the agent's status snapshot
  (:class:`agent.status.AgentStatus`, the one the page shows) by a custom
  collector, so there is one source of truth and nothing to keep in step.

No module-level state: every :class:`AgentMetrics` owns its
:class:`~prometheus_client.CollectorRegistry`, so two agents in one process (the
tests) never share or collide on series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from agent.status import (
    OK,
    AgentStatus,
    AlarmCounts,
    AlarmStatus,
    DeviceStatus,
    LedgerStatus,
    LinkStatus,
    OutboxStatus,
    StorageStatus,
)

#: Prometheus text exposition format 0.0.4 (what every scraper accepts).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A Modbus poll: a few ms on TCP, tens to hundreds of ms on a 9600-baud RS-485 line,
# up to the timeout (and its retries) when a meter does not answer.
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# One pass of the core for one poll: tens of microseconds when nothing closes, a few
# ms when an interval closes and the site windows are recomputed.
CORE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


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

    def watch(self, status: Callable[[], AgentStatus]) -> None:
        """Read gauge levels from ``status()`` on every scrape (see :class:`LevelCollector`)."""
        if self._levels is not None:
            self.registry.unregister(self._levels)  # one source of levels at a time
        self._levels = LevelCollector(status)
        self.registry.register(self._levels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LevelCollector(Collector):
    """Gauges and counters the runtime already keeps, read when Prometheus scrapes.

    ``status()`` is the agent's latest snapshot (the live page's, at most a tick
    old); a level that is unknown (free space of an unreadable disk, the age of a
    device never read) is simply not exported.
    """

    def __init__(self, status: Callable[[], AgentStatus]) -> None:
        self._status = status

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until read; keeps registration from calling collect()

    def collect(self) -> Iterable[Metric]:
        s = self._status()
        yield from _buffer(s.outbox, time.time())
        yield from _storage(s.storage)
        yield from _mqtt(s.outbox, s.link)
        yield from _devices(s.devices)
        if s.ledger is not None:
            yield from _ledger(s.ledger)
        yield from _alarms(s.alarms, s.alarm_counts)
        yield _gauge(
            "energy_agent_uptime_seconds", "Seconds since the agent started", s.agent.uptime_s
        )


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=float(value))


def _per_kind(name: str, doc: str, counts: Mapping[str, int]) -> Metric:
    fam = CounterMetricFamily(name, doc, labels=["kind"])
    for kind, n in sorted(counts.items()):
        fam.add_metric([kind], float(n))
    return fam


def _ledger(ledger: LedgerStatus) -> Iterable[Metric]:
    h = ledger.history
    if h.used_bytes is not None:
        yield _gauge(
            "energy_agent_history_bytes",
            "Bytes the history of records uses (measured hourly)",
            h.used_bytes,
        )
    yield _gauge(
        "energy_agent_history_max_bytes",
        "history.max_mb: at it the oldest days are pruned (warning from 80 %)",
        h.max_bytes,
    )
    yield _gauge(
        "energy_agent_history_pending_records",
        "Records held in memory because the disk refuses the history's writes",
        h.pending,
    )
    yield _counter(
        "energy_agent_history_lost_records",
        "Records published but dropped from the history's memory (the disk refused for too long)",
        h.lost,
    )
    yield _gauge(
        "energy_agent_history_warning",
        "1 while the history nears its size bound or cannot hold retention_months",
        0 if h.warning is None else 1,
    )
    yield _gauge(
        "energy_agent_ledger_on",
        "1 while the ledger seals periods, 0 when it is off (no key, no cryptography)",
        1 if ledger.on else 0,
    )
    if ledger.seq is not None:
        yield _gauge("energy_agent_ledger_seq", "seq of the newest ledger entry", ledger.seq)


def _buffer(ob: OutboxStatus, now: float) -> Iterable[Metric]:
    yield _gauge("energy_agent_buffer_depth", "Messages waiting in the outbox", ob.depth)
    yield _gauge("energy_agent_buffer_bytes", "Payload bytes waiting in the outbox", ob.bytes)
    yield _gauge(
        "energy_agent_buffer_oldest_age_seconds",
        "Age of the oldest record in the outbox (0 when it is empty)",
        0.0 if ob.oldest_ms is None else max(0.0, now - ob.oldest_ms / 1000),
    )
    yield _per_kind(
        "energy_agent_buffer_dropped",
        "Messages dropped because the outbox was full, per kind",
        ob.dropped,
    )


def _storage(st: StorageStatus) -> Iterable[Metric]:
    yield _gauge(
        "energy_agent_storage_ok",
        "1 when the outbox can write to state_dir, 0 while the disk refuses (full, failing)",
        1 if st.ok else 0,
    )
    yield _counter(
        "energy_agent_storage_failures",
        "Outbox write transactions the disk refused",
        st.failures,
    )
    if st.free_bytes is not None:
        yield _gauge(
            "energy_agent_storage_free_bytes",
            "Free space in state_dir (absent when unknown)",
            st.free_bytes,
        )
    yield _gauge(
        "energy_agent_unstored_messages",
        "Messages held in memory only: the disk refused them and the broker has not "
        "acknowledged them yet",
        st.unstored,
    )
    yield _per_kind(
        "energy_agent_messages_lost",
        "Messages neither stored nor sent: memory was full while the disk refused "
        "writes, or the agent exited so, per kind",
        st.lost,
    )


def _mqtt(ob: OutboxStatus, link: LinkStatus) -> Iterable[Metric]:
    yield _counter(
        "energy_agent_messages_published",
        "Messages handed to the MQTT client (including retries)",
        ob.published,
    )
    yield _counter(
        "energy_agent_messages_acked", "Messages the broker acknowledged (QoS 1)", ob.acked
    )
    yield _counter("energy_agent_messages_refused", "Messages the broker refused", ob.refused)
    yield _gauge(
        "energy_agent_mqtt_connected", "1 when the MQTT link is up", 1 if link.connected else 0
    )
    yield _counter(
        "energy_agent_mqtt_disconnects", "Times the MQTT link went down", link.disconnects
    )


def _alarms(alarms: Sequence[AlarmStatus], counts: AlarmCounts) -> Iterable[Metric]:
    yield _gauge("energy_agent_alarms_raised", "Alarms raised now (README, Alarms)", len(alarms))
    changes = CounterMetricFamily(
        "energy_agent_alarm_changes", "Alarms raised and cleared since the start", labels=["state"]
    )
    changes.add_metric(["raised"], counts.raised)
    changes.add_metric(["cleared"], counts.cleared)
    yield changes
    webhook = CounterMetricFamily(
        "energy_agent_alarm_webhook",
        "Alarm changes POSTed to the webhook: sent, given up after its attempts, dropped "
        "from a full queue",
        labels=["outcome"],
    )
    for outcome, n in (
        ("sent", counts.webhook_sent),
        ("failed", counts.webhook_failed),
        ("dropped", counts.webhook_dropped),
    ):
        webhook.add_metric([outcome], n)
    yield webhook
    each = GaugeMetricFamily(
        "energy_agent_alarm_raised",
        "1 for each alarm raised now, by rule, condition and subject",
        labels=["rule", "condition", "subject"],
    )
    for a in alarms:
        each.add_metric([a.rule, a.condition, a.subject], 1.0)
    yield each


def _devices(devices: Iterable[DeviceStatus]) -> Iterable[Metric]:
    up = GaugeMetricFamily(
        "energy_agent_device_up",
        "1 when the device's last poll succeeded, 0 on error or before the first",
        labels=["device"],
    )
    age = GaugeMetricFamily(
        "energy_agent_device_last_ok_age_seconds",
        "Seconds since the device's last good poll (absent before the first)",
        labels=["device"],
    )
    for d in devices:
        up.add_metric([d.id], 1.0 if d.state == OK else 0.0)
        if d.age_s is not None:
            age.add_metric([d.id], d.age_s)
    yield up
    yield age
