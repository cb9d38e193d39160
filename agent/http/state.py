"""The /api/state document: the agent's status snapshot as the JSON the page reads.

The page, the server-sent events, ``energy-agent status`` and the tests all read
this same JSON. It is rendered from one :class:`~agent.status.AgentStatus` (the
runtime builds it and decides the health, see :mod:`agent.runtime.status`);
here the numbers are only rounded for display and laid out under the keys the
page knows (schema ``SCHEMA_VERSION``). A new section is a new key: older pages
ignore it, so the version changes only when an existing key does. A section whose
JSON is its fields as they are is rendered by :func:`_plain`.

What needs memory across snapshots for the page alone, the sparklines' last
15 minutes of power per device, is kept by :class:`StateView`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from array import array
from collections.abc import Callable, Mapping
from typing import Any

from agent.status import (
    AgentInfo,
    AgentStatus,
    DemandStatus,
    DeviceStatus,
    LedgerStatus,
    ReportsStatus,
    SiteStatus,
    WindowFigures,
)

SCHEMA_VERSION = 1
HISTORY_S = 15 * 60
#: Points per device in a history answer; the sparkline is ~150 px wide.
HISTORY_POINTS = 180

#: What a view is fed from: the runtime's status at a time (``Agent.status``).
StatusFn = Callable[[int], AgentStatus]


def _f(x: float | None, digits: int = 6) -> float | None:
    """JSON-safe number: None for missing, NaN or infinite."""
    if x is not None and math.isfinite(x):
        return round(float(x), digits) + 0.0
    return None


def state_document(s: AgentStatus) -> dict[str, Any]:
    """The whole /api/state document for one snapshot."""
    return {
        "schema": SCHEMA_VERSION,
        "ts": s.ts,
        "agent": _agent(s.agent),
        "health": {"state": s.health.state, "problems": list(s.health.problems)},
        "mqtt": _plain(s.link),
        "buffer": _plain(s.outbox, oldest_age_s=_f(s.outbox.oldest_age_s, 1)),
        "storage": _plain(s.storage, lost_total=s.storage.lost_total),
        # The ledger and the history of records it covers (agent.runtime.ledger).
        "ledger": None if s.ledger is None else _ledger(s.ledger),
        # The scheduled reports (agent.runtime.reports), when report.schedule lists any.
        "reports": None if s.reports is None else _reports(s.reports),
        "site": _site(s.site),
        "devices": [_device(d) for d in s.devices],
        # The alarms raised now (README, Alarms), each as agent.status.AlarmStatus says.
        "alarms": [_plain(a, value=_f(a.value, 3), limit=_f(a.limit, 3)) for a in s.alarms],
    }


def _reports(reports: ReportsStatus) -> dict[str, Any]:
    return _plain(reports, schedule=list(reports.schedule))


def _ledger(ledger: LedgerStatus) -> dict[str, Any]:
    return _plain(ledger, history=_plain(ledger.history))


def _agent(a: AgentInfo) -> dict[str, Any]:
    return {
        "version": a.version,
        "site": a.site,
        "site_name": a.site_name,
        "gateway": a.gateway,
        "started_ms": a.started_ms,
        "uptime_s": _f(a.uptime_s, 1),
        # "python" when numba is unavailable: same numbers, slower (agent.core.jit)
        "core": a.core,
        # the site's IANA zone: the page shows every time in it ("today" is counted in it)
        "timezone": a.timezone,
    }


def _plain(section: Any, **shown: object) -> dict[str, Any]:
    """A section's fields under their own names, in their order; ``shown`` replaces some
    (a number rounded for display) or adds others (a total) at the end."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[f.name] = dict(value) if isinstance(value, Mapping) else value
    out.update(shown)
    return out


def _site(site: SiteStatus) -> dict[str, Any]:
    return {
        "power_kw": _f(site.power_kw, 3),
        "power_meters": site.power_meters,
        "power_complete": site.power_complete,
        "intensity": _window(site.intensity),
        "intensity_1h": _window(site.intensity_1h),
        "today": _window(site.today),
        "demand": _demand(site.demand),
        # the next site record while late meters hold it: which, and until when
        "held": None
        if site.held is None
        else {
            "end_ms": site.held.end_ms,
            "waiting_for": list(site.held.waiting_for),
            "until_ms": site.held.until_ms,
        },
    }


