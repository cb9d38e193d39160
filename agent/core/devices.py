"""A config's devices as the core counts them: one channel each, a carrier, a share of the site.

Device ``i`` of the config is counted on channel ``i`` of the engine, reading the
quantity the config resolved as its main one (:mod:`agent.config.kinds`: its main
counter or, for an electricity meter without one, its ``active_power_kw``,
integrated); the core takes that answer and never works it out again. The register
behind it decides how the channel is corrected (wrap range, resolution); the
device's limit decides what is a glitch (:mod:`agent.config.limits`: its own, its
profile's rating, or its carrier's default). Both follow the transformer ratios read
from the meter (:meth:`DeviceChannels.limit`). :class:`SiteWeights` turns per-channel
sums in native units into the site's kWh, CO2, units and kgce: root meters only,
so no flow is counted twice.

An electricity meter that can count export gets a second channel for it,
appended after the devices' channels (so device ``i`` stays on channel ``i``):
its export counter, where its import counter is its main quantity, or, for a
meter counted by its active power, the same power readings integrated where
negative (``POWER_EXPORT``). Its energy is the record's ``export_kwh``; in the
site's sums it only lowers the net import (``net_kwh`` weight -1 for a root
meter's): energy, CO2 and kgce stay import, as CO2 is emitted by imported energy
only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from agent.config.kinds import nothing_to_count
from agent.config.limits import ChannelLimit, channel_limit
from agent.config.models import AgentConfig, Device, ResolvedDevice
from agent.contract.vocab import Carrier
from agent.core.channels import ChannelKind, ChannelSpec
from agent.core.snapshot import Snapshot
from drivers.profile import DeviceKind, ProfileLibrary
from drivers.quantities import Quantity
from drivers.registers import DataType

#: Weight groups for CO2 windows: one emission-factor row per carrier.
_GROUP = {Carrier.ELECTRICITY: 0, Carrier.NATURAL_GAS: 1, Carrier.PRODUCTION: -1}


class SiteError(ValueError):
    """A device cannot be counted (no counter and no power register)."""


@dataclass
class DeviceInfo:
    """A device on its channel: what it is (resolved by the config) and where it is counted."""

    resolved: ResolvedDevice
    channel: int
    channel_kind: ChannelKind
    #: What its channel reads: the resolved main quantity.
    quantity: Quantity
    #: The last ``seq`` of its measurements messages (they count from 1 per device).
    seq: int = 0
    #: The channel of its export (None: it has none, or is not counted by import or power).
    export_channel: int | None = None
    #: What that channel reads: the export counter, or the same active power.
    export_quantity: Quantity | None = None

    @property
    def device(self) -> Device:
        return self.resolved.device

    @property
    def kind(self) -> DeviceKind:
        return self.resolved.kind

    @property
    def carrier(self) -> Carrier:
        return self.resolved.carrier


def has_export(dev: ResolvedDevice) -> bool:
    """Counted by its import counter, with an export counter beside it."""
    return (
        dev.main is Quantity.ENERGY_IMPORT_KWH
        and dev.regmap.spec(Quantity.ENERGY_EXPORT_KWH) is not None
    )


def export_quantity(dev: ResolvedDevice) -> Quantity | None:
    """What its export channel reads: its export counter, or (a meter counted by its
    active power) that power again, integrated where negative; None: no export."""
    if has_export(dev):
        return Quantity.ENERGY_EXPORT_KWH
    if dev.main is Quantity.ACTIVE_POWER_KW and dev.kind is DeviceKind.ELECTRICITY:
        return Quantity.ACTIVE_POWER_KW
    return None


def channel_spec(
    dev: ResolvedDevice, max_gap_s: float, quantity: Quantity | None = None, *, export: bool = False
) -> tuple[ChannelSpec, Quantity]:
    """The channel that counts this device's main flow (or ``quantity``, its export
    counter; ``export`` and its power: the power's negative part), and the quantity it
    reads. Its limit and wrap range are those before the meter's ratios are read."""
    device, main = dev.device, dev.main
    if main is None:
        why = nothing_to_count(dev.kind, dev.regmap.quantities)
        raise SiteError(f"device '{device.id}': {why}")
    main = quantity or main
    gap = max(max_gap_s, 3 * device.interval_s)
    limit = channel_limit(dev, None, main)
    if not main.is_counter:  # an electricity meter counted by its power
        kind = ChannelKind.POWER_EXPORT if export else ChannelKind.POWER
        # The export channel reads the same quantity: its key must differ (snapshot rows).
        spec = ChannelSpec(
            f"{device.id}/{main.value}" + ("/export" if export else ""),
            kind,
            max_rate_per_h=limit.max_rate_per_h,
            max_gap_s=gap,
        )
        return spec, main
    reg = dev.regmap.spec(main)
    assert reg is not None  # the main quantity is one of its registers
    tol_abs = tol_rel = 0.0
    if reg.type is DataType.FLOAT32:
        tol_rel = 2.0**-22  # two float32 steps: quantisation is not a glitch
    elif reg.type is DataType.FLOAT64:
        tol_rel = 2.0**-50
    else:
        tol_abs = abs(reg.scale)
    spec = ChannelSpec(
        f"{device.id}/{main.value}",
        ChannelKind.COUNTER,
        wrap=limit.wrap,
        max_rate_per_h=limit.max_rate_per_h,
        tol_abs=tol_abs,
        tol_rel=tol_rel,
        max_gap_s=gap,
    )
    return spec, main


