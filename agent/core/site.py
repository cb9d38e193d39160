"""From a config's devices to the records the agent publishes.

The numba engine knows channels; this module knows devices, carriers, the
meter tree and the site. It turns closed intervals into ``energy`` records
(CO2 with the factor of that interval, a parent's unmetered energy), and site
windows into ``intensity`` records: rolling 1m/15m/1h/24h over closed slots,
and the calendar ``today``/``month`` in the site's time zone. It runs once per
closed interval, not per reading, so it may be plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.models import AgentConfig, Device
from agent.core import snapshot
from agent.core.calendar import SiteCalendar
from agent.core.channels import RING, SLOT_MS, ChannelKind, ChannelSpec, quality_of
from agent.core.engine import CACHE_DIR, Engine, Records, load_kernel
from agent.core.factors import EmissionFactors
from agent.payloads import (
    DEFAULT_PREFIX,
    Carrier,
    Message,
    Topics,
    energy_payload,
    intensity_payload,
    measurements_payload,
    num,
    window_values,
)
from drivers.profile import DeviceKind, ProfileLibrary, RegisterMap
from drivers.quantities import Quantity
from drivers.registers import DataType

_MAIN = {
    DeviceKind.ELECTRICITY: Quantity.ENERGY_IMPORT_KWH,
    DeviceKind.GAS: Quantity.GAS_VOLUME_M3,
    DeviceKind.PRODUCTION: Quantity.OUTPUT_UNITS,
}
_CARRIER = {
    DeviceKind.ELECTRICITY: Carrier.ELECTRICITY,
    DeviceKind.GAS: Carrier.NATURAL_GAS,
    DeviceKind.PRODUCTION: Carrier.PRODUCTION,
}
#: Weight groups for CO2 windows: one emission-factor row per carrier.
_GROUP = {Carrier.ELECTRICITY: 0, Carrier.NATURAL_GAS: 1, Carrier.PRODUCTION: -1}
ROLLING = (("1m", 1), ("15m", 15), ("1h", 60), ("24h", 1440))


class SiteError(ValueError):
    """A device cannot be counted (no counter and no power register)."""


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


@dataclass
class DeviceInfo:
    device: Device
    kind: DeviceKind
    carrier: Carrier
    channel: int
    channel_kind: ChannelKind
    quantity: Quantity
    children: list[int] = field(default_factory=list)
    seq: int = 0


def regmap_of(device: Device, library: ProfileLibrary) -> RegisterMap:
    if device.profile is not None:
        return library.get(device.profile)
    regmap = device.inline_map()
    assert regmap is not None  # the config model guarantees a profile or registers
    return regmap


def device_kind(device: Device, library: ProfileLibrary) -> DeviceKind:
    if device.kind is not None:
        return device.kind
    if device.profile is not None:
        return library.get(device.profile).kind
    return DeviceKind.ELECTRICITY


def channel_spec(
    device: Device, regmap: RegisterMap, kind: DeviceKind, max_gap_s: float
) -> tuple[ChannelSpec, Quantity]:
    """The channel that counts this device's main flow, and the quantity it reads."""
    main = _MAIN[kind]
    reg = regmap.spec(main)
    gap = max(max_gap_s, 3 * device.interval_s)
    rate = {
        DeviceKind.ELECTRICITY: device.max_power_kw,
        DeviceKind.GAS: device.max_flow_m3_h,
        DeviceKind.PRODUCTION: device.max_units_per_h,
    }[kind]
    if reg is None:
        if kind is DeviceKind.ELECTRICITY and regmap.spec(Quantity.ACTIVE_POWER_KW) is not None:
            spec = ChannelSpec(
                f"{device.id}/{Quantity.ACTIVE_POWER_KW.value}",
                ChannelKind.POWER,
                max_rate_per_h=rate or math.inf,
                max_gap_s=gap,
            )
            return spec, Quantity.ACTIVE_POWER_KW
        raise SiteError(
            f"device '{device.id}' has no {main.value} register"
            + (" and no active_power_kw" if kind is DeviceKind.ELECTRICITY else "")
        )
    wrap = 0.0
    tol_abs = tol_rel = 0.0
    if reg.type is DataType.FLOAT32:
        tol_rel = 2.0**-22  # two float32 steps: quantisation is not a glitch
    elif reg.type is DataType.FLOAT64:
        tol_rel = 2.0**-50
    else:
        tol_abs = abs(reg.scale)
        if not reg.type.is_signed:
            # Ratio-scaled counters are taken at ratio 1 here (see the closing note).
            wrap = float(1 << reg.type.bits) * abs(reg.scale)
    spec = ChannelSpec(
        f"{device.id}/{main.value}",
        ChannelKind.COUNTER,
        wrap=wrap,
        max_rate_per_h=rate or math.inf,
        tol_abs=tol_abs,
        tol_rel=tol_rel,
        max_gap_s=gap,
    )
    return spec, main


