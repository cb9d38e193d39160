"""Counters scaled by the PT x CT ratios read from the meter: wrap range and glitch limit.

A simulated Acrel ADL400 (uint32 in 0.01 kWh, secondary side, times PT x CT read from
its ratio registers) is read over real Modbus TCP by the agent's :class:`DeviceReader`,
and each poll goes to a real :class:`Agent` through ``on_result``, as a bus poller
hands it over (the ratios the values were scaled with included). The simulator's
clock is the test's: a poll a minute, on the minute, so every record is a difference
of two readings, checked against the meter model's own counter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.config import parse_config
from agent.core.engine import load_kernel
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from agent.runtime.scheduler import DevicePoll
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from drivers.reader import DeviceReader
from drivers.simulator.meter import MeterModel
from drivers.simulator.server import SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing
from tests.support.cli import LOOPBACK, free_port

pytestmark = pytest.mark.integration

load_kernel()  # numba's default cache, before the config's state_dir could redirect it
LIBRARY = ProfileLibrary()
PROFILE = LIBRARY.get("acrel-adl400")
T0 = 1_700_000_040.0  # a whole minute (s)
#: One count of the register: 0.01 kWh x PT 10 x CT 40.
QUANTUM = 4.0
CONFIG = """
site: {id: plant-r, timezone: UTC}
gateway: {id: gw-r}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices:
  - {id: chiller, bus: bus-1, unit: 1, profile: acrel-adl400, interval_s: 60}