def _window(w: WindowFigures | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {
        "energy_kwh": _f(w.energy_kwh),
        "co2_kg": _f(w.co2_kg),
        "output_units": _f(w.output_units),
        "kwh_per_unit": _f(w.kwh_per_unit),
        "kgco2_per_unit": _f(w.kgco2_per_unit),
        "intensity_g_per_kwh": _f(w.intensity_g_per_kwh),
        "tce": _f(w.tce),
        "window": w.window,
        "ts": w.ts,
    }


def _demand(d: DemandStatus) -> dict[str, Any]:
    meters = [
        {
            "device": m.device,
            "now_kw": _f(m.now_kw, 3),
            "peak_kw": _f(m.peak_kw, 3),
            "peak_ts": m.peak_ts,
            "window_min": m.window_min,
        }
        for m in d.meters
    ]
    return {"period_min": d.period_min, "now_kw": _f(d.now_kw, 3), "meters": meters}


def _device(d: DeviceStatus) -> dict[str, Any]:
    return {
        "id": d.id,
        "bus": d.bus,
        "unit": d.unit,
        "kind": d.kind,
        "parent": d.parent,
        "meter": d.meter,
        "interval_s": d.interval_s,
        "state": d.state,
        "error": d.error,
        "reason": d.reason,
        "last_ok_ms": d.last_ok_ms,
        "age_s": _f(d.age_s, 1),
        "polls": d.polls,
        "failures": d.failures,
        "power_kw": _f(d.power_kw, 4),
        "main": {"quantity": d.main.quantity, "value": _f(d.main.value, 4), "unit": d.main.unit},
    }


class Trend:
    """One device's (ts, kW) points in time order: two packed arrays, oldest dropped.

    16 bytes a point instead of a tuple of two objects in a deque (~120 bytes): the
    page keeps 15 minutes of every meter. Dropped points are cut off the front 64
    at a time (a move of the ~900 kept: microseconds a minute for a 1 s meter).
    """

    __slots__ = ("_kw", "_start", "_ts")

    def __init__(self) -> None:
        self._ts = array("q")
        self._kw = array("d")
        self._start = 0

    def __len__(self) -> int:
        return len(self._ts) - self._start

    @property
    def last_ts(self) -> int:
        return self._ts[-1]

    def append(self, ts: int, kw: float) -> None:
        self._ts.append(ts)
        self._kw.append(kw)

    def drop_before(self, ts: int) -> None:
        """Forget the points older than ``ts``."""
        start, times = self._start, self._ts
        while start < len(times) and times[start] < ts:
            start += 1
        if start >= 64:
            del times[:start]
            del self._kw[:start]
            start = 0
        self._start = start

    def points(self) -> list[tuple[int, float]]:
        start = self._start
        return list(zip(self._ts[start:], self._kw[start:], strict=True))


class StateView:
    """The status once a tick, as a snapshot and as its document, plus the sparklines.

    Every reader of a tick (the page, each event stream, /metrics) sees the same
    snapshot. The runtime keeps only each device's *last* values; the page wants
    the last 15 minutes of power per device, so they are recorded here from the
    snapshots, one point per new good poll (not per tick). Memory: at most one
    point per poll for 15 minutes per device (900 for a 1 s meter, 16 bytes each:
    ~15 KB; as tuples in a deque they were ~110 KB, 21 MB for 200 meters).
    """

    def __init__(self, source: StatusFn, *, history_s: float = HISTORY_S) -> None:
        self.source = source
        self.history_ms = int(history_s * 1000)
        self._power: dict[str, Trend] = {}
        self._status: AgentStatus | None = None
        self.latest: dict[str, Any] | None = None

    def refresh(self, now_ms: int | None = None) -> dict[str, Any]:
        """A new snapshot, its document and history; the server calls this each tick."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        status = self.source(now)
        for d in status.devices:
            points = self._power.get(d.id)
            if points is None:
                points = self._power[d.id] = Trend()
            ts, kw = d.last_ok_ms, _f(d.power_kw, 4)
            if ts is not None and kw is not None and (not points or points.last_ts < ts):
                points.append(ts, kw)
            points.drop_before(now - self.history_ms)
        self._status = status
        self.latest = state_document(status)
        return self.latest

    def current(self) -> dict[str, Any]:
        """The latest document (at most a tick old), so every reader sees the same one."""
        return self.latest if self.latest is not None else self.refresh()

    def status(self) -> AgentStatus:
        """The snapshot behind :meth:`current`."""
        if self._status is None:
            self.refresh()
        assert self._status is not None
        return self._status

    def history(self, max_points: int = HISTORY_POINTS) -> dict[str, list[list[float]]]:
        """``{device: [[ts_ms, kW], ...]}`` over the last 15 minutes, thinned evenly."""
        out: dict[str, list[list[float]]] = {}
        for dev, points in self._power.items():
            pts = points.points()
            if len(pts) > max_points:
                step = len(pts) / max_points
                pts = [pts[int(i * step)] for i in range(max_points - 1)] + [pts[-1]]
            out[dev] = [[ts, kw] for ts, kw in pts]
        return out

    def with_history(self) -> dict[str, Any]:
        doc = dict(self.current())
        doc["history"] = {"window_s": self.history_ms // 1000, "power_kw": self.history()}
        return doc