@dataclass
class _Totals:
    energy_kwh: float = 0.0
    co2_kg: float = 0.0
    units: float = 0.0
    kgce: float = 0.0

    def __add__(self, other: _Totals) -> _Totals:
        return _Totals(
            self.energy_kwh + other.energy_kwh,
            self.co2_kg + other.co2_kg,
            self.units + other.units,
            self.kgce + other.kgce,
        )

    def payload(self) -> dict[str, object]:
        return window_values(self.energy_kwh, self.co2_kg, self.units, self.kgce)


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
        self.interval_ms = self.interval_s * 1000
        self.calendar = SiteCalendar(config.site.timezone)
        self.factors = EmissionFactors(config.carbon, self.calendar)
        mqtt_prefix = config.mqtt.prefix if config.mqtt is not None else DEFAULT_PREFIX
        self.topics = Topics(prefix or mqtt_prefix, config.site.id, config.gateway.id)
        self.devices: list[DeviceInfo] = []
        self.by_id: dict[str, DeviceInfo] = {}
        specs: list[ChannelSpec] = []
        demand: list[bool] = []
        for dev in config.devices:
            kind = device_kind(dev, library)
            spec, quantity = channel_spec(dev, regmap_of(dev, library), kind, config.core.max_gap_s)
            info = DeviceInfo(dev, kind, _CARRIER[kind], len(specs), spec.kind, quantity)
            specs.append(spec)
            demand.append(kind is DeviceKind.ELECTRICITY)
            self.devices.append(info)
            self.by_id[dev.id] = info
        self._parent_of: dict[int, int] = {}
        for i, info in enumerate(self.devices):
            parent = info.device.parent
            if parent is not None:
                self.by_id[parent].children.append(i)
                self._parent_of[i] = self.devices.index(self.by_id[parent])
        self.engine = engine or Engine(
            specs,
            self.interval_s,
            demand=demand,
            kernel=load_kernel(config.state_dir / CACHE_DIR),
        )
        self.group = np.array([_GROUP[d.carrier] for d in self.devices], dtype=np.int64)
        self._weights = np.zeros((2, RING), dtype=np.float64)
        self._weights_end = -1  # slots before this have their factor written
        gas = config.carbon.natural_gas
        tce = config.tce
        roots = [d.device.parent is None for d in self.devices]
        # kWh, kgce and "units" per native unit of each channel, for site sums.
        self._energy_w = np.array(
            [
                (
                    1.0
                    if d.carrier is Carrier.ELECTRICITY
                    else gas.kwh_per_m3
                    if d.carrier is Carrier.NATURAL_GAS
                    else 0.0
                )
                * r
                for d, r in zip(self.devices, roots, strict=True)
            ]
        )
        self._co2_w = np.array(
            [
                1.0 if r and d.carrier is not Carrier.PRODUCTION else 0.0
                for d, r in zip(self.devices, roots, strict=True)
            ]
        )
        self._units_w = np.array(
            [1.0 if d.carrier is Carrier.PRODUCTION else 0.0 for d in self.devices]
        )
        self._kgce_w = np.array(
            [
                (
                    tce.electricity_kgce_per_kwh
                    if d.carrier is Carrier.ELECTRICITY
                    else tce.natural_gas_kgce_per_m3
                    if d.carrier is Carrier.NATURAL_GAS
                    else 0.0
                )
                * r
                for d, r in zip(self.devices, roots, strict=True)
            ]
        )
        self._months_covered: tuple[int, int] | None = None
        self._child_energy: dict[tuple[int, int], float] = {}
        self._own_energy: dict[tuple[int, int], float] = {}
        self._held: list[tuple[int, int, dict[str, object]]] = []  # (end, device, payload)
        self._pending_ends: set[int] = set()
        self._days: dict[date, _Totals] = {}
        #: The last intensity record published, for the live page and the demo.
        self.latest_intensity: dict[str, object] | None = None
        self._today: date | None = None

    # --- input ---------------------------------------------------------------------------

    def _cover_months(self, lo_ms: int, hi_ms: int) -> None:
        covered = self._months_covered
        if covered is not None and covered[0] <= lo_ms and hi_ms <= covered[1]:
            return
        lo = min(lo_ms, covered[0]) if covered else lo_ms
        hi = max(hi_ms, covered[1]) if covered else hi_ms
        lo -= 40 * 86_400_000
        hi += 40 * 86_400_000
        self.engine.set_months(self.calendar.month_starts_between(lo, hi))
        self._months_covered = (lo, hi)

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
                out.append(
                    Message(
                        self.topics.measurements(r.device),
                        measurements_payload(
                            r.ts,
                            info.seq,
                            {q.value: v for q, v in r.values.items()},
                            [q.value for q in r.implausible],
                        ),
                    )
                )
            if info.quantity in r.values:
                v = r.values[info.quantity]
                chans.append(info.channel)
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
        records = self.engine.feed(chans, ts, vals)
        out = self._energy_messages(records)
        out += self._release_held(final=False)
        out += self._intensity_messages(self._complete_end())
        return out

    def flush(self, now_ms: int | None = None) -> list[Message]:
        """Publish what waits for late meters: everything (end of a replay), or what has
        waited longer than ``core.site_hold_s`` at ``now_ms`` (the running agent)."""
        if now_ms is None:
            out = self._release_held(final=True)
            out += self._intensity_messages(max(self._pending_ends, default=0))
            return out
        limit = now_ms - int(self.config.core.site_hold_s * 1000)
        out = self._release_held(final=False, older_than=limit)
        out += self._intensity_messages(max(self._complete_end(), limit))
        return out

    # --- energy records ------------------------------------------------------------------

    def _energy_messages(self, rec: Records) -> list[Message]:
        out: list[Message] = []
        if not len(rec):
            return out
        order = np.lexsort((rec.channel, rec.end_ms))
        channel_to_device = {d.channel: i for i, d in enumerate(self.devices)}
        is_child = {c for d in self.devices for c in d.children}
        for k in order:
            i = channel_to_device[int(rec.channel[k])]
            info = self.devices[i]
            end = int(rec.end_ms[k])
            native = float(rec.energy[k])
            payload = self._energy_payload(info, end, native, int(rec.flags[k]))
            self._pending_ends.add(end)
            if i in is_child:
                self._child_energy[(i, end)] = self._kwh(info, native)
            if info.children:
                self._held.append((end, i, payload))
                self._own_energy[(i, end)] = self._kwh(info, native)
            else:
                out.append(Message(self.topics.energy(info.device.id), payload))
        return out

    def _kwh(self, info: DeviceInfo, native: float) -> float:
        if info.carrier is Carrier.NATURAL_GAS:
            return native * self.config.carbon.natural_gas.kwh_per_m3
        return native if info.carrier is Carrier.ELECTRICITY else 0.0

    def _energy_payload(
        self, info: DeviceInfo, end: int, native: float, flags: int
    ) -> dict[str, object]:
        start = end - self.interval_ms
        factor = self.factors.at(info.carrier, start, end)
        quality = quality_of(flags, info.channel_kind).value
        gas = self.config.carbon.natural_gas
        if info.carrier is Carrier.ELECTRICITY:
            return energy_payload(
                ts=end,
                interval_s=self.interval_s,
                carrier=info.carrier,
                energy_kwh=native,
                co2_kg=native * factor.value,
                ef_kg_per_kwh=factor.value,
                quality=quality,
                has_children=bool(info.children),
            )
        if info.carrier is Carrier.NATURAL_GAS:
            kwh = native * gas.kwh_per_m3
            return energy_payload(
                ts=end,
                interval_s=self.interval_s,
                carrier=info.carrier,
                energy_kwh=kwh,
                co2_kg=native * factor.value,
                ef_kg_per_kwh=factor.value / gas.kwh_per_m3,
                quality=quality,
                volume_m3=native,
                has_children=bool(info.children),
            )
        return energy_payload(
            ts=end,
            interval_s=self.interval_s,
            carrier=info.carrier,
            energy_kwh=0.0,
            co2_kg=0.0,
            ef_kg_per_kwh=None,
            quality=quality,
            units=native,
        )

    def _release_held(self, *, final: bool, older_than: int | None = None) -> list[Message]:
        """Parents wait for their children's energy of the same interval (unmetered)."""
        out: list[Message] = []
        keep: list[tuple[int, int, dict[str, object]]] = []
        for end, i, payload in sorted(self._held, key=lambda h: (h[0], h[1])):
            info = self.devices[i]
            kids = [self._child_energy.get((c, end)) for c in info.children]
            complete = all(k is not None for k in kids)
            # A child without data, or one that started after this interval (its first
            # record is a later one), will never deliver it: waiting would only hold the
            # parent back until the end (or site_hold_s) and behind the site's intensity.
            waiting = any(
                k is None and not self._never_delivers(c, end)
                for c, k in zip(info.children, kids, strict=True)
            )
            if not waiting or final or (older_than is not None and end <= older_than):
                own = self._own_energy.pop((i, end))
                unmetered = own - math.fsum(k for k in kids if k is not None)
                payload["unmetered_kwh"] = num(unmetered) if complete else None
                out.append(Message(self.topics.energy(info.device.id), payload))
                for c in info.children:
                    self._child_energy.pop((c, end), None)
            else:
                keep.append((end, i, payload))
        self._held = keep
        # A child's energy for an interval its parent has already passed (or never had)
        # has no record left to go into: drop it, or it would pile up for ever.
        held = {(end, i) for end, i, _ in keep}
        for c, end in list(self._child_energy):
            p = self._parent_of[c]
            if (end, p) not in held and self._never_delivers(p, end):
                del self._child_energy[(c, end)]
        return out

    def _never_delivers(self, i: int, end: int) -> bool:
        """Device ``i`` has no record to come for the interval ending at ``end``."""
        k = self.engine.k
        c = self.devices[i].channel
        return bool(self.engine.I[c, k.I_HAS_REF] == 0 or self.engine.I[c, k.I_EMITTED_END] >= end)

    # --- site windows --------------------------------------------------------------------

    def _complete_end(self) -> int:
        """The latest interval end that every device with data has closed."""
        k = self.engine.k
        has = self.engine.I[:, k.I_HAS_REF] != 0
        if not has.any():
            return 0
        return int(self.engine.I[has, k.I_EMITTED_END].min())

    def _intensity_messages(self, upto: int) -> list[Message]:
        out = []
        for end in sorted(e for e in self._pending_ends if e <= upto):
            payload = self.intensity_at(end)
            out.append(Message(self.topics.intensity(), payload))
            self._pending_ends.discard(end)
            self.latest_intensity = payload
        return out

    def _fill_weights(self, end_slot: int) -> None:
        """Write each slot's emission factor (per carrier) for the CO2 window sums."""
        k = self.interval_ms // SLOT_MS
        first = max(self._weights_end, end_slot - RING)
        first -= first % k
        for a in range(first, end_slot, k):
            start_ms = a * SLOT_MS
            end_ms = start_ms + self.interval_ms
            el = self.factors.at(Carrier.ELECTRICITY, start_ms, end_ms).value
            g = self.factors.at(Carrier.NATURAL_GAS, start_ms, end_ms).value
            idx = np.arange(a, a + k) % RING
            self._weights[0, idx] = el
            self._weights[1, idx] = g
        self._weights_end = max(self._weights_end, end_slot)

    def _totals(self, first_slots: Sequence[int], end_slots: Sequence[int]) -> list[_Totals]:
        e = self.engine.range_sums(first_slots, end_slots)
        w = self.engine.weighted_range_sums(self.group, self._weights, first_slots, end_slots)
        out = []
        for j in range(len(first_slots)):
            col = e[:, j]
            out.append(
                _Totals(
                    energy_kwh=float(col @ self._energy_w),
                    co2_kg=float(w[:, j] @ self._co2_w),
                    units=float(col @ self._units_w),
                    kgce=float(col @ self._kgce_w),
                )
            )
        return out

    def intensity_at(self, end_ms: int) -> dict[str, object]:
        """Site windows as of the interval ending at ``end_ms``."""
        t = end_ms // SLOT_MS
        self._fill_weights(t)
        day = self.calendar.local_date(end_ms - 1)
        if self._today is not None and day != self._today:
            self._finalize_day(self._today)
        self._today = day
        day_start = self.calendar.day_start_ms(day) // SLOT_MS
        firsts = [t - w for _, w in ROLLING] + [day_start]
        ends = [t] * len(firsts)
        totals = self._totals(firsts, ends)
        windows = {name: tot.payload() for (name, _), tot in zip(ROLLING, totals, strict=False)}
        today = totals[-1]
        month = _Totals()
        for d, tot in self._days.items():
            if (d.year, d.month) == (day.year, day.month) and d < day:
                month = month + tot
        windows["today"] = today.payload()
        windows["month"] = (month + today).payload()
        if end_ms == self.calendar.day_start_ms(date.fromordinal(day.toordinal() + 1)):
            # This record closes the local day: its `today` is the whole day. Kept now,
            # while the ring still holds all of a 25-hour day; an interval later it may not.
            self._days[day] = today
        return intensity_payload(end_ms, windows)

    def _finalize_day(self, day: date) -> None:
        if day in self._days:
            return  # kept by the record that ended it
        a = self.calendar.day_start_ms(day) // SLOT_MS
        b = self.calendar.day_start_ms(date.fromordinal(day.toordinal() + 1)) // SLOT_MS
        self._fill_weights(b)
        self._days[day] = self._totals([a], [b])[0]
        # keep about two months of finished days
        for old in [d for d in self._days if (day.toordinal() - d.toordinal()) > 62]:
            del self._days[old]

    # --- snapshot ------------------------------------------------------------------------

    def save_snapshot(self, path: Path) -> None:
        eng = self.engine
        keys = [s.key for s in eng.specs]
        meta = {
            "keys": keys,
            "interval_s": self.interval_s,
            "seq": {d.device.id: d.seq for d in self.devices},
            "days": {d.isoformat(): vars(t) for d, t in self._days.items()},
            "today": self._today.isoformat() if self._today else None,
            "pending_ends": sorted(self._pending_ends),
            "held": [[end, self.devices[i].device.id, p] for end, i, p in self._held],
            "child_energy": [
                [self.devices[i].device.id, end, v] for (i, end), v in self._child_energy.items()
            ],
            "own_energy": [
                [self.devices[i].device.id, end, v] for (i, end), v in self._own_energy.items()
            ],
            "weights_end": self._weights_end,
        }
        arrays = dict(eng.state_arrays())
        arrays["weights"] = self._weights
        snapshot.write_atomic(path, arrays, meta)

    def load_snapshot(self, path: Path) -> bool:
        """Continue from a snapshot; False (and a fresh start) if there is none."""
        if not path.exists():
            return False
        arrays, meta = snapshot.read(path)
        eng = self.engine
        k = eng.k
        self._check_snapshot(path, arrays, meta)
        old = {key: i for i, key in enumerate(meta["keys"])}
        settings_f = [k.F_WRAP, k.F_MAX_RATE, k.F_TOL_ABS, k.F_TOL_REL, k.F_MAX_GAP_MS]
        for c, spec in enumerate(eng.specs):
            j = old.get(spec.key)
            if j is None:
                continue
            keep_f = eng.F[c, settings_f].copy()
            keep_kind, keep_demand = eng.I[c, k.I_KIND], eng.I[c, k.I_DEMAND]
            eng.I[c] = arrays["I"][j]
            eng.F[c] = arrays["F"][j]
            eng.F[c, settings_f] = keep_f  # the config in force now decides the limits
            eng.I[c, k.I_KIND], eng.I[c, k.I_DEMAND] = keep_kind, keep_demand
            eng.ring_e[c] = arrays["ring_e"][j]
            eng.ring_f[c] = arrays["ring_f"][j]
            eng.events[c] = arrays["events"][j]
            if meta["interval_s"] != self.interval_s and eng.I[c, k.I_HAS_REF]:
                # A new publish interval: continue the counter, restart interval bookkeeping.
                opened = int(eng.I[c, k.I_OPEN_SLOT]) * SLOT_MS
                eng.I[c, k.I_EMITTED_END] = opened // self.interval_ms * self.interval_ms
        same_interval = meta["interval_s"] == self.interval_s
        for dev_id, seq in meta["seq"].items():
            if dev_id in self.by_id:
                self.by_id[dev_id].seq = int(seq)
        self._days = {date.fromisoformat(d): _Totals(**t) for d, t in meta["days"].items()}
        self._today = date.fromisoformat(meta["today"]) if meta["today"] else None
        if same_interval:
            self._weights = arrays["weights"].copy()
            self._weights_end = int(meta["weights_end"])
            self._pending_ends = set(meta["pending_ends"])
            idx = {d.device.id: i for i, d in enumerate(self.devices)}
            self._held = [(end, idx[dev], p) for end, dev, p in meta["held"] if dev in idx]
            self._child_energy = {
                (idx[dev], end): v for dev, end, v in meta["child_energy"] if dev in idx
            }
            self._own_energy = {
                (idx[dev], end): v for dev, end, v in meta["own_energy"] if dev in idx
            }
        return True

    def _check_snapshot(
        self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> None:
        """SnapshotError (before anything is restored) unless the file has what we read."""
        k = self.engine.k
        try:
            n = len(meta["keys"])
            shapes = {
                "I": (n, k.NI),
                "F": (n, k.NF),
                "ring_e": (n, RING),
                "ring_f": (n, RING),
                "events": (n, self.engine.events.shape[1]),
                "weights": self._weights.shape,
            }
            wrong = [a for a, sh in shapes.items() if a not in arrays or arrays[a].shape != sh]
            for name in ("seq", "held", "child_energy", "own_energy", "pending_ends"):
                iter(meta[name])
            int(meta["interval_s"]), int(meta["weights_end"])
            for d, t in meta["days"].items():
                date.fromisoformat(d), _Totals(**t)
            if meta["today"] is not None:
                date.fromisoformat(meta["today"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise snapshot.SnapshotError(f"{path}: incomplete snapshot ({exc!r})") from exc
        if wrong:
            raise snapshot.SnapshotError(
                f"{path}: snapshot arrays {', '.join(wrong)} missing or of another shape"
            )


def readings_from_rows(rows: Iterable[tuple[int, str, Quantity, float | None]]) -> list[Reading]:
    """Group ``(ts, device, quantity, value)`` rows into one reading per (device, ts)."""
    grouped: dict[tuple[str, int], dict[Quantity, float | None]] = {}
    for ts, dev, q, v in rows:
        grouped.setdefault((dev, ts), {})[q] = v
    return [
        Reading(dev, ts, values)
        for (dev, ts), values in sorted(grouped.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
