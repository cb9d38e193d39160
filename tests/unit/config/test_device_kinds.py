"""What a device is (kind, carrier, what counts it) is decided once, by the config.

`check` refuses a device nothing counts; the core counts every device `check`
accepts, on the quantity the config resolved; the live page shows its unit.
"""

from __future__ import annotations

import itertools
import textwrap

import pytest
import yaml

from agent.config import ConfigError, parse_config
from agent.config.models import AgentConfig
from agent.contract.vocab import Carrier
from agent.core.channels import ChannelKind
from agent.core.devices import DeviceChannels, SiteError
from drivers.profile import DeviceKind, ProfileLibrary
from drivers.quantities import Quantity

LIBRARY = ProfileLibrary()

HEAD = """\
site: {id: plant-a}
gateway: {id: gw-01}
buses:
  - {id: line-a, tcp: {host: 10.0.0.5}}
devices:
"""

#: A device's own `kind:` line: absent, each kind, and empty (YAML null).
KINDS = ["", "kind: electricity", "kind: gas", "kind: production", "kind:"]
#: Register sets of inline devices, by the quantities they hold.
INLINE = [
    (Quantity.ENERGY_IMPORT_KWH,),
    (Quantity.ACTIVE_POWER_KW,),
    (Quantity.GAS_VOLUME_M3,),
    (Quantity.OUTPUT_UNITS,),
    (Quantity.VOLTAGE_L1_V,),
    (Quantity.VOLTAGE_L1_V, Quantity.ACTIVE_POWER_KW),
]


def device(
    source: str | tuple[Quantity, ...],
    kind: str = "",
    extra: str = "",
    ident: str = "m",
    unit: int = 1,
) -> str:
    """One device entry: a profile id, or inline registers holding these quantities."""
    lines = [f"id: {ident}", "bus: line-a", f"unit: {unit}", kind, extra]
    if isinstance(source, str):
        lines.append(f"profile: {source}")
    else:
        lines.append("registers:")
        lines += [
            f"  - {{quantity: {q.value}, table: input, address: {4 * i}, type: float32}}"
            for i, q in enumerate(source)
        ]
    body = "\n".join(line for line in lines if line)
    return "  - " + textwrap.indent(body, "    ")[4:] + "\n"


@pytest.mark.parametrize(
    ("source", "kind"),
    list(itertools.product([*LIBRARY.ids(), *INLINE], KINDS)),
    ids=lambda v: v if isinstance(v, str) else "+".join(q.value for q in v),
)
def test_check_and_the_core_agree_on_what_counts_a_device(
    source: str | tuple[Quantity, ...], kind: str
) -> None:
    """A config `check` accepts is one the core can count, and the reverse: a device the
    core could not count never gets past `check` to fail at `run`."""
    text = HEAD + device(source, kind)
    try:
        parse_config(text, "config.yaml", env={}, profiles=LIBRARY)
        accepted = True
    except ConfigError as exc:
        assert all("to be counted" in p.message for p in exc.problems), exc
        accepted = False
    config = AgentConfig.model_validate(yaml.safe_load(text))  # the model alone accepts it
    try:
        DeviceChannels(config, LIBRARY)
        counted = True
    except SiteError:
        counted = False
    assert accepted == counted


def test_each_device_is_resolved_with_its_profile_and_the_core_counts_that() -> None:
    text = HEAD + "".join(
        [
            device("eastron-sdm630", extra="max_power_kw: 400", ident="press", unit=1),
            device((Quantity.ACTIVE_POWER_KW,), ident="fan", unit=2),
            device((Quantity.GAS_VOLUME_M3,), "kind: gas", "max_flow_m3_h: 50", "boiler", 3),
            device((Quantity.OUTPUT_UNITS,), "kind: production", ident="packer", unit=4),
        ]
    )
    config = parse_config(text, "config.yaml", env={}, profiles=LIBRARY)
    press = config.resolved(LIBRARY)[0]
    assert press.regmap is LIBRARY.get("eastron-sdm630")
    got = [(d.kind, d.main, d.unit, d.carrier, d.max_rate_per_h) for d in config.resolved(LIBRARY)]
    assert got == [
        # no `kind:`: the profile's; its own limit
        (DeviceKind.ELECTRICITY, Quantity.ENERGY_IMPORT_KWH, "kWh", Carrier.ELECTRICITY, 400),
        # no import counter: an electricity meter is counted by its power, integrated
        (DeviceKind.ELECTRICITY, Quantity.ACTIVE_POWER_KW, "kW", Carrier.ELECTRICITY, None),
        (DeviceKind.GAS, Quantity.GAS_VOLUME_M3, "m³", Carrier.NATURAL_GAS, 50),
        (DeviceKind.PRODUCTION, Quantity.OUTPUT_UNITS, "units", Carrier.PRODUCTION, None),
    ]

    channels = DeviceChannels(config, LIBRARY)
    got = [(d.device.id, d.quantity, d.carrier, d.channel_kind) for d in channels.devices]
    assert got == [
        ("press", Quantity.ENERGY_IMPORT_KWH, Carrier.ELECTRICITY, ChannelKind.COUNTER),
        ("fan", Quantity.ACTIVE_POWER_KW, Carrier.ELECTRICITY, ChannelKind.POWER),
        ("boiler", Quantity.GAS_VOLUME_M3, Carrier.NATURAL_GAS, ChannelKind.COUNTER),
        ("packer", Quantity.OUTPUT_UNITS, Carrier.PRODUCTION, ChannelKind.COUNTER),
    ]
    # its own limit, else its carrier's default (no profile rating here; docs/core.md)
    rates = [s.max_rate_per_h for s in channels.specs]
    assert rates == [400, 2e6, 50, 1e9, 400, 2e6]
    # the SDM630 has an export counter: its own channel after the devices', same limit;
    # the fan, counted by its power, the same power's negative part (its own key)
    assert [d.export_channel for d in channels.devices] == [4, 5, None, None]
    assert channels.specs[4].key == "press/energy_export_kwh"
    assert channels.specs[5].key == "fan/active_power_kw/export"
    assert channels.specs[5].kind is ChannelKind.POWER_EXPORT
    assert channels.device_of == [0, 1, 2, 3, 0, 1]
    # 15-minute demand is tracked for electricity only (import)
    assert channels.demand == [True, True, False, False, False, False]


def test_resolving_is_done_once_per_profile_library() -> None:
    config = parse_config(HEAD + device("eastron-sdm630"), "config.yaml", env={})
    first = config.resolved(LIBRARY)
    assert config.resolved(LIBRARY) is first
    other = ProfileLibrary()
    assert config.resolved(other) is not first
    assert config.resolved(other) == config.resolved(other)
