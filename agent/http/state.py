"""The /api/state document: the one place the gateway's live picture is assembled.

The page, the server-sent events, ``energy-agent status`` and the tests all read
this same JSON, so a number can only be wrong in one place. It is built from
the runtime's own state (device states, the core's latest intensity record and
demand registers, outbox and MQTT counters) and never touches Modbus: building
it costs a few dict lookups and one small numba call, so it runs once a second
whatever the number of viewers.

Choices a plant engineer sees, made here:

* "Intensity now" is the **15-minute** rolling window of the latest intensity
  record (the 1-minute window of a 60 s publish interval jumps with every press
  stroke; 15 min is also the demand period). The 1-hour window is given too.
* "Total power" sums ``active_power_kw`` of the **root** electricity meters that
  answered their last poll, as the site totals do (children are inside their
  parent). ``complete`` says whether every root contributed.
* "15-minute demand" is per root electricity meter from the core's demand
  registers: the rolling 15 closed one-minute slots against this month's peak.
  The site figure is the sum of the meters' demand now; a site peak is not the
  sum of meter peaks (they happen at different times), so none is invented.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.core.channels import DEMAND_SLOTS, SLOT_MS
from agent.runtime.outbox import StorageHealth
from agent.runtime.outbox.guard import human_bytes
from drivers.profile import DeviceKind
from drivers.quantities import Quantity

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

SCHEMA_VERSION = 1
INTENSITY_WINDOW = "15m"
HISTORY_S = 15 * 60
#: Points per device in a history answer; the sparkline is ~150 px wide.
HISTORY_POINTS = 180
#: A buffer older than this is an alarm even while the link is up (the broker is slow).
BUFFER_STALE_S = 120.0
#: Growth over ten seconds that counts as "growing" rather than messages in flight.
GROWING_MIN = 10


def _f(x: object, digits: int = 6) -> float | None:
    """JSON-safe number: None for missing, NaN or infinite."""
    if isinstance(x, int | float) and math.isfinite(x):
        return round(float(x), digits) + 0.0
    return None


def _window(latest: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    if latest is None:
        return None
    w = latest.get("windows", {}).get(name)
    if not isinstance(w, Mapping):
        return None
    keys = (
        "energy_kwh",
        "co2_kg",
        "output_units",
        "kwh_per_unit",
        "kgco2_per_unit",
        "intensity_g_per_kwh",
        "tce",
    )
    out: dict[str, Any] = {k: _f(w.get(k)) for k in keys}
    out["window"] = name
    out["ts"] = latest.get("ts")
    return out


def _demand(agent: Agent) -> dict[str, Any]:
    site = agent.site
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
        peak = engine.demand_peak(d.channel)
        if sums is not None and end > 0 and peak is not None:  # a slot has closed
            now_kw = float(sums[d.channel, ends.index(end)]) * 60.0 / DEMAND_SLOTS
            total += now_kw
            have = True
        meters.append(
            {
                "device": d.device.id,
                "now_kw": _f(now_kw, 3),
                "peak_kw": _f(peak[0], 3) if peak else None,
                "peak_ts": (peak[1] + 1) * SLOT_MS if peak else None,
            }
        )
    return {"period_min": DEMAND_SLOTS, "now_kw": _f(total, 3) if have else None, "meters": meters}


def _storage(h: StorageHealth) -> dict[str, Any]:
    """The outbox's disk: a fault is a problem of its own, not a buffer that grows.

    A full ``state_dir`` with the broker up leaves the buffer empty (the memory
    lane is published and forgotten), so without this nothing would look wrong.
    """
    return {
        "ok": h.ok,
        "error": h.error,
        "since_ms": h.since_ms,
        "directory": h.directory,
        "free_bytes": h.free_bytes,
        "unstored": h.unstored,
        "unstored_records": h.unstored_records,
        "unstored_bytes": h.unstored_bytes,
        "memory_max_bytes": h.memory_max_bytes,
        "failures": h.failures,
        "lost": {k.name.lower(): n for k, n in h.lost.items()},
        "lost_total": sum(h.lost.values()),
    }


def build_state(
    agent: Agent, now_ms: int | None = None, *, buffer_growing: bool = False
) -> dict[str, Any]:
    """The whole /api/state document for ``agent`` at ``now_ms`` (default: now).

    ``buffer_growing`` comes from the caller, which sees the depth over time
    (:class:`StateView`); the document itself is a pure snapshot.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cfg = agent.config
    devices: list[dict[str, Any]] = []
    power_total = 0.0
    power_n = 0
    roots_ok = True
    failing = []
    for info in agent.site.devices:
        dev = info.device
        st = agent.devices[dev.id]
        values = st.last_values or {}
        power = (
            _f(values.get(Quantity.ACTIVE_POWER_KW), 4)
            if info.kind is DeviceKind.ELECTRICITY
            else None
        )
        main = values.get(info.quantity)
        if st.state == "error":
            failing.append(dev.id)
        if info.kind is DeviceKind.ELECTRICITY and dev.parent is None:
            if st.state == "ok" and power is not None:
                power_total += power
                power_n += 1
            else:
                roots_ok = False
        devices.append(
            {
                "id": dev.id,
                "bus": dev.bus,
                "unit": dev.unit,
                "kind": info.kind.value,
                "parent": dev.parent,
                "meter": dev.profile or "inline registers",
                "interval_s": dev.interval_s,
                "state": st.state,
                "error": st.error,
                "reason": st.reason or None,
                "last_ok_ms": st.last_ok_ms,
                "age_s": None if st.last_ok_ms is None else _f((now - st.last_ok_ms) / 1000, 1),
                "polls": st.polls,
                "failures": st.failures,
                "power_kw": power,
                "main": {
                    "quantity": info.quantity.value,
                    "value": _f(main, 4),
                    "unit": info.resolved.unit,
                },
            }
        )
    link = agent.link.state
    ob = agent.outbox.stats()
    storage = _storage(agent.outbox.health())
    pump = agent.pump.stats
    oldest_age = None if ob.oldest_ms is None else _f(max(0, now - ob.oldest_ms) / 1000, 1)
    buffer_alarm = bool(ob.depth) and (
        not link.connected or buffer_growing or (oldest_age or 0.0) > BUFFER_STALE_S
    )
    problems = []
    if not link.connected:
        problems.append(
            "MQTT link down" + (f": {link.last_error}" if link.last_error else "")
            if link.connects or link.last_error
            else "MQTT not connected yet"
        )
    if not storage["ok"]:
        lost = storage["lost_total"]
        problems.append(
            f"storage failing: cannot write the outbox in {storage['directory']} "
            f"({human_bytes(storage['free_bytes'])} free): {storage['error']}; "
            f"{storage['unstored']} messages held in memory only"
            + (f", {lost} lost (memory full)" if lost else "")
        )
    if buffer_alarm:
        problems.append(f"buffering: {ob.depth} messages waiting to be sent")
    if failing:
        problems.append(
            f"{len(failing)} device{'s' if len(failing) != 1 else ''} failing: "
            + ", ".join(failing)
        )
    latest = agent.site.latest_intensity
    today = _window(latest, "today")
    return {
        "schema": SCHEMA_VERSION,
        "ts": now,
        "agent": {
            "version": __version__,
            "site": cfg.site.id,
            "site_name": cfg.site.name or cfg.site.id,
            "gateway": cfg.gateway.id,
            "started_ms": agent.started_ms,
            "uptime_s": _f((now - agent.started_ms) / 1000, 1),
            # "python" when numba is unavailable: same numbers, slower (agent.core.jit)
            "core": agent.site.engine.jit.backend.value,
        },
        "health": {"state": "degraded" if problems else "ok", "problems": problems},
        "mqtt": {
            "connected": link.connected,
            "broker": f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt else None,
            "last_error": link.last_error or None,
            "connects": link.connects,
            "disconnects": link.disconnects,
        },
        "buffer": {
            "depth": ob.depth,
            "bytes": ob.bytes,
            "oldest_ms": ob.oldest_ms,
            "oldest_age_s": oldest_age,
            "dropped": {k.name.lower(): n for k, n in ob.dropped.items()},
            "growing": buffer_growing,
            "alarm": buffer_alarm,
            "published": pump.published,
            "acked": pump.acked,
            "refused": pump.refused,
        },
        "storage": storage,
        "site": {
            "power_kw": _f(power_total, 3) if power_n else None,
            "power_meters": power_n,
            "power_complete": roots_ok,
            "intensity": _window(latest, INTENSITY_WINDOW),
            "intensity_1h": _window(latest, "1h"),
            "today": today,
            "demand": _demand(agent),
        },
        "devices": devices,
    }


