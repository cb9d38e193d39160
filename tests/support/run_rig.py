"""The `run` rig and the checks that several end-to-end files share.

Why here: `test_run`, `test_full_disk` and the demo's broker test all start the
agent as a subprocess against mosquitto and simulated meters, and check the
published stream against the same contract. A test module never imports
another; they all import this.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.contract.models import (
    DeviceStatusModel,
    EnergyModel,
    EventsModel,
    GatewayStatusModel,
    IntensityModel,
    MeasurementsModel,
)
from tests.support.cli import free_port
from tests.support.mqtt import AgentProcess, Broker, Received, Subscriber
from tests.support.simulators import Sim

SITE, GW = "plant-t", "gw-t"
BASE = f"energy/v1/{SITE}/{GW}"
INTERVAL_MS = 60_000

MODELS: dict[str, type[BaseModel]] = {
    "gateway-status": GatewayStatusModel,
    "intensity": IntensityModel,
    "status": DeviceStatusModel,
    "measurements": MeasurementsModel,
    "energy": EnergyModel,
    "events": EventsModel,
}


class Rig:
    def __init__(self, tmp: Path, command: list[str], numba_cache: Path) -> None:
        self.tmp = tmp
        self.command = command
        self.numba_cache = numba_cache
        self.brokers: list[Broker] = []
        self.agents: list[AgentProcess] = []
        self.subscribers: list[Subscriber] = []

    async def broker(self, name: str = "broker", **kw: Any) -> Broker:
        broker = Broker(self.tmp / name, free_port(), **kw)
        self.brokers.append(broker)
        await broker.start()
        return broker

    async def subscriber(self, port: int, client_id: str, **kw: Any) -> Subscriber:
        sub = Subscriber(port, client_id, **kw)
        self.subscribers.append(sub)
        return await sub.start()

    def agent(
        self, config: Path, name: str = "agent", *, env: Mapping[str, str] | None = None
    ) -> AgentProcess:
        """``env`` is added to the agent's environment (e.g. libfaketime's)."""
        agent = AgentProcess(
            self.command,
            config,
            self.tmp / f"{name}.log",
            # One compiled-kernel cache for the session: numba compiles once, not per test.
            env={"NUMBA_CACHE_DIR": str(self.numba_cache), **(env or {})},
        )
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            agent.cleanup()
        for sub in self.subscribers:
            await sub.stop()
        for broker in self.brokers:
            await broker.stop()

    def report(self) -> str:
        parts = [f"--- {a.log.name}\n{a.output()[-6000:]}" for a in self.agents]
        parts += [f"--- {b.log}\n{b.logs()[-3000:]}" for b in self.brokers]
        return "\n".join(parts)


def tcp_bus(bus_id: str, sim: Sim, **kw: Any) -> dict[str, Any]:
    return {"id": bus_id, "tcp": {"host": sim.endpoint.host, "port": sim.endpoint.port}, **kw}


def device(dev_id: str, bus: str, unit: int, profile: str, **kw: Any) -> dict[str, Any]:
    return {"id": dev_id, "bus": bus, "unit": unit, "profile": profile, **kw}


def topic_kind(topic: str, devices: Iterable[str], base: str = BASE) -> str:
    """The kind of message a topic carries; AssertionError for any topic not in the contract."""
    assert topic.startswith(base + "/"), topic
    rest = topic[len(base) + 1 :].split("/")
    if rest == ["status"]:
        return "gateway-status"
    if rest == ["intensity"]:
        return "intensity"
    assert len(rest) == 2 and rest[0] in set(devices), f"unexpected topic {topic}"
    assert rest[1] in ("status", "measurements", "energy", "events"), f"unexpected topic {topic}"
    return rest[1]


def check_contract(messages: Iterable[Received], devices: Iterable[str], base: str = BASE) -> None:
    devices = list(devices)
    for m in messages:
        model = MODELS[topic_kind(m.topic, devices, base)]
        model.model_validate_json(m.payload)  # raises with the field at fault


def by_device(messages: Iterable[Received], kind: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        if m.kind == kind and m.topic.count("/") == 5:
            out[m.topic.split("/")[-2]].append(m.json())
    return out


def check_energy_stream(messages: list[Received], dev: str) -> list[dict[str, Any]]:
    """One device's energy records as received: in order, no gap, duplicates identical.

    Returns the distinct records, oldest first.
    """
    first: dict[int, bytes] = {}
    order: list[int] = []
    for m in messages:
        if m.kind != "energy" or m.topic.split("/")[-2] != dev:
            continue
        ts = m.json()["ts"]
        if ts in first:
            assert m.payload == first[ts], (
                f"{dev}: duplicate of {ts} differs:\n{first[ts]!r}\n{m.payload!r}"
            )
            continue
        assert not order or ts > order[-1], f"{dev}: record {ts} arrived after {order[-1]}"
        first[ts] = m.payload
        order.append(ts)
    assert order, f"{dev}: no energy record"
    gaps = [b - a for a, b in itertools.pairwise(order) if b - a != INTERVAL_MS]
    assert not gaps, f"{dev}: energy records not consecutive: {order}"
    return [json.loads(first[ts]) for ts in order]


def check_measurements_complete(messages: list[Received], dev: str) -> list[dict[str, Any]]:
    """Every seq from 1 to the last arrived (duplicates identical); the payloads by seq."""
    seen: dict[int, bytes] = {}
    for m in messages:
        if m.kind == "measurements" and m.topic.split("/")[-2] == dev:
            seq = m.json()["seq"]
            assert seen.setdefault(seq, m.payload) == m.payload, f"{dev}: seq {seq} differs"
    missing = sorted(set(range(1, max(seen) + 1)) - set(seen))
    assert not missing, f"{dev}: measurements lost: seq {missing}"
    return [json.loads(seen[s]) for s in sorted(seen)]


def record_truth(sim: Sim, unit: int) -> list[tuple[float, float]]:
    """Every (time, energy_import_kwh) of the simulated meter, as it advances for a read."""
    from drivers.quantities import Quantity

    log: list[tuple[float, float]] = []
    dev = sim.server.devices[unit]
    refresh = dev.refresh

    def logged(now: float) -> None:
        refresh(now)
        log.append((now, dev.model.counters[Quantity.ENERGY_IMPORT_KWH]))

    dev.refresh = logged  # type: ignore[method-assign]
    return log


def interpolate(points: list[tuple[float, float]], t: float) -> float:
    """The counter at ``t``: linear between recorded points, extended by up to 2 s."""
    assert points[0][0] - 2 <= t <= points[-1][0] + 2, (t, points[0][0], points[-1][0])
    pairs = list(itertools.pairwise(points))
    for (t0, v0), (t1, v1) in pairs:
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    (t0, v0), (t1, v1) = next(
        (a, b) for a, b in (pairs if t < points[0][0] else reversed(pairs)) if b[0] - a[0] > 0.5
    )
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