mqtt: {host: 127.0.0.1, port: 1}
publish: {energy_interval_s: 60}
state_dir: STATE
"""


class Rig:
    """The meter, its reader and the agent; ``poll`` reads once at the simulated time."""

    def __init__(
        self, model: MeterModel, clock: list[float], transport: ModbusTransport, agent: Agent
    ) -> None:
        self.model = model
        #: The simulator's clock (s).
        self.clock = clock
        self.transport = transport
        self.agent = agent
        # Ratios re-read at every poll: a changed CT is seen at the next one.
        self.reader = DeviceReader(PROFILE, 1, ratio_max_age_s=0.0, clock=lambda: clock[0])
        self.truth: list[float] = []
        #: (topic, payload) of every message the agent stored so far.
        self.stored: list[tuple[str, dict[str, Any]]] = []

    async def poll(self, at: float, *, add: float = 0.0) -> None:
        """Read at ``at`` (s); ``add`` kWh are added to the counter read (a garbage value)."""
        self.clock[0] = at
        sample = await self.reader.read(self.transport)
        self.truth.append(self.model.counters[Quantity.ENERGY_IMPORT_KWH])
        values = dict(sample.values)
        if add:
            values[Quantity.ENERGY_IMPORT_KWH] = (values[Quantity.ENERGY_IMPORT_KWH] or 0) + add
        poll = cast(DevicePoll, SimpleNamespace(device_id="chiller"))
        ts = round(at * 1000)
        self.agent.on_result(poll, ts, values, None, 0.0, sample.implausible, sample.ratios)

    def messages(self, suffix: str) -> list[dict[str, Any]]:
        """The payloads of one kind the agent stored so far, in order."""
        self.agent.commit()
        self.stored += [(e.topic, json.loads(e.payload)) for e in self.agent.outbox.take(100_000)]
        return [p for topic, p in self.stored if topic.endswith("/" + suffix)]

    def limit(self) -> tuple[float, float]:
        site = self.agent.site
        c = site.by_id["chiller"].channel
        return site.engine.max_rate(c), site.engine.wrap(c)


@pytest.fixture
async def rig_of(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(**model_kw: Any) -> Rig:
            model = MeterModel(PROFILE, seed=3, ratios={"pt": 10.0, "ct": 40.0}, **model_kw)
            clock: list[float] = [T0]
            endpoint = Endpoint(Framing.TCP, host=LOOPBACK, port=free_port())
            server = SimulatorServer(endpoint, [SimulatedDevice(1, model)], clock=lambda: clock[0])
            await stack.enter_async_context(server)
            transport = await stack.enter_async_context(
                ModbusTransport(endpoint, Timing(timeout_s=2.0, retries=0))
            )
            config = parse_config(
                CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY
            )
            agent = Agent(config, LIBRARY, outbox=MemoryOutbox(10_000_000))
            return Rig(model, clock, transport, agent)

        yield make


async def test_a_ratio_scaled_counter_wraps_at_its_range_times_the_ratios_read(
    rig_of: Callable[..., Any],
) -> None:
    # 6,000 kW primary (15 W secondary): 100 kWh a minute. The register's range is
    # 2^32 x 0.01 kWh x PT 10 x CT 40 = 17,179,869,184 kWh; it starts 250 kWh below
    # its top, so it wraps in the third minute.
    rig = await rig_of(load_kw=6000.0, near_wrap=250.0)
    for k in range(7):
        await rig.poll(T0 + 60 * k)
    assert rig.limit() == pytest.approx((2 * 55.2 * 400, 17_179_869_184.0))
    energy = rig.messages("energy")
    events = rig.messages("events")
    assert [e["event"] for e in events] == ["wrap"], events
    assert events[0]["value"] < 1000  # the counter read just after passing its top
    # The model's counter keeps counting past the top; the meter's register rolled over.
    assert rig.truth[-1] > 17_179_869_184.0 > rig.truth[0]
    assert [r["ts"] for r in energy] == [round((T0 + 60 * k) * 1000) for k in range(1, 7)]
    for r, a, b in zip(energy, rig.truth, rig.truth[1:], strict=False):
        # each reading is within one count of the truth: the difference within two
        assert abs(r["energy_kwh"] - (b - a)) <= 2 * QUANTUM, (r, b - a)
        assert 80 < r["energy_kwh"] < 130 and r["quality"] == "measured", r


async def test_the_glitch_limit_follows_a_changed_ratio(rig_of: Callable[..., Any]) -> None:
    # PT 10 x CT 40: the limit is 2 x 55.2 kW x 400 = 44,160 kW. The load is 30,000 kW.
    rig = await rig_of(load_kw=30_000.0, start_counters=1000.0, start_jitter=0.0)
    for k in range(3):
        await rig.poll(T0 + 60 * k)
    assert rig.limit() == pytest.approx((44_160.0, 17_179_869_184.0))
    # An electrician sets CT 80 (the load behind it doubles as well: 70,000 kW, beyond
    # the old limit). The next poll reads the new ratio before the counter: the limit
    # is 88,320 kW from that reading on, the wrap range twice as long.
    rig.model.ratios["ct"] = 80.0
    rig.model.load_kw = 70_000.0
    for k in range(3, 7):
        await rig.poll(T0 + 60 * k)
    assert rig.limit() == pytest.approx((88_320.0, 34_359_738_368.0))
    # what the scenario is about: every step since the change beyond the old limit
    steps = [(b - a) * 60 for a, b in zip(rig.truth[2:], rig.truth[3:], strict=False)]
    assert all(44_160 < kw < 88_320 for kw in steps), steps
    # ... and a value 2,000 kWh too high a minute later (120,000 kW) is still a glitch.
    await rig.poll(T0 + 60 * 7, add=2000.0)
    await rig.poll(T0 + 60 * 8)
    events = rig.messages("events")
    assert [(e["event"], e["ts"]) for e in events] == [("glitch", round((T0 + 420) * 1000))]
    energy = rig.messages("energy")
    assert [r["ts"] for r in energy] == [round((T0 + 60 * k) * 1000) for k in range(1, 9)]
    assert all(r["quality"] == "measured" for r in energy), energy
    truth, got = rig.truth, [r["energy_kwh"] for r in energy]
    # each minute's energy within two counts (8 kWh since CT 80) of the meter's own...
    for k in range(6):
        assert abs(got[k] - (truth[k + 1] - truth[k])) <= 2 * 8.0, (k, got, truth)
    # ... and the two minutes around the rejected reading, spread evenly, in sum
    assert abs(got[6] + got[7] - (truth[8] - truth[6])) <= 2 * 8.0, (got, truth)
