"""The running agent's state as plain, typed values: what every view renders.

The runtime builds one :class:`AgentStatus` per look (``Agent.status(now_ms)``,
see :mod:`agent.runtime.status`); the live page's ``/api/state``, ``/metrics``,
``energy-agent status`` (through that JSON) and the demo's table all render
from it, so a number or a problem can only be computed, and wrong, in one
place. Views never reach into the runtime's parts (the core, the MQTT link,
the outbox, the pump), and this module imports nothing but the standard
library, so any layer can depend on it without depending on the runtime.

Numbers are as measured (no rounding: that is a view's choice); ``None`` means
unknown, never NaN. Everything is frozen: a view may keep a snapshot (the
page's sparklines do) and it stays what it was.

Adding a section (history available, alarms raised, a ledger's state): a
frozen dataclass here, a field of :class:`AgentStatus` with a default so that
older builders stay valid, its builder and its problems in
:class:`agent.runtime.status.StatusSource` (the health is computed there, once),
and its rendering in :mod:`agent.http.state` (a new key of ``/api/state``) and
:mod:`agent.http.metrics` if it has levels worth a gauge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: ``DeviceStatus.state`` before a device's first poll, after a good one, after a failed one.
UNKNOWN, OK, ERROR = "unknown", "ok", "error"


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """Who is running: identity, version, since when, and how the core computes."""

    version: str
    site: str
    site_name: str
    gateway: str
    #: ``{prefix}/{site}/{gateway}``: every topic the agent publishes starts so.
    topic_base: str
    started_ms: int
    uptime_s: float
    #: "numba", or "python" when the kernels run uncompiled (same numbers, slower).
    core: str
    #: Why the core runs without numba ("" when it does not).
    core_reason: str = ""
    #: The site's IANA zone: "today" is counted in it, and every view shows times in it.
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class MainReading:
    """The counter a device is accounted by (energy, gas volume, parts) and its last value."""

    quantity: str
    value: float | None
    unit: str


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One configured device: where it is, how its polls go, what it read last."""

    id: str
    bus: str
    unit: int
    #: "electricity" | "gas" | "production"
    kind: str
    parent: str | None
    #: The profile's name, or "inline registers".
    meter: str
    interval_s: float
    #: :data:`UNKNOWN` (no poll yet) | :data:`OK` | :data:`ERROR`
    state: str
    error: str | None
    #: The failure's class (timeout, connection, ...), while failing.
    reason: str | None
    last_ok_ms: int | None
    #: Seconds since the last good poll, at the snapshot's time.
    age_s: float | None
    polls: int
    failures: int
    #: Active power of an electricity meter's last good poll (None for gas, parts).
    power_kw: float | None
    main: MainReading
    #: Every quantity of the last good poll (None: the meter's value was implausible).
    values: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def root_electricity(self) -> bool:
        """A meter the site's total power is the sum of (children are inside their parent)."""
        return self.kind == "electricity" and self.parent is None


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The MQTT link to the broker."""

    connected: bool
    #: ``host:port``, or None when the config has no broker.
    broker: str | None
    last_error: str | None
    connects: int
    disconnects: int


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """What waits to be sent, and what the pump has sent."""

    depth: int
    bytes: int
    oldest_ms: int | None
    oldest_age_s: float | None
    #: Messages dropped because the outbox was full, per kind ("measurement", ...).
    dropped: Mapping[str, int]
    #: Clearly more waiting than ten seconds ago (the runtime keeps the trend).
    growing: bool
    #: Waiting messages are a problem: the link is down, the depth grows, or they are old.
    alarm: bool
    published: int
    acked: int
    refused: int


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """The outbox's disk: a fault is a problem of its own, not a buffer that grows.

    A full ``state_dir`` with the broker up leaves the buffer empty (the memory
    lane is published and forgotten), so without this nothing would look wrong.
    """

    ok: bool
    error: str | None
    since_ms: int | None
    directory: str | None
    free_bytes: int | None
    #: Messages held in memory only: refused by the disk, not acknowledged yet.
    unstored: int
    unstored_records: int
    unstored_bytes: int
    memory_max_bytes: int
    #: Write transactions the disk refused since the start.
    failures: int
    #: Messages neither stored nor sent, per kind.
    lost: Mapping[str, int]

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One window of the latest intensity record: the site's energy, CO2 and output."""

    #: "15m", "1h", "today", ...
    window: str
    #: The record's time (end of its interval, Unix ms).
    ts: int | None
    energy_kwh: float | None
    co2_kg: float | None
    output_units: float | None
    kwh_per_unit: float | None
    kgco2_per_unit: float | None
    intensity_g_per_kwh: float | None
    tce: float | None


