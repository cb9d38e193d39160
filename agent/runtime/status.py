"""The runtime's answer to "how are you?": one :class:`~agent.status.AgentStatus` per look.

Every view (the live page, /metrics, ``energy-agent status``, the demo's table,
systemd's status line) renders what :class:`StatusSource` builds here, so the
runtime's parts (the core, the MQTT link, the outbox, the pump, the devices'
states) are read in this one module and the health, which problems make the
gateway "degraded" and how each is said, is decided once.

Building a snapshot costs a few dict lookups and one small numba call (the
demand sums) and never touches Modbus, so the page builds one a second whatever
the number of viewers.

Choices a plant engineer sees, made here:

* "Intensity now" is the **15-minute** rolling window of the latest intensity
  record (the 1-minute window of a 60 s publish interval jumps with every press
  stroke; 15 min is also the demand period). The 1-hour window is given too.
* "Total power" sums ``active_power_kw`` of the **root** electricity meters that
  answered their last poll, as the site totals do (children are inside their
  parent). ``power_complete`` says whether every root contributed.
* "15-minute demand" is per root electricity meter from the core's demand
  registers: the rolling 15 closed one-minute slots against this month's peak.
  The site figure is the sum of the meters' demand now.
* The buffer is an alarm when messages wait and the link is down, the depth
  grows, or the oldest waits longer than ``BUFFER_STALE_S``. The trend needs
  memory, so the source keeps the last ten seconds of depths.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Protocol

from agent import __version__
from agent.config.models import AgentConfig
from agent.core.channels import DEMAND_SLOTS, SLOT_MS
from agent.core.devices import DeviceInfo
from agent.core.site import SiteCore
from agent.mqttclient import TAKEOVER
from agent.runtime.devices import DeviceState
from agent.runtime.mqtt import MqttLink, Pump
from agent.runtime.outbox import StorageGuard
from agent.runtime.outbox.guard import human_bytes
from agent.status import (
    ERROR,
    OK,
    AgentInfo,
    AgentStatus,
    AlarmCounts,
    AlarmStatus,
    DemandStatus,
    DeviceStatus,
    Health,
    HeldRecord,
    HistoryStatus,
    LedgerStatus,
    LinkStatus,
    MainReading,
    MeterDemand,
    OutboxStatus,
    ReportsStatus,
    SiteStatus,
    StorageStatus,
    WindowFigures,
)
from drivers.profile import DeviceKind
from drivers.quantities import Quantity

INTENSITY_WINDOW = "15m"
#: A buffer older than this is an alarm even while the link is up (the broker is slow).
BUFFER_STALE_S = 120.0
#: Growth over ten seconds that counts as "growing" rather than messages in flight.
GROWING_MIN = 10
#: How far back the buffer trend looks, and how long it must be to say anything.
TREND_MS = 10_000
TREND_MIN_MS = 5_000

_WINDOW_NUMBERS = (
    "energy_kwh",
    "co2_kg",
    "output_units",
    "kwh_per_unit",
    "kgco2_per_unit",
    "intensity_g_per_kwh",
    "tce",
)


class Runtime(Protocol):
    """The parts of a running agent the status is read from (the :class:`Agent` has them).

    A protocol, not the class: the agent owns its status source, and the source
    must not import the agent back.
    """

    @property
    def config(self) -> AgentConfig: ...
    @property
    def site(self) -> SiteCore: ...
    @property
    def devices(self) -> Mapping[str, DeviceState]: ...
    @property
    def link(self) -> MqttLink: ...
    @property
    def outbox(self) -> StorageGuard: ...
    @property
    def pump(self) -> Pump: ...
    @property
    def started_ms(self) -> int: ...
    @property
    def ledger(self) -> LedgerSource: ...
    @property
    def alarms(self) -> AlarmSource: ...
    @property
    def reports(self) -> ReportsSource: ...


class AlarmSource(Protocol):
    """The alarms raised now (agent.runtime.alarms.AlarmJob)."""

    def status(self) -> tuple[AlarmStatus, ...]: ...
    def counts(self) -> AlarmCounts: ...


class ReportsSource(Protocol):
    """The scheduled reports (agent.runtime.reports.ReportJob)."""

    def status(self) -> ReportsStatus | None: ...


class LedgerSource(Protocol):
    """The history and the ledger (agent.runtime.ledger.LedgerJob)."""

    def status(self) -> LedgerStatus: ...


def _num(x: object) -> float | None:
    """A measured number, or None for missing, NaN or infinite."""
    if isinstance(x, int | float) and math.isfinite(x):
        return float(x)
    return None


class BufferTrend:
    """Whether the outbox grows: its depth over the last ten seconds.

    A healthy link has a few messages in flight at any moment, so only clear
    growth (``GROWING_MIN`` more than ten seconds ago, seen over at least five)
    counts. Fed by each snapshot, whoever asks for it and however often.
    """

    def __init__(self) -> None:
        self._depths: deque[tuple[int, int]] = deque()

    def growing(self, now_ms: int, depth: int) -> bool:
        if self._depths and now_ms < self._depths[-1][0]:
            self._depths.clear()  # the clock went back: the old points say nothing now
        self._depths.append((now_ms, depth))
        while self._depths and self._depths[0][0] < now_ms - TREND_MS:
            self._depths.popleft()
        t0, first = self._depths[0]
        return now_ms - t0 >= TREND_MIN_MS and depth >= first + GROWING_MIN


class StatusSource:
    """Builds the agent's status; owned by the agent (``Agent.status``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.trend = BufferTrend()

    def __call__(self, now_ms: int | None = None) -> AgentStatus:
        """The whole picture at ``now_ms`` (default: now)."""
        rt = self.runtime
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        devices = tuple(_device(info, rt.devices[info.device.id], now) for info in rt.site.devices)
        link = self._link()
        storage = rt.outbox.health()
        outbox = self._outbox(now, link.connected)
        ledger = rt.ledger.status()
        reports = rt.reports.status()
        problems = [
            *_link_problems(link),
            *_storage_problems(storage),
            *_history_problems(ledger.history),
            *_outbox_problems(outbox),
            *_device_problems(devices),
            *([f"scheduled reports failing: {reports.error}"] if reports and reports.error else []),
        ]
        return AgentStatus(
            ts=now,
            agent=self._info(now),
            health=Health("degraded" if problems else "ok", tuple(problems)),
            link=link,
            outbox=outbox,
            storage=storage,
            site=_site(rt.site, devices),
            devices=devices,
            ledger=ledger,
            reports=reports,
            alarms=rt.alarms.status(),
            alarm_counts=rt.alarms.counts(),
        )

    def _info(self, now: int) -> AgentInfo:
        rt = self.runtime
        cfg = rt.config
        jit = rt.site.engine.jit
        return AgentInfo(
            version=__version__,
            site=cfg.site.id,
            site_name=cfg.site.name or cfg.site.id,
            gateway=cfg.gateway.id,
            topic_base=rt.site.topics.base,
            started_ms=rt.started_ms,
            uptime_s=(now - rt.started_ms) / 1000,
            core=jit.backend.value,
            core_reason=jit.reason,
            timezone=cfg.site.timezone,
        )

    def _link(self) -> LinkStatus:
        mqtt = self.runtime.config.mqtt
        link = self.runtime.link.state
        return LinkStatus(
            connected=link.connected,
            broker=f"{mqtt.host}:{mqtt.port}" if mqtt else None,
            last_error=link.last_error or None,
            connects=link.connects,
            disconnects=link.disconnects,
        )

    def _outbox(self, now: int, connected: bool) -> OutboxStatus:
        ob = self.runtime.outbox.stats()
        pump = self.runtime.pump.stats
        oldest_age = None if ob.oldest_ms is None else max(0, now - ob.oldest_ms) / 1000
        growing = self.trend.growing(now, ob.depth)
        alarm = bool(ob.depth) and (
            not connected or growing or (oldest_age or 0.0) > BUFFER_STALE_S
        )
        return OutboxStatus(
            depth=ob.depth,
            bytes=ob.bytes,
            oldest_ms=ob.oldest_ms,
            oldest_age_s=oldest_age,
            dropped={k.name.lower(): n for k, n in ob.dropped.items()},
            growing=growing,
            alarm=alarm,
            published=pump.published,
            acked=pump.acked,
            refused=pump.refused,
        )


