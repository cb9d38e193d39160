"""From a config's devices to the records the agent publishes: the core's front.

The numba engine knows channels; the parts around it each do one job:

* :mod:`agent.core.devices`: which channel counts each device, its carrier, and
  its weight in the site sums (root meters only);
* :mod:`agent.core.tree`: parents and children; a parent's record waits for its
  children's energy of the same interval (unmetered);
* :mod:`agent.core.windows`: the site windows, rolling and calendar, CO2 by each
  slot's factor, and which intervals still owe their ``intensity`` record;
* :mod:`agent.core.records`: the payloads, built from those numbers.

:class:`SiteCore` wires them: readings go to the engine, closed intervals become
``energy`` records (held by the tree when they are a parent's), and an interval
every device has closed becomes an ``intensity`` record. Each part saves and
restores its own state (:mod:`agent.core.snapshot`). It runs once per closed
interval, not per reading, so it may be plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.limits import ChannelLimit
from agent.config.models import AgentConfig
from agent.contract.build import event_payload, measurements_payload
from agent.contract.kinds import Message, MessageKind, Topics
from agent.contract.vocab import DEFAULT_PREFIX
from agent.core import snapshot
from agent.core.calendar import SiteCalendar
from agent.core.channels import CORRECTION, SLOT_MS, ChannelKind, Event
from agent.core.devices import DeviceChannels, DeviceInfo, SiteError
from agent.core.engine import CACHE_DIR, INT64_MIN, Engine, Events, Records, load_kernel
from agent.core.factors import EmissionFactors
from agent.core.records import RecordBuilder
from agent.core.tree import MeterTree
from agent.core.windows import SiteWindows
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

__all__ = ["DeviceInfo", "Reading", "SiteCore", "SiteError", "readings_from_rows"]

#: How far back late data still revise the site's records: an outage up to this long
#: is revised exactly (docs/core.md, "Revisions"); slots older than this before the
#: newest closed are dropped from the site's series.
REVISE_DAYS = 45


@dataclass(frozen=True)
class Reading:
    """One successful poll of one device."""

    device: str
    ts: int
    values: dict[Quantity, float | None]
    #: Quantities whose reading was outside its plausible range: None in ``values``
    #: (so a counter among them reaches the engine as NaN, a missing reading, never
    #: as a number) and named in the measurements payload.
    implausible: tuple[Quantity, ...] = ()


class SiteCore:
    """Devices, the engine and the site windows of one gateway."""

    def __init__(
        self,
        config: AgentConfig,
        library: ProfileLibrary,
        *,
        engine: Engine | None = None,
        prefix: str | None = None,
    ) -> None:
        self.config = config
        self.interval_s = config.publish.energy_interval_s
        self.calendar = SiteCalendar(config.site.timezone)
        self.factors = EmissionFactors(config.carbon, self.calendar)
        mqtt_prefix = config.mqtt.prefix if config.mqtt is not None else DEFAULT_PREFIX
        self.topics = Topics(prefix or mqtt_prefix, config.site.id, config.gateway.id)
        self.channels = DeviceChannels(config, library)
        self.devices: list[DeviceInfo] = self.channels.devices
        self.by_id: dict[str, DeviceInfo] = self.channels.by_id
        self.engine = engine or Engine(
            self.channels.specs,
            self.interval_s,
            demand=self.channels.demand,
            align_offset_slots=self.calendar.align_offset_minutes(self.interval_s // 60),
            kernel=load_kernel(config.state_dir / CACHE_DIR),
        )
        self.tree = MeterTree(
            [d.device.id for d in self.devices], self.channels.parents(), self._may_deliver
        )
        self.windows = SiteWindows(
            self.engine,
            self.channels.weights,
            self.factors,
            self.calendar,
            [self.devices[i].device.id for i in self.channels.device_of],
        )
        self.records = RecordBuilder(config, self.factors)
        #: What keeps state across a restart, each its own piece of the snapshot.
        self._parts: tuple[snapshot.Part, ...] = (
            self.engine,
            self.channels,
            self.tree,
            self.windows,
        )
        #: The span (Unix ms) the engine's month starts cover (readings inside: no change).
        self.months_covered: tuple[int, int] | None = None
        #: The last intensity record published, for the live page and the demo.
        self.latest_intensity: dict[str, object] | None = None

    @property
    def group(self) -> np.ndarray:
        """Per channel, its carrier's row of emission factors (the CO2 window sums)."""
        return self.channels.weights.group

    # --- input ---------------------------------------------------------------------------

    def _cover_months(self, lo_ms: int, hi_ms: int) -> None:
        covered = self.months_covered
        if covered is not None and covered[0] <= lo_ms and hi_ms <= covered[1]:
            return
        lo = min(lo_ms, covered[0]) if covered else lo_ms
        hi = max(hi_ms, covered[1]) if covered else hi_ms
        lo -= 40 * 86_400_000
        hi += 40 * 86_400_000
        self.engine.set_months(self.calendar.month_starts_between(lo, hi))
        self.months_covered = (lo, hi)

    def set_ratios(self, device_id: str, ratios: Mapping[str, float]) -> ChannelLimit:
        """The transformer ratios just read from a device's meter: its counter's glitch
        limit and wrap range follow them from its next reading on (docs/core.md)."""
        limits = self.channels.limits(self.by_id[device_id], ratios)
        for c, limit in limits:
            self.engine.set_limit(c, limit.max_rate_per_h)
            self.engine.set_wrap(c, limit.wrap)
        return limits[0][1]  # the main counter's

    def feed(self, readings: Sequence[Reading], *, measurements: bool = True) -> list[Message]:
        """Polls in time order per device; returns every message they cause, in order."""
        out: list[Message] = []
        chans: list[int] = []
        ts: list[int] = []
        vals: list[float] = []
        for r in readings:
            info = self.by_id[r.device]
            if measurements:
                info.seq += 1
                payload = measurements_payload(
                    r.ts,
                    info.seq,
                    {q.value: v for q, v in r.values.items()},
                    [q.value for q in r.implausible],
                )
                out.append(self.topics.message(MessageKind.MEASUREMENTS, payload, r.device))
            for c, q in self.channels.reads(info):
                if q in r.values:
                    v = r.values[q]
                    chans.append(c)
                    ts.append(r.ts)
                    vals.append(math.nan if v is None else v)
        out += self.feed_arrays(
            np.array(chans, dtype=np.int64),
            np.array(ts, dtype=np.int64),
            np.array(vals, dtype=np.float64),
        )
        return out

    def feed_arrays(self, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> list[Message]:
        """Main-quantity readings as arrays (replay's fast path); energy and intensity out."""
        if ts.size:
            self._cover_months(int(ts.min()), int(ts.max()))
        closed = self.engine.feed(chans, ts, vals)
        self.windows.add(closed.slots)
        out = self._event_messages(closed.events)
        out += self._energy_messages(closed.records)
        out += self._release_held(final=False)
        out += self._intensity_messages(self.engine.complete_end())
        return out

    def flush(self, now_ms: int | None = None) -> list[Message]:
        """Publish what waits for late meters: everything (end of a replay), or what has
        waited longer than ``core.site_hold_s`` at ``now_ms`` (the running agent)."""
        if now_ms is None:
            out = self._release_held(final=True)
            out += self._intensity_messages(None)
            return out
        limit = now_ms - int(self.config.core.site_hold_s * 1000)
        out = self._release_held(final=False, older_than=limit)
        out += self._intensity_messages(max(self.engine.complete_end(), limit))
        return out

    # --- output --------------------------------------------------------------------------

    def _event_messages(self, ev: Events) -> list[Message]:
        """One ``events`` message per correction, in the order the core made them."""
        out: list[Message] = []
        for c, ts, code, value in zip(
            ev.channel.tolist(), ev.ts.tolist(), ev.event.tolist(), ev.value.tolist(), strict=True
        ):
            if self.channels.specs[c].kind is ChannelKind.POWER_EXPORT:
                continue  # the same reading as its import channel's, which reports it
            info = self.devices[self.channels.device_of[c]]
            correction, limit = CORRECTION[Event(code)], self.engine.max_rate(c)
            quantity = self.channels.quantity_of(c).value
            payload = event_payload(ts, correction, quantity, value, limit)
            out.append(self.topics.message(MessageKind.EVENTS, payload, info.device.id))
        return out

    def _energy_messages(self, rec: Records) -> list[Message]:
        """One record per closed interval, in (end, device) order; a parent's is held."""
        out: list[Message] = []
        n = len(self.devices)
        exported = self.channels.exported(rec.channel, rec.end_ms, rec.energy)
        for k in np.lexsort((rec.channel, rec.end_ms)):
            i = int(rec.channel[k])  # device i is counted on channel i
            if i >= n:
                continue  # an export channel: in its device's record
            info = self.devices[i]
            end = int(rec.end_ms[k])
            native = float(rec.energy[k])
            kwh = self.channels.kwh(i, native)
            payload = self.records.energy(
                info,
                end,
                native=native,
                kwh=kwh,
                flags=int(rec.flags[k]),
                has_children=self.tree.is_parent(i),
                covered_ms=(int(rec.measured_ms[k]), int(rec.interpolated_ms[k])),
                export_kwh=exported.get((i, end)),
            )
            self.windows.expect(end)
            covered = (
                int(rec.measured_ms[k]) + int(rec.interpolated_ms[k]) >= self.engine.interval_ms
            )
            if not self.tree.closed(i, end, kwh, payload, covered=covered):
                out.append(self.topics.message(MessageKind.ENERGY, payload, info.device.id))
        return out

    def _may_deliver(self, i: int, end: int) -> bool:
        """Device ``i`` may still close the interval ending at ``end`` (it has data and has
        not closed that interval yet): worth waiting for."""
        c = self.devices[i].channel
        return self.engine.has_reference(c) and self.engine.emitted_end(c) < end

    def _release_held(self, *, final: bool, older_than: int | None = None) -> list[Message]:
        out: list[Message] = []
        for r in self.tree.release(final=final, older_than=older_than):
            info = self.devices[r.device]
            # A record held in a snapshot of an older agent has no tree tags yet.
            for key, value in self.records.tree_tags(info).items():
                r.payload.setdefault(key, value)
            self.records.set_unmetered(r.payload, r.unmetered_kwh, r.incomplete_children)
            device = info.device.id
            out.append(self.topics.message(MessageKind.ENERGY, r.payload, device))
        return out

    def _intensity_messages(self, upto: int | None) -> list[Message]:
        """The intensity records owed up to ``upto`` (None: all), in time order."""
        out = []
        for end in self.windows.due(upto):
            windows = self.windows.at(end)
            rev = self.windows.revision(end, windows)
            if rev is None:
                continue  # late data that changed nothing it publishes
            payload = self.records.intensity(end, windows, rev)
            out.append(self.topics.message(MessageKind.INTENSITY, payload))
            if self.latest_intensity is None or end >= int(str(self.latest_intensity["ts"])):
                self.latest_intensity = payload
        if out:  # at most once an interval: what the published records no longer need
            self._forget()
        return out

    def _forget(self) -> None:
        """What no channel can close again no window needs again: the oldest slot a
        channel summed in the site's windows (an export channel too) may still close, or
        an owed record may still cover; but never more than ``REVISE_DAYS`` before the
        newest slot closed (a meter that never comes back must not make the site keep
        everything since it died)."""
        summed = self.windows.series.summed
        ends = self.engine.closed_slot_end()[summed]
        open_slots = ends[ends != INT64_MIN].tolist()
        owed = [e // SLOT_MS for e in self.windows.due_first()]
        if open_slots or owed:
            oldest = min(open_slots + owed)
            if open_slots:
                oldest = max(oldest, max(open_slots) - REVISE_DAYS * 1440)
            self.windows.forget_before(oldest)

    # --- snapshot ------------------------------------------------------------------------

    def save_snapshot(self, path: Path) -> None:
        snap = snapshot.Snapshot(path)
        snap.put("interval_s", self.interval_s)
        for part in self._parts:
            part.save(snap)
        snapshot.write_atomic(snap)

    def load_snapshot(self, path: Path) -> bool:
        """Continue from a snapshot; False (and a fresh start) if there is none.

        SnapshotError, and nothing restored, when any part of it cannot be used."""
        if not path.exists():
            return False
        snap = snapshot.read(path)
        same_interval = snap.value("interval_s", int) == self.interval_s
        restore = [part.restorer(snap, same_interval=same_interval) for part in self._parts]
        for put_back in restore:
            put_back()
        return True


def readings_from_rows(rows: Iterable[tuple[int, str, Quantity, float | None]]) -> list[Reading]:
    """Group ``(ts, device, quantity, value)`` rows into one reading per (device, ts)."""
    grouped: dict[tuple[str, int], dict[Quantity, float | None]] = {}
    for ts, dev, q, v in rows:
        grouped.setdefault((dev, ts), {})[q] = v
    return [
        Reading(dev, ts, values)
        for (dev, ts), values in sorted(grouped.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
