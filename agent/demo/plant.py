"""Simulated meters for every device of an agent config (the demo, and tests)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from agent.config.models import AgentConfig, ResolvedDevice
from drivers.endpoint import Framing
from drivers.profile import DeviceKind, ProfileLibrary
from drivers.simulator.plant import Plant, SimEndpoint, SimMeter


def _meter(resolved: ResolvedDevice, seed: int) -> SimMeter:
    dev, kind = resolved.device, resolved.kind
    # A plausible load: a third of the meter's rated maximum, or flows for gas and parts.
    if kind is DeviceKind.GAS:
        load = 35.0  # m3/h
    elif kind is DeviceKind.PRODUCTION:
        load = 1200.0  # parts/h
    else:
        load = (dev.max_power_kw or 30.0) * 0.35
    ratios = {"ct": 40.0, "pt": 1.0} if dev.profile in {"chint-dtsu666", "acrel-adl400"} else {}
    return SimMeter(
        unit=dev.unit,
        profile=dev.profile,
        registers=dev.registers,
        limits=dev.limits,
        ratios=dev.ratios,
        kind=kind,
        seed=seed,
        load_kw=load,
        ratio_values=ratios,
    )


def plant_for(
    config: AgentConfig,
    library: ProfileLibrary,
    serial_peer: Mapping[str, str],
    only: Collection[str] | None = None,
) -> Plant:
    """One simulator endpoint per bus (of the buses ``only`` names, if given).
    ``serial_peer`` maps an RTU bus id to the pty path the simulator listens on (the
    other end of the agent's serial device)."""
    endpoints = []
    for i, bus in enumerate(config.buses):
        if only is not None and bus.id not in only:
            continue
        meters = [
            _meter(dev, seed=100 * i + j)
            for j, dev in enumerate(d for d in config.resolved(library) if d.device.bus == bus.id)
        ]
        if not meters:
            continue
        ep = bus.endpoint()
        if ep.framing is Framing.RTU:
            endpoints.append(
                SimEndpoint(
                    rtu=serial_peer[bus.id],
                    baudrate=ep.baudrate,
                    parity=ep.parity,
                    stopbits=ep.stopbits,
                    meters=tuple(meters),
                )
            )
        elif ep.framing is Framing.RTU_OVER_TCP:
            endpoints.append(SimEndpoint(rtu_over_tcp=f"{ep.host}:{ep.port}", meters=tuple(meters)))
        else:
            endpoints.append(SimEndpoint(tcp=f"{ep.host}:{ep.port}", meters=tuple(meters)))
    return Plant(endpoints=tuple(endpoints))