@dataclass(frozen=True)
class SiteWeights:
    """Per channel, what one native unit (kWh, m3, unit) adds to the site's windows."""

    #: The emission-factor row of the channel's carrier (-1: no CO2, production).
    group: np.ndarray
    energy_kwh: np.ndarray
    #: 1 where the factor-weighted sum counts as site CO2 (roots, not production).
    co2: np.ndarray
    units: np.ndarray
    kgce: np.ndarray
    #: The site's net import: +1 for root electricity meters' import, -1 for their export.
    net_kwh: np.ndarray

    @classmethod
    def of(cls, devices: list[DeviceInfo], config: AgentConfig) -> SiteWeights:
        roots = [d.device.parent is None for d in devices]
        gas, tce = config.carbon.natural_gas, config.tce

        def roots_by_carrier(el: float, ng: float) -> np.ndarray:
            by = {Carrier.ELECTRICITY: el, Carrier.NATURAL_GAS: ng, Carrier.PRODUCTION: 0.0}
            return np.array([by[d.carrier] * r for d, r in zip(devices, roots, strict=True)])

        exporting = [d for d in devices if d.export_channel is not None]
        extra = np.zeros(len(exporting))  # export: no energy, CO2, units or kgce

        def add_exports(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, extra.astype(a.dtype)])

        return cls(
            group=add_exports(np.array([_GROUP[d.carrier] for d in devices], dtype=np.int64)),
            energy_kwh=add_exports(roots_by_carrier(1.0, gas.kwh_per_m3)),
            co2=add_exports(roots_by_carrier(1.0, 1.0)),
            units=add_exports(
                np.array([1.0 if d.carrier is Carrier.PRODUCTION else 0.0 for d in devices])
            ),
            kgce=add_exports(
                roots_by_carrier(tce.electricity_kgce_per_kwh, tce.natural_gas_kgce_per_m3)
            ),
            net_kwh=np.concatenate(
                [roots_by_carrier(1.0, 0.0), [-float(d.device.parent is None) for d in exporting]]
            ),
        )

    @property
    def net_import(self) -> bool:
        """A root meter can export: the site's windows carry its net import."""
        return bool((self.net_kwh < 0).any())