def _device(info: DeviceInfo, st: DeviceState, now: int) -> DeviceStatus:
    dev = info.device
    values = st.last_values or {}
    return DeviceStatus(
        id=dev.id,
        bus=dev.bus,
        unit=dev.unit,
        kind=info.kind.value,
        parent=dev.parent,
        meter=dev.profile or "inline registers",
        interval_s=dev.interval_s,
        state=st.state,
        error=st.error,
        reason=st.reason or None,
        last_ok_ms=st.last_ok_ms,
        age_s=None if st.last_ok_ms is None else (now - st.last_ok_ms) / 1000,
        polls=st.polls,
        failures=st.failures,
        power_kw=(
            _num(values.get(Quantity.ACTIVE_POWER_KW))
            if info.kind is DeviceKind.ELECTRICITY
            else None
        ),
        main=MainReading(info.quantity.value, _num(values.get(info.quantity)), info.resolved.unit),
        values={q.value: v for q, v in values.items()},
    )


def _site(site: SiteCore, devices: Iterable[DeviceStatus]) -> SiteStatus:
    power = 0.0
    meters = 0
    complete = True
    for d in devices:
        if not d.root_electricity:
            continue
        if d.state == OK and d.power_kw is not None:
            power += d.power_kw
            meters += 1
        else:
            complete = False
    latest = site.latest_intensity
    return SiteStatus(
        held=_held(site),
        power_kw=power if meters else None,
        power_meters=meters,
        power_complete=complete,
        intensity=_window(latest, INTENSITY_WINDOW),
        intensity_1h=_window(latest, "1h"),
        today=_window(latest, "today"),
        demand=_demand(site),
    )