@dataclass(frozen=True, slots=True)
class MeterDemand:
    """A root electricity meter's 15-minute demand now and its peak this month."""

    device: str
    #: Mean power over the last closed demand period; None before a slot closed.
    now_kw: float | None
    peak_kw: float | None
    #: End of the peak's period (Unix ms).
    peak_ts: int | None
    #: Minutes of the demand window the meter has data for (since its first reading);
    #: below ``DemandStatus.period_min`` the window is warming up and ``now_kw`` is
    #: an average over fewer minutes than the period. None: not known (full).
    window_min: int | None = None


@dataclass(frozen=True, slots=True)
class DemandStatus:
    period_min: int
    #: The sum of the meters' demand now; None before any slot closed. A site peak is
    #: not the sum of meter peaks (they happen at different times), so none is given.
    now_kw: float | None
    meters: tuple[MeterDemand, ...]


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """The site's next intensity record, held because meters have not closed its interval.

    The core publishes a site record once every meter with data has closed the
    interval, or after ``core.site_hold_s``; until then a view must say which
    meters it waits for, not that there is no record.
    """

    #: End of the interval the record is for (Unix ms).
    end_ms: int
    #: The meters that have not closed that interval yet.
    waiting_for: tuple[str, ...]
    #: When the core gives up waiting and publishes without them (Unix ms).
    until_ms: int


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """The site as a whole: power now, the core's latest intensity record, demand."""

    #: Sum of the root electricity meters that answered their last poll.
    power_kw: float | None
    power_meters: int
    #: Every root electricity meter contributed to ``power_kw``.
    power_complete: bool
    #: The 15-minute window of the latest intensity record (the demand period too).
    intensity: WindowFigures | None
    intensity_1h: WindowFigures | None
    today: WindowFigures | None
    demand: DemandStatus
    #: The next site record while late meters hold it (None: nothing held).
    held: HeldRecord | None = None


@dataclass(frozen=True, slots=True)
class HistoryStatus:
    """The gateway's history of records (``state_dir/history.db``, docs/ledger.md)."""

    ok: bool
    #: Why the history cannot be written, while it cannot.
    error: str | None
    path: str
    #: Bytes in use (measured hourly; None before the first measurement).
    used_bytes: int | None
    max_bytes: int
    oldest_ts: int | None
    #: Records with ts at or before this were pruned (age or size); None: none yet.
    pruned_before: int | None
    #: Records held in memory because the disk refuses them.
    pending: int
    #: Records published but dropped from that memory (the disk refused for too long).
    lost: int
    #: A sentence when the history nears its bound or cannot hold its retention.
    warning: str | None


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """The signed ledger over the history: on, or off and why."""

    on: bool
    reason: str | None
    #: The newest entry sealed, and the end of its period.
    seq: int | None
    sealed_through: int | None
    period_s: int
    key_id: str | None
    history: HistoryStatus
    #: Why the last seal failed, until one succeeds.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReportsStatus:
    """The scheduled reports (agent.runtime.reports): who writes them, the last run."""

    schedule: tuple[str, ...]
    #: ``run``: this agent starts them; ``timer``: a timer does (nothing to show here).
    by: str
    next_ms: int | None
    running: bool
    last_started_ms: int | None
    #: The child's exit code (0 written, 3 nothing to write; others failed).
    last_exit: int | None
    #: What it said last (the newest report written, or why it failed).
    last_line: str | None
    #: Why the last run failed, until one succeeds.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """One alarm raised now (README, Alarms): what ``status`` and the page list."""

    #: ``{rule}/{subject}``
    id: str
    rule: str
    #: What the rule watches: offline, power_above, power_below, coverage_below, ...
    condition: str
    #: A device's id, a line's (the rule's id), ``site``, ``outbox`` or ``ledger``.
    subject: str
    state: str
    #: The measured value (kW, %, minutes) and the rule's limit, in the same unit.
    value: float | None
    limit: float | None
    #: When the condition began (Unix ms).
    since_ms: int
    #: The alarm in English; views may say it in their language from ``condition``.
    text: str


@dataclass(frozen=True, slots=True)
class AlarmCounts:
    """Alarm changes since the start, and what became of their webhook POSTs."""

    raised: int = 0
    cleared: int = 0
    webhook_sent: int = 0
    #: Given up after the webhook's attempts.
    webhook_failed: int = 0
    #: Dropped from a full webhook queue.
    webhook_dropped: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    """ "ok", or "degraded" with every problem in words, computed once by the runtime."""

    state: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """The whole picture at ``ts`` (Unix ms)."""

    ts: int
    agent: AgentInfo
    health: Health
    link: LinkStatus
    outbox: OutboxStatus
    storage: StorageStatus
    site: SiteStatus
    devices: tuple[DeviceStatus, ...]
    ledger: LedgerStatus | None = None
    #: The scheduled reports, when ``report.schedule`` lists any.
    reports: ReportsStatus | None = None
    #: The alarms raised now, in the config's rule order.
    alarms: tuple[AlarmStatus, ...] = ()
    alarm_counts: AlarmCounts = AlarmCounts()
