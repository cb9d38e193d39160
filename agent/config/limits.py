"""Which glitch limit and which wrap range a device's counter gets (docs/core.md).

Every counted channel has a step limit, so one garbage value can never add a
million kWh. In order: the device's own ``max_power_kw`` / ``max_flow_m3_h`` /
``max_units_per_h``; else twice its profile's datasheet rating, times the
transformer ratios read from the meter; else a conservative default for its
carrier. ``check`` warns where only the carrier default applies. The wrap range
of an unsigned integer counter is 2^bits x scale x the ratios read, so a meter
whose PT x CT is 400 wraps at 400 times the register's own range.

Here, not in the core: ``check`` says which limit a device gets without loading
the core, and the core asks the same function when ratios are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agent.config.models import ResolvedDevice
from drivers.profile import DeviceKind, Profile
from drivers.quantities import Quantity
from drivers.registers import RegisterSpec


class LimitSource(StrEnum):
    """Where a channel's limit comes from."""

    CONFIG = "config"
    RATINGS = "ratings"
    CARRIER = "carrier default"


#: The limit of a device without its own and without a rating, per carrier, in its unit
#: per hour. Conservative: no true reading of any meter the agent runs on exceeds them.
#: A counter value 10^6 kWh (m3) too high still does at any polling interval under half
#: an hour (five hours for gas).
#:
#: * electricity, 2,000,000 kW: the plausible range of a power reading (2 GW, twice the
#:   largest single industrial load, an aluminium smelter at ~1 GW): a counter step
#:   implying more power than any power reading may show is no measurement;
#: * natural gas, 200,000 m3/h: the same 2 GW of fuel at ~10 kWh/m3 (the gas burnt by a
#:   1 GW gas-fired power station);
#: * production, 10^9 units/h: production counters count pieces, kilograms or grams;
#:   a cement plant's 10,000 t a day is 4 x 10^8 g/h. It catches only absurd values:
#:   give a production counter its own ``max_units_per_h``.
CARRIER_DEFAULT: Mapping[DeviceKind, float] = {
    DeviceKind.ELECTRICITY: 2e6,
    DeviceKind.GAS: 2e5,
    DeviceKind.PRODUCTION: 1e9,
}
#: The config key that sets a device's own limit, per carrier, and its unit.
OVERRIDE_KEY: Mapping[DeviceKind, tuple[str, str]] = {
    DeviceKind.ELECTRICITY: ("max_power_kw", "kW"),
    DeviceKind.GAS: ("max_flow_m3_h", "m3/h"),
    DeviceKind.PRODUCTION: ("max_units_per_h", "units/h"),
}
#: A rating is the meter's maximum at its nominal voltage; it measures on at up to 1.2
#: to 1.3 Un (the built-in meters' operating ranges) and a little above Imax. Twice
#: the rating passes all of that, and nothing 10^3 too high.
RATING_MARGIN = 2.0


@dataclass(frozen=True)
class ChannelLimit:
    """The glitch limit and wrap range in force for one channel."""

    #: The largest plausible increase per hour (kW, m3/h, units/h; |P| for power).
    max_rate_per_h: float
    source: LimitSource
    #: The counter's range in its unit; 0: it cannot wrap, or its ratios are not read yet.
    wrap: float


def ratio_product(spec: RegisterSpec, ratios: Mapping[str, float] | None) -> float | None:
    """The product of the register's ratios as read (1 without any); None while one of
    them has not been read (``ratios`` None: not yet, or never, as in ``replay``)."""
    product = 1.0
    for name in spec.ratios:
        value = None if ratios is None else ratios.get(name)
        if value is None:
            return None
        product *= value
    return product


def limit_source(dev: ResolvedDevice) -> LimitSource:
    """Where the limit of a device's channel comes from once its meter answers."""
    if dev.max_rate_per_h is not None:
        return LimitSource.CONFIG
    if isinstance(dev.regmap, Profile) and dev.regmap.ratings is not None:
        return LimitSource.RATINGS
    return LimitSource.CARRIER


def channel_limit(
    dev: ResolvedDevice, ratios: Mapping[str, float] | None, quantity: Quantity | None = None
) -> ChannelLimit:
    """The limit and wrap range of the channel that counts ``dev`` (or its ``quantity``, an
    export counter), with ``ratios`` as read from the meter (None: not read). A rating
    scaled by ratios not read yet cannot be used: until they are, the carrier default
    applies."""
    assert dev.main is not None  # a loaded config counts every device
    spec = dev.regmap.spec(quantity or dev.main)
    assert spec is not None  # the main quantity is one of its registers
    product = ratio_product(spec, ratios)
    wrap = 0.0
    if not (spec.type.is_float or spec.type.is_signed) and product is not None:
        wrap = float(1 << spec.type.bits) * abs(spec.scale) * product
    own = dev.max_rate_per_h
    if own is not None:
        return ChannelLimit(own, LimitSource.CONFIG, wrap)
    ratings = dev.regmap.ratings if isinstance(dev.regmap, Profile) else None
    if ratings is not None and product is not None:
        return ChannelLimit(RATING_MARGIN * ratings.max_per_h * product, LimitSource.RATINGS, wrap)
    return ChannelLimit(CARRIER_DEFAULT[dev.kind], LimitSource.CARRIER, wrap)


def carrier_default_warning(dev: ResolvedDevice) -> str:
    """What ``check`` says of a device whose limit is only its carrier's default."""
    key, unit = OVERRIDE_KEY[dev.kind]
    default = CARRIER_DEFAULT[dev.kind]
    why = "its profile gives no rating" if dev.device.profile else "it has inline registers"
    return (
        f"device '{dev.device.id}': its glitch limit is only the {dev.kind.value} default, "
        f"{default:,.0f} {unit} ({why}); set {key} to the most this meter measures, "
        "or a value a thousand times too high is counted (docs/core.md)"
    )


__all__ = [
    "CARRIER_DEFAULT",
    "OVERRIDE_KEY",
    "RATING_MARGIN",
    "ChannelLimit",
    "LimitSource",
    "carrier_default_warning",
    "channel_limit",
    "limit_source",
    "ratio_product",
]
