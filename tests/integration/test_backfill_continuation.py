"""Continuation: a week backfilled with ``--snapshot-out``, then `run` goes on live.

The meter is a simulated SDM630 whose counter starts exactly where the recorded
week ends (as a real meter would be), polled by ``energy-agent run`` from the
state directory the backfill left. The first live interval must be exact: its
energy is C(end) - C(start) of the virtual counter through the last recorded
reading and the first live ones (worked out here by hand from the readings the
agent publishes), it is not ``partial`` (the counter continued, it did not
start afresh), it directly follows the last backfilled interval (no gap), and
no interval is published twice (no double count).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from drivers.simulator.meter import MeterModel
from drivers.simulator.server import SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing
from tests.support.cli import Cli, free_port
from tests.support.mqtt import (
    AgentProcess,
    Broker,
    Subscriber,
    agent_config,
    have_mosquitto,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]

STEP_S = 10
STEP_KWH = 0.0625  # 22.5 kW; every value exact in float32, as the meter's register holds it
WEEK = 7 * 86400 // STEP_S


def _week(path: Path) -> list[tuple[int, float]]:
    end = (time.time_ns() // 1_000_000 - 5000) // (STEP_S * 1000) * (STEP_S * 1000)
    rows = [(end - (WEEK - k) * STEP_S * 1000, 1000.0 + k * STEP_KWH) for k in range(WEEK + 1)]
    path.write_text(
        "ts,device,quantity,value\n" + "".join(f"{t},m1,energy_import_kwh,{v}\n" for t, v in rows)
    )
    return rows


def _counter(points: list[tuple[int, float]], t: int) -> float:
    """The virtual counter: linear between consecutive readings."""
    for (t0, c0), (t1, c1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0)
    raise AssertionError(f"{t} is outside the readings")


async def test_run_continues_a_backfill_without_gap_or_double_count(
    tmp_path: Path, cli: Cli
) -> None:
    rows = _week(tmp_path / "week.csv")
    last_t, last_c = rows[-1]
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    profile = ProfileLibrary().get("eastron-sdm630")
    meter = MeterModel(profile, kind=profile.kind, start_counters=last_c, start_jitter=0.0)
    server = SimulatorServer(
        Endpoint(Framing.TCP, host="127.0.0.1", port=free_port()),
        [SimulatedDevice(1, meter)],
        clock=time.time,
    )
    agent: AgentProcess | None = None
    sub = Subscriber(broker.port, "continuation-watch")
    try:
        await server.__aenter__()
        config = agent_config(
            tmp_path,
            buses=[{"id": "bus-1", "tcp": {"host": "127.0.0.1", "port": server.endpoint.port}}],
            devices=[
                {
                    "id": "m1",
                    "bus": "bus-1",
                    "unit": 1,
                    "profile": "eastron-sdm630",
                    "interval_s": 1,
                }
            ],
            mqtt={"host": "127.0.0.1", "port": broker.port},
        )
        state = tmp_path / "state"
        state.mkdir()
        backfill = await cli.run_async(
            "replay", str(tmp_path / "week.csv"), "-c", str(config),
            "--topics", "energy,intensity", "--snapshot-out", str(state),
            time_limit=180,
        )  # fmt: skip
        assert backfill.returncode == 0, str(backfill)
        assert "`run` continues from it" in backfill.stderr
        recorded = [json.loads(x) for x in backfill.stdout.splitlines()]
        energy = [m["payload"] for m in recorded if m["topic"].endswith("/energy")]
        last_end = energy[-1]["ts"]
        assert last_end == last_t // 60_000 * 60_000
        assert len(energy) == len({p["ts"] for p in energy})

        await sub.start()
        agent = AgentProcess(cli.command, config, tmp_path / "agent.log").start()
        live = await sub.wait_for(
            lambda got: len([m for m in got if m.kind == "energy"]) >= 2, 200, "2 live intervals"
        )
        live_energy = [m.json() for m in live if m.kind == "energy"]
        readings = [
            (m.json()["ts"], m.json()["values"][Quantity.ENERGY_IMPORT_KWH.value])
            for m in live
            if m.kind == "measurements"
        ]
        first = live_energy[0]
        # no gap and no double count: the live records start right after the backfill's
        assert [p["ts"] for p in live_energy[:2]] == [last_end + 60_000, last_end + 120_000]
        assert first["quality"] == "measured", first  # continued, not a fresh (partial) start
        points = sorted([*rows, *readings])
        for p in live_energy[:2]:
            exact = _counter(points, p["ts"]) - _counter(points, p["ts"] - 60_000)
            assert abs(p["energy_kwh"] - exact) <= 1e-9, (p, exact)
        # the meter did not count while the agent was away: the first live minute holds
        # the recorded rate up to the last row, then what the meter added since
        assert readings[0][1] >= last_c
        assert agent.running, agent.output()
    finally:
        if agent is not None:
            await agent.terminate()
        await sub.stop()
        await server.__aexit__(None, None, None)
        await broker.stop()