class DeviceChannels:
    """The config's devices in channel order, what each counts, and its weight in the site.

    Keeps one piece of state across restarts: each device's measurements ``seq``.
    """

    def __init__(self, config: AgentConfig, library: ProfileLibrary) -> None:
        self._kwh_per_m3 = config.carbon.natural_gas.kwh_per_m3
        self.devices: list[DeviceInfo] = []
        self.by_id: dict[str, DeviceInfo] = {}
        self.specs: list[ChannelSpec] = []
        #: Per channel: tracks 15-minute demand (electricity).
        self.demand: list[bool] = []
        for dev in config.resolved(library):
            spec, quantity = channel_spec(dev, config.core.max_gap_s)
            info = DeviceInfo(dev, len(self.specs), spec.kind, quantity)
            self.specs.append(spec)
            self.demand.append(dev.kind is DeviceKind.ELECTRICITY)
            self.devices.append(info)
            self.by_id[dev.device.id] = info
        #: Per channel, the index of the device it belongs to (export channels too).
        self.device_of = list(range(len(self.devices)))
        for i, info in enumerate(self.devices):
            export = export_quantity(info.resolved)
            if export is not None:
                spec, _ = channel_spec(info.resolved, config.core.max_gap_s, export, export=True)
                info.export_channel = len(self.specs)
                info.export_quantity = export
                self.specs.append(spec)
                self.demand.append(False)
                self.device_of.append(i)
        self.weights = SiteWeights.of(self.devices, config)

    def index(self, device_id: str) -> int:
        return self.by_id[device_id].channel

    def limit(
        self, info: DeviceInfo, ratios: Mapping[str, float] | None, quantity: Quantity | None = None
    ) -> ChannelLimit:
        """The glitch limit and wrap range of a device's channel (or its ``quantity``'s,
        the export counter's) with these ratios read."""
        limit = channel_limit(info.resolved, ratios, quantity)
        if info.channel_kind.is_power:
            return ChannelLimit(limit.max_rate_per_h, limit.source, 0.0)  # power never wraps
        return limit

    def parents(self) -> list[int | None]:
        """Per device, the index of its parent meter (None: a root)."""
        return [
            None if d.device.parent is None else self.index(d.device.parent) for d in self.devices
        ]

    def limits(
        self, info: DeviceInfo, ratios: Mapping[str, float] | None
    ) -> list[tuple[int, ChannelLimit]]:
        """Each channel of a device (main first, then export) and its limit with these
        ratios read."""
        return [(c, self.limit(info, ratios, q)) for c, q in self.reads(info)]

    @staticmethod
    def reads(info: DeviceInfo) -> list[tuple[int, Quantity]]:
        """The device's channels and the quantity each reads: main first, then export."""
        out = [(info.channel, info.quantity)]
        if info.export_channel is not None and info.export_quantity is not None:
            out.append((info.export_channel, info.export_quantity))
        return out

    def exported(
        self, channel: np.ndarray, end_ms: np.ndarray, energy: np.ndarray
    ) -> dict[tuple[int, int], float]:
        """The export channels' closed intervals as (device, end): kWh. An export channel
        closes its intervals with its device's, from the same readings."""
        n = len(self.devices)
        return {
            (self.device_of[c], e): x
            for c, e, x in zip(channel.tolist(), end_ms.tolist(), energy.tolist(), strict=True)
            if c >= n
        }

    def quantity_of(self, c: int) -> Quantity:
        """What channel ``c`` reads."""
        info = self.devices[self.device_of[c]]
        if c == info.channel or info.export_quantity is None:
            return info.quantity
        return info.export_quantity

    def kwh(self, i: int, native: float) -> float:
        """Device ``i``'s energy in kWh for ``native`` units of its carrier (0: production)."""
        carrier = self.devices[i].carrier
        if carrier is Carrier.NATURAL_GAS:
            return native * self._kwh_per_m3
        return native if carrier is Carrier.ELECTRICITY else 0.0

    # --- snapshot (agent.core.snapshot.Part) -----------------------------------------

    def save(self, snap: Snapshot) -> None:
        snap.put("seq", {d.device.id: d.seq for d in self.devices})

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        seqs = snap.value("seq", lambda v: {str(dev): int(seq) for dev, seq in v.items()})

        def restore() -> None:
            for dev_id, seq in seqs.items():
                if dev_id in self.by_id:
                    self.by_id[dev_id].seq = seq

        return restore
