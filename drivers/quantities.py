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


#: Where a reading of each quantity can lie at all, both ends included: a value
#: outside is not a measurement (a float32 3.4e38, a register read at the wrong
#: scale, a meter's self-test pattern) and is published as null and named
#: implausible. These are the defaults for any meter; a profile (or a device with
#: inline registers) narrows them to what its hardware can measure (`plausible:`).
#: They must never null a true reading anywhere the agent runs, from a 230 V
#: sub-meter to an incomer that reports primary values through PT and CT ratios:
#:
#: * voltages: IEC 60038's highest voltage for equipment of the 220 kV class is
#:   245 kV line to line (141 kV line to neutral); nothing a plant is fed with is
#:   higher. Never negative: an RMS value.
#: * currents: up to 100 kA (the largest low-voltage switchgear is rated 6.3 kA,
#:   short-circuit withstand of busbars reaches 100 kA). Signed, because some
#:   meters sign the current with the direction of the power flow.
#: * power: +-2 GW total (the largest single industrial loads, aluminium smelters,
#:   draw about 1 GW), +-1 GW per phase. Apparent power too is allowed either
#:   sign: some meters give it the sign of the active power.
#: * power factor: -1..1, widened by 0.001 (one step of the coarsest power-factor
#:   register in the built-in profiles) so a meter's rounding of P/S to 1.001 is
#:   not nulled; a power factor of 230 is.
#: * frequency: 40..70 Hz covers 50 and 60 Hz grids and island generators swinging
#:   well beyond their limits; a meter without measuring voltage that reads 0 Hz
#:   is nulled, which is what it means.
#: * counters: never negative; 1e12 kWh (1,000 TWh: a gigawatt for 114 years)
#:   is no honest reading, 3.4e38 is. Production counts get 1e15.
PLAUSIBLE: dict[Quantity, tuple[float, float]] = {
    Quantity.VOLTAGE_L1_V: (0.0, 150e3),
    Quantity.VOLTAGE_L2_V: (0.0, 150e3),
    Quantity.VOLTAGE_L3_V: (0.0, 150e3),
    Quantity.VOLTAGE_L1_L2_V: (0.0, 250e3),
    Quantity.VOLTAGE_L2_L3_V: (0.0, 250e3),
    Quantity.VOLTAGE_L3_L1_V: (0.0, 250e3),
    Quantity.CURRENT_L1_A: (-100e3, 100e3),
    Quantity.CURRENT_L2_A: (-100e3, 100e3),
    Quantity.CURRENT_L3_A: (-100e3, 100e3),
    Quantity.CURRENT_N_A: (-100e3, 100e3),
    Quantity.ACTIVE_POWER_KW: (-2e6, 2e6),
    Quantity.ACTIVE_POWER_L1_KW: (-1e6, 1e6),
    Quantity.ACTIVE_POWER_L2_KW: (-1e6, 1e6),
    Quantity.ACTIVE_POWER_L3_KW: (-1e6, 1e6),
    Quantity.REACTIVE_POWER_KVAR: (-2e6, 2e6),
    Quantity.APPARENT_POWER_KVA: (-2e6, 2e6),
    Quantity.POWER_FACTOR: (-1.001, 1.001),
    Quantity.FREQUENCY_HZ: (40.0, 70.0),
    Quantity.ENERGY_IMPORT_KWH: (0.0, 1e12),
    Quantity.ENERGY_EXPORT_KWH: (0.0, 1e12),
    Quantity.REACTIVE_ENERGY_IMPORT_KVARH: (0.0, 1e12),
    Quantity.REACTIVE_ENERGY_EXPORT_KVARH: (0.0, 1e12),
    Quantity.GAS_VOLUME_M3: (0.0, 1e12),
    Quantity.OUTPUT_UNITS: (0.0, 1e15),
}
