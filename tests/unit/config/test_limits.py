"""Which glitch limit and wrap range a channel gets (agent/config/limits.py), by hand.

Order: the device's own limit; else twice its profile's rating times the ratios read
from the meter; else the carrier's default. The wrap range of an unsigned integer
counter is 2^bits x scale x the ratios read; 0 while they are not read.
"""

from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.config.limits import (
    CARRIER_DEFAULT,
    ChannelLimit,
    LimitSource,
    channel_limit,
    limit_source,
)
from agent.config.models import AgentConfig
from agent.core.site import SiteCore
from drivers.profile import DeviceKind, ProfileLibrary

LIBRARY = ProfileLibrary()
CONFIG = """
site: {id: plant-a, timezone: UTC}
gateway: {id: gw-01}
buses: [{id: b, tcp: {host: 127.0.0.1, port: 502}}]
devices:
  - {id: adl, bus: b, unit: 1, profile: acrel-adl400}
  - {id: adl-own, bus: b, unit: 2, profile: acrel-adl400, max_power_kw: 90}
  - {id: sdm120, bus: b, unit: 3, profile: eastron-sdm120}
  - {id: sdm630, bus: b, unit: 4, profile: eastron-sdm630}
  - {id: gas, bus: b, unit: 5, kind: gas,
     registers: [{quantity: gas_volume_m3, table: holding, address: 0, type: uint32, scale: 0.1}]}
  - {id: parts, bus: b, unit: 6, kind: production, max_units_per_h: 7200,
     registers: [{quantity: output_units, table: holding, address: 0, type: uint16}]}
  - {id: power, bus: b, unit: 7,
     ratios: {ct: {table: holding, address: 10, type: uint16}},
     registers: [{quantity: active_power_kw, table: holding, address: 0, type: int32,
                  scale: 0.001, ratios: [ct]}]}
"""


def config() -> AgentConfig:
    return parse_config(CONFIG, "t.yaml", profiles=LIBRARY)


def limit(device_id: str, ratios: dict[str, float] | None) -> ChannelLimit:
    (dev,) = [d for d in config().resolved(LIBRARY) if d.device.id == device_id]
    return channel_limit(dev, ratios)


def test_the_carrier_defaults() -> None:
    assert CARRIER_DEFAULT == {
        DeviceKind.ELECTRICITY: 2_000_000.0,
        DeviceKind.GAS: 200_000.0,
        DeviceKind.PRODUCTION: 1_000_000_000.0,
    }


@pytest.mark.parametrize(
    ("device", "ratios", "expected"),
    [
        # ADL400: uint32 x 0.01 kWh x PT x CT; rated 3 x 230 V x 80 A = 55.2 kW.
        # PT 10 x CT 40 = 400: limit 2 x 55.2 x 400 = 44,160 kW;
        # wrap 2^32 x 0.01 x 400 = 42,949,672.96 x 400 = 17,179,869,184 kWh.
        ("adl", {"pt": 10.0, "ct": 40.0}, (44_160.0, LimitSource.RATINGS, 17_179_869_184.0)),
        # CT 80: both double
        ("adl", {"pt": 10.0, "ct": 80.0}, (88_320.0, LimitSource.RATINGS, 34_359_738_368.0)),
        # direct connected (1 x 1): the meter's own 110.4 kW, and the register's own range
        ("adl", {"pt": 1.0, "ct": 1.0}, (110.4, LimitSource.RATINGS, 42_949_672.96)),
        # ratios not read (yet, or in `replay`): the carrier default, no wrap
        ("adl", None, (2e6, LimitSource.CARRIER, 0.0)),
        ("adl", {"pt": 10.0}, (2e6, LimitSource.CARRIER, 0.0)),
        # the device's own limit wins, the wrap still follows the ratios
        ("adl-own", {"pt": 10.0, "ct": 40.0}, (90.0, LimitSource.CONFIG, 17_179_869_184.0)),
        ("adl-own", None, (90.0, LimitSource.CONFIG, 0.0)),
        # SDM120: float32, no ratios: 2 x 1 x 230 V x 45 A = 20.7 kW, cannot wrap
        ("sdm120", {}, (20.7, LimitSource.RATINGS, 0.0)),
        ("sdm120", None, (20.7, LimitSource.RATINGS, 0.0)),
        # SDM630: no rating in its profile (an SDM630MCT answers the same map)
        ("sdm630", None, (2e6, LimitSource.CARRIER, 0.0)),
        # inline gas counter, uint32 x 0.1 m3: gas default; wrap 2^32 x 0.1
        ("gas", None, (2e5, LimitSource.CARRIER, 429_496_729.6)),
        # production with its own limit; uint16 wraps at 65,536 units
        ("parts", None, (7200.0, LimitSource.CONFIG, 65_536.0)),
        # a power-only meter scaled by a CT read: the electricity default (no rating)
        ("power", {"ct": 40.0}, (2e6, LimitSource.CARRIER, 0.0)),
    ],
)
def test_which_limit_applies(
    device: str, ratios: dict[str, float] | None, expected: tuple[float, LimitSource, float]
) -> None:
    got = limit(device, ratios)
    assert (got.max_rate_per_h, got.source, got.wrap) == pytest.approx(expected)
    assert got.source is expected[1]


def test_check_names_the_limit_that_will_apply() -> None:
    """What ``check`` reports: ratings count as the limit, the ratios come at run time."""
    sources = {d.device.id: limit_source(d) for d in config().resolved(LIBRARY)}
    assert sources == {
        "adl": LimitSource.RATINGS,
        "adl-own": LimitSource.CONFIG,
        "sdm120": LimitSource.RATINGS,
        "sdm630": LimitSource.CARRIER,
        "gas": LimitSource.CARRIER,
        "parts": LimitSource.CONFIG,
        "power": LimitSource.CARRIER,
    }


def test_the_site_sets_the_engine_from_the_ratios_read() -> None:
    """SiteCore.set_ratios: the engine's limit and wrap follow, from the next reading on."""
    site = SiteCore(config(), LIBRARY)
    c = site.by_id["adl"].channel
    assert (site.engine.max_rate(c), site.engine.wrap(c)) == (2e6, 0.0)
    site.set_ratios("adl", {"pt": 10.0, "ct": 40.0})
    assert (site.engine.max_rate(c), site.engine.wrap(c)) == pytest.approx(
        (44_160.0, 17_179_869_184.0)
    )
    site.set_ratios("adl", {"pt": 10.0, "ct": 80.0})
    assert (site.engine.max_rate(c), site.engine.wrap(c)) == pytest.approx(
        (88_320.0, 34_359_738_368.0)
    )
    p = site.by_id["power"].channel
    site.set_ratios("power", {"ct": 40.0})
    assert (site.engine.max_rate(p), site.engine.wrap(p)) == (2e6, 0.0)
