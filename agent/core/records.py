"""The records the core publishes, built from its numbers.

An interval's ``energy`` record from a device's native energy (kWh, m3, units)
and the emission factor of that interval; a parent's unmetered energy once the
tree knows it; the site's ``intensity`` record from its window totals. The
payload shapes themselves (rounding, field names, key order) are the contract's,
in :mod:`agent.contract`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config.models import AgentConfig
from agent.contract.build import energy_payload, intensity_payload, opt, window_values
from agent.contract.vocab import Carrier
from agent.core.channels import quality_of
from agent.core.devices import DeviceInfo
from agent.core.factors import EmissionFactors
from agent.core.windows import MISSING_NAMED, Totals


class RecordBuilder:
    def __init__(self, config: AgentConfig, factors: EmissionFactors) -> None:
        self.interval_s = config.publish.energy_interval_s
        self.kwh_per_m3 = config.carbon.natural_gas.kwh_per_m3
        self.factors = factors

    def energy(
        self,
        info: DeviceInfo,
        end: int,
        *,
        native: float,
        kwh: float,
        flags: int,
        has_children: bool,
        covered_ms: tuple[int, int] = (0, 0),
        export_kwh: float | None = None,
    ) -> dict[str, Any]:
        """The record of the interval ending at ``end``: ``native`` units of the device's
        carrier (``kwh`` of energy), quality from the interval's slot ``flags``, CO2 at
        the interval's factor, coverage from the ms measured and interpolated. The
        energy exported (``export_kwh``: its export counter or power) has no CO2: it is not
        emitted by this site."""
        start = end - self.interval_s * 1000
        factor = self.factors.at(info.carrier, start, end).value
        interval_ms = self.interval_s * 1000
        measured, interpolated = covered_ms[0] / interval_ms, covered_ms[1] / interval_ms
        values: dict[str, Any] = {
            "ts": end,
            "interval_s": self.interval_s,
            "carrier": info.carrier,
            "quality": quality_of(flags, info.channel_kind).value,
            "measured_share": measured,
            "interpolated_share": interpolated,
            "missing_share": max(0.0, 1.0 - measured - interpolated),
            "energy_kwh": kwh,
            **self.tree_tags(info),
        }
        if info.carrier is Carrier.PRODUCTION:
            values.update(co2_kg=0.0, ef_kg_per_kwh=None, units=native)
            return energy_payload(**values)
        values["co2_kg"] = native * factor
        if info.carrier is Carrier.NATURAL_GAS:
            values.update(ef_kg_per_kwh=factor / self.kwh_per_m3, volume_m3=native)
        else:
            values["ef_kg_per_kwh"] = factor
            if export_kwh is not None:
                values["export_kwh"] = export_kwh
        if has_children:
            values["unmetered_kwh"] = None  # until the children's energy is known
        return energy_payload(**values)

    @staticmethod
    def tree_tags(info: DeviceInfo) -> dict[str, str]:
        """Its place in the meter tree, for the database: a site's total or peak sums the
        roots only (a child's energy is inside its parent's)."""
        parent = info.device.parent
        return {"root": "true"} if parent is None else {"root": "false", "parent": parent}

    @staticmethod
    def set_unmetered(payload: dict[str, Any], kwh: float | None, incomplete: int = 0) -> None:
        """A parent's record, once its children's energy is known (None: it is not), and
        how many children did not cover the interval."""
        payload["unmetered_kwh"] = opt(kwh)
        payload["incomplete_children"] = incomplete

    @staticmethod
    def intensity(end: int, windows: Mapping[str, Totals], rev: int = 0) -> dict[str, Any]:
        values = {
            name: window_values(
                t.energy_kwh,
                t.co2_kg,
                t.units,
                t.kgce,
                (t.share(t.measured_ms), t.share(t.interpolated_ms), t.missing_share),
                (len(t.missing), list(t.missing[:MISSING_NAMED])),
                t.net_import_kwh,
            )
            for name, t in windows.items()
        }
        return intensity_payload(end, values, rev)