def metric_levels(doc: Mapping[str, Any]) -> dict[str, object]:
    """The gauge levels /metrics exports, taken from a state document."""
    buf = doc["buffer"]
    return {
        "buffer_depth": buf["depth"],
        "buffer_bytes": buf["bytes"],
        "buffer_oldest_ms": buf["oldest_ms"],
        "buffer_dropped": buf["dropped"],
        "published": buf["published"],
        "acked": buf["acked"],
        "refused": buf["refused"],
        "storage_ok": 1 if doc["storage"]["ok"] else 0,
        "storage_failures": doc["storage"]["failures"],
        "storage_free_bytes": doc["storage"]["free_bytes"],
        "unstored": doc["storage"]["unstored"],
        "lost": doc["storage"]["lost"],
        "mqtt_connected": 1 if doc["mqtt"]["connected"] else 0,
        "mqtt_disconnects": doc["mqtt"]["disconnects"],
        "device_up": {d["id"]: d["state"] == "ok" for d in doc["devices"]},
        "device_age_s": {d["id"]: d["age_s"] for d in doc["devices"]},
        "uptime_s": doc["agent"]["uptime_s"],
    }


class StateView:
    """:func:`build_state` once a second, plus what needs memory: sparklines, buffer trend.

    The runtime keeps only the *last* values; the page wants the last 15 minutes
    of power per device, so they are recorded here, from the poll timestamps
    (one point per new good poll, not per tick). Memory: at most one point per
    poll for 15 minutes per device (900 for a 1 s meter, ~20 KB).
    """

    def __init__(self, agent: Agent, *, history_s: float = HISTORY_S) -> None:
        self.agent = agent
        self.history_ms = int(history_s * 1000)
        self._power: dict[str, deque[tuple[int, float]]] = {d: deque() for d in agent.devices}
        self._depths: deque[tuple[int, int]] = deque()
        self.latest: dict[str, Any] | None = None

    def refresh(self, now_ms: int | None = None) -> dict[str, Any]:
        """Build the document, record history and trend; the server calls this each tick."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        depth = self.agent.outbox.stats().depth
        self._depths.append((now, depth))
        while self._depths and self._depths[0][0] < now - 10_000:
            self._depths.popleft()
        # Growing: clearly more than ten seconds ago (a healthy link has a few messages in
        # flight at any moment, so a small wobble is not a trend).
        t0, first = self._depths[0]
        growing = now - t0 >= 5_000 and depth >= first + GROWING_MIN
        doc = build_state(self.agent, now, buffer_growing=growing)
        for d in doc["devices"]:
            ts, kw = d["last_ok_ms"], d["power_kw"]
            points = self._power.setdefault(d["id"], deque())
            if ts is not None and kw is not None and (not points or points[-1][0] < ts):
                points.append((ts, kw))
            while points and points[0][0] < now - self.history_ms:
                points.popleft()
        self.latest = doc
        return doc

    def current(self) -> dict[str, Any]:
        """The latest document (at most a tick old), so every reader sees the same one."""
        return self.latest if self.latest is not None else self.refresh()

    def history(self, max_points: int = HISTORY_POINTS) -> dict[str, list[list[float]]]:
        """``{device: [[ts_ms, kW], ...]}`` over the last 15 minutes, thinned evenly."""
        out: dict[str, list[list[float]]] = {}
        for dev, points in self._power.items():
            pts = list(points)
            if len(pts) > max_points:
                step = len(pts) / max_points
                pts = [pts[int(i * step)] for i in range(max_points - 1)] + [pts[-1]]
            out[dev] = [[ts, kw] for ts, kw in pts]
        return out

    def with_history(self) -> dict[str, Any]:
        doc = dict(self.current())
        doc["history"] = {"window_s": self.history_ms // 1000, "power_kw": self.history()}
        return doc
