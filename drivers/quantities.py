"""The one vocabulary every profile, config and payload speaks.

The unit is part of the name, so a value can never travel without it; profiles
convert from the meter's own units (W, Wh, 0.01 kWh, secondary-side values)
into these. `active_power_kw` > 0 means the site draws power.
"""

from __future__ import annotations

from enum import StrEnum


class Quantity(StrEnum):
    VOLTAGE_L1_V = "voltage_l1_v"
    VOLTAGE_L2_V = "voltage_l2_v"
    VOLTAGE_L3_V = "voltage_l3_v"
    VOLTAGE_L1_L2_V = "voltage_l1_l2_v"
    VOLTAGE_L2_L3_V = "voltage_l2_l3_v"
    VOLTAGE_L3_L1_V = "voltage_l3_l1_v"
    CURRENT_L1_A = "current_l1_a"
    CURRENT_L2_A = "current_l2_a"
    CURRENT_L3_A = "current_l3_a"
    CURRENT_N_A = "current_n_a"
    ACTIVE_POWER_KW = "active_power_kw"
    ACTIVE_POWER_L1_KW = "active_power_l1_kw"
    ACTIVE_POWER_L2_KW = "active_power_l2_kw"
    ACTIVE_POWER_L3_KW = "active_power_l3_kw"
    REACTIVE_POWER_KVAR = "reactive_power_kvar"
    APPARENT_POWER_KVA = "apparent_power_kva"
    POWER_FACTOR = "power_factor"
    FREQUENCY_HZ = "frequency_hz"
    ENERGY_IMPORT_KWH = "energy_import_kwh"
    ENERGY_EXPORT_KWH = "energy_export_kwh"
    REACTIVE_ENERGY_IMPORT_KVARH = "reactive_energy_import_kvarh"
    REACTIVE_ENERGY_EXPORT_KVARH = "reactive_energy_export_kvarh"
    GAS_VOLUME_M3 = "gas_volume_m3"
    OUTPUT_UNITS = "output_units"

    @property
    def is_counter(self) -> bool:
        """Cumulative counters are differenced by the core; everything else is a sample."""
        return self in COUNTERS


COUNTERS = frozenset(
    {
        Quantity.ENERGY_IMPORT_KWH,
        Quantity.ENERGY_EXPORT_KWH,
        Quantity.REACTIVE_ENERGY_IMPORT_KVARH,
        Quantity.REACTIVE_ENERGY_EXPORT_KVARH,
        Quantity.GAS_VOLUME_M3,
        Quantity.OUTPUT_UNITS,
    }
)