def _held(site: SiteCore) -> HeldRecord | None:
    """The oldest site record the core still owes, if meters hold it (see HeldRecord)."""
    owed = site.windows.owed()
    engine = site.engine
    if not owed:
        return None
    end = owed[0]
    waiting = tuple(
        d.device.id
        for d in site.devices
        if engine.has_reference(d.channel) and engine.emitted_end(d.channel) < end
    )
    if not waiting:
        return None  # every meter closed it: published at the next feed
    return HeldRecord(end, waiting, end + int(site.config.core.site_hold_s * 1000))


def _window(latest: Mapping[str, object] | None, name: str) -> WindowFigures | None:
    """One window of the latest intensity record, as the core published it."""
    if latest is None:
        return None
    windows = latest.get("windows")
    w = windows.get(name) if isinstance(windows, Mapping) else None
    if not isinstance(w, Mapping):
        return None
    ts = latest.get("ts")
    numbers = {k: _num(w.get(k)) for k in _WINDOW_NUMBERS}
    return WindowFigures(name, ts if isinstance(ts, int) else None, **numbers)


def _demand(site: SiteCore) -> DemandStatus:
    """Each root electricity meter's demand over the last ``DEMAND_SLOTS`` closed slots."""
    engine = site.engine
    roots = [
        d for d in site.devices if d.kind is DeviceKind.ELECTRICITY and d.device.parent is None
    ]
    closed = engine.closed_slot_end()
    ends = sorted({int(closed[d.channel]) for d in roots if int(closed[d.channel]) > 0})
    sums = engine.range_sums([e - DEMAND_SLOTS for e in ends], ends) if ends else None
    meters = []
    total = 0.0
    have = False
    for d in roots:
        end = int(closed[d.channel])
        now_kw: float | None = None
        window_min: int | None = None
        peak = engine.demand_peak(d.channel)
        if sums is not None and end > 0 and peak is not None:  # a slot has closed
            now_kw = float(sums[d.channel, ends.index(end)]) * 60.0 / DEMAND_SLOTS
            first_slot = -(-engine.first_ts(d.channel) // SLOT_MS)  # first whole slot
            window_min = max(0, min(DEMAND_SLOTS, end - first_slot)) * SLOT_MS // 60_000
            total += now_kw
            have = True
        meters.append(
            MeterDemand(
                device=d.device.id,
                now_kw=_num(now_kw),
                peak_kw=_num(peak[0]) if peak else None,
                peak_ts=(peak[1] + 1) * SLOT_MS if peak else None,
                window_min=window_min,
            )
        )
    return DemandStatus(DEMAND_SLOTS, _num(total) if have else None, tuple(meters))


# --- health: what makes the gateway "degraded", in the words the page shows --------------


def _link_problems(link: LinkStatus) -> list[str]:
    if link.connected:
        # connected between two takeovers: still a problem (agent.mqttclient.TakeoverWatch)
        clash = link.last_error is not None and link.last_error.startswith(TAKEOVER)
        return [link.last_error] if clash and link.last_error else []
    if link.connects or link.last_error:
        return ["MQTT link down" + (f": {link.last_error}" if link.last_error else "")]
    return ["MQTT not connected yet"]


def _storage_problems(st: StorageStatus) -> list[str]:
    if st.ok:
        return []
    lost = st.lost_total
    return [
        f"storage failing: cannot write the outbox in {st.directory} "
        f"({human_bytes(st.free_bytes)} free): {st.error}; "
        f"{st.unstored} messages held in memory only"
        + (f", {lost} lost (memory full)" if lost else "")
    ]


def _history_problems(h: HistoryStatus) -> list[str]:
    if h.ok:
        return []
    return [
        f"history failing: cannot write {h.path}: {h.error}; {h.pending} records held in "
        "memory only" + (f", {h.lost} dropped" if h.lost else "")
    ]


def _outbox_problems(ob: OutboxStatus) -> list[str]:
    return [f"buffering: {ob.depth} messages waiting to be sent"] if ob.alarm else []


def _device_problems(devices: Iterable[DeviceStatus]) -> list[str]:
    failing = [d.id for d in devices if d.state == ERROR]
    if not failing:
        return []
    plural = "s" if len(failing) != 1 else ""
    return [f"{len(failing)} device{plural} failing: " + ", ".join(failing)]


def status_line(status: AgentStatus) -> str:
    """systemd's one-line status (``systemctl status``), from the same snapshot."""
    ok = sum(d.state == OK for d in status.devices)
    line = f"polling {len(status.devices)} devices ({ok} ok), outbox {status.outbox.depth}"
    st = status.storage
    if not st.ok:
        line += (
            f"; STORAGE FAILING in {st.directory}: {st.error}, "
            f"{st.unstored} messages in memory only"
        )
    return line
