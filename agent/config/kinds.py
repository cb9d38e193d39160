"""What a device is: its kind, the carrier it meters, what counts it and how it is shown.

The one place these rules live. The loader checks a config's raw data against
them (so ``check`` lists every problem in one run), the config model resolves
each device with them (:meth:`agent.config.models.AgentConfig.resolved`), and
the core, the live page, the demo and replay read that resolved view: none of
them decides again what a device is.
"""

from __future__ import annotations

from collections.abc import Collection

from agent.contract.vocab import Carrier
from drivers.profile import DeviceKind, Profile
from drivers.quantities import Quantity

#: What counts a device of each kind, best first: its main counter or, for an
#: electricity meter without one, its active power, integrated.
COUNTED_BY: dict[DeviceKind, tuple[Quantity, ...]] = {
    DeviceKind.ELECTRICITY: (Quantity.ENERGY_IMPORT_KWH, Quantity.ACTIVE_POWER_KW),
    DeviceKind.GAS: (Quantity.GAS_VOLUME_M3,),
    DeviceKind.PRODUCTION: (Quantity.OUTPUT_UNITS,),
}

#: The carrier of each kind's records: which emission factor and which site totals.
CARRIER: dict[DeviceKind, Carrier] = {
    DeviceKind.ELECTRICITY: Carrier.ELECTRICITY,
    DeviceKind.GAS: Carrier.NATURAL_GAS,
    DeviceKind.PRODUCTION: Carrier.PRODUCTION,
}

#: The unit a main quantity is shown in, on the live page and in the demo.
UNIT: dict[Quantity, str] = {
    Quantity.ENERGY_IMPORT_KWH: "kWh",
    Quantity.ACTIVE_POWER_KW: "kW",
    Quantity.GAS_VOLUME_M3: "m³",
    Quantity.OUTPUT_UNITS: "units",
}


def kind_of(declared: DeviceKind | None, profile: Profile | None) -> DeviceKind:
    """The device's own ``kind:``, else its profile's; inline registers meter electricity."""
    if declared is not None:
        return declared
    return profile.kind if profile is not None else DeviceKind.ELECTRICITY


def main_quantity(kind: DeviceKind, quantities: Collection[Quantity]) -> Quantity | None:
    """The quantity that counts a device of ``kind`` with these registers; None: nothing does."""
    return next((q for q in COUNTED_BY[kind] if q in quantities), None)


def nothing_to_count(kind: DeviceKind, quantities: Collection[Quantity]) -> str | None:
    """Why a device of ``kind`` with these registers cannot be counted, or None if it can."""
    if main_quantity(kind, quantities) is not None:
        return None
    names = " or ".join(q.value for q in COUNTED_BY[kind])
    article = "an" if kind.value[0] in "aeiou" else "a"
    return f"{article} {kind.value} device needs a register for {names} to be counted"
