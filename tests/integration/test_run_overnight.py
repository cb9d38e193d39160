"""kill -9 during an overnight outage, restart after local midnight: `today` and `month`
are still exact (issue 13), with the real `energy-agent run`, mosquitto and a simulated meter.

The runtime reads the wall clock, and local midnight does not wait for a test, so the
agent runs under libfaketime with a fixed offset (``FAKETIME=+SECONDS``): its clocks are
the real ones shifted so that local midnight in Asia/Shanghai falls a couple of minutes
after the start, and they advance in real time. libfaketime is preloaded into the agent
itself (``LD_PRELOAD``), not through the ``faketime`` wrapper: the wrapper forks, and a
kill -9 of the wrapper would leave the agent running. The monotonic clock is shifted
too: with ``DONT_FAKE_MONOTONIC=1`` libfaketime turns Python's ``time.sleep`` (an
absolute ``clock_nanosleep``) into EINVAL, which kills paho's network thread.
``NO_FAKE_STAT=1``: numba's cache compares real file times. The meter is served by this
process on real time and draws a steady 36 kW = 0.01 kWh a second, so every window is
rate x its length in the agent's own time: the offset is a constant, and the meter's
counter moves by the same amount over a faked minute as over a real one.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.support.mqtt import Received, agent_config, have_mosquitto, sleep_until_wall
from tests.support.run_rig import (
    Rig,
    by_device,
    check_contract,
    check_energy_stream,
    device,
    tcp_bus,
)
from tests.support.simulators import Simulators

#: Debian's and Ubuntu's place for the library of the `faketime` package.
LIBFAKETIME = next(
    (str(p) for p in Path("/usr/lib").glob("*/faketime/libfaketime.so.1") if p.is_file()),
    "",
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
    pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is not installed (apt: faketime)"),
]

ZONE = "Asia/Shanghai"
#: The local midnight the agent lives through: Wednesday 16 December 2026, 00:00 in Shanghai.
MIDNIGHT = int(datetime(2026, 12, 16, tzinfo=ZoneInfo(ZONE)).timestamp())
#: 36 kW: 0.01 kWh a second, 0.6 kWh a minute.
LOAD_KW = 36.0
KWH_PER_S = LOAD_KW / 3600
#: Seconds of faked time from the agent's start to local midnight: room for numba to
#: load (or compile) the kernels and for two interval ends before the outage.
LEAD_S = 170
#: kg CO2 per kWh in tests.support.mqtt.agent_config.
FACTOR = 0.5


@pytest.fixture
async def rig(tmp_path: Path, cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    r = Rig(tmp_path, list(cli.command), tmp_path_factory.getbasetemp() / "numba-overnight")
    try:
        yield r
    finally:
        print(r.report())  # shown by pytest when the test failed
        await r.close()


def last_revisions(messages: list[Received]) -> dict[int, dict[str, Any]]:
    """The intensity records by ts, the highest revision of each (InfluxDB keeps it)."""
    out: dict[int, dict[str, Any]] = {}
    for m in messages:
        if m.kind == "intensity":
            rec = m.json()
            if rec["ts"] not in out or rec.get("rev", 0) >= out[rec["ts"]].get("rev", 0):
                out[rec["ts"]] = rec
    return out


async def test_kill_9_in_an_overnight_outage_restart_after_local_midnight(
    rig: Rig, simulators: Simulators
) -> None:
    broker = await rig.broker()
    sub = await rig.subscriber(broker.port, "overnight")
    sim = await simulators.start(simulators.tcp_endpoint(), {1: "eastron-sdm630"}, frozen=False)
    meter = sim.models[1]
    meter.load_kw, meter.steady = LOAD_KW, True
    config = agent_config(
        rig.tmp,
        buses=[tcp_bus("line-a", sim)],
        devices=[device("m1", "line-a", 1, "eastron-sdm630")],
        mqtt={"host": "127.0.0.1", "port": broker.port},
    )
    doc = yaml.safe_load(config.read_text())
    doc["site"]["timezone"] = ZONE
    # A silence over 30 s is a gap (the default is 300 s): the outage is interpolated.
    doc["core"] = {"max_gap_s": 30}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))

    # The agent's clock = the real one + offset; `real(t)` is when its clock shows t.
    offset = MIDNIGHT - LEAD_S - int(time.time())

    def real(fake_s: float) -> float:
        return fake_s - offset

    faked = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"+{offset}", "NO_FAKE_STAT": "1"}
    agent = rig.agent(config, "agent-1", env=faked).start()  # at 23:57:10 local
    await sub.wait_for(lambda ms: bool(by_device(ms, "measurements").get("m1")), 60, "a reading")
    first_ms = min(p["ts"] for p in by_device(sub.received(), "measurements")["m1"])
    assert MIDNIGHT - LEAD_S <= first_ms / 1000 < MIDNIGHT - 70, "the agent runs on faked time"

    await sleep_until_wall(real(MIDNIGHT - 40))  # 23:59:20: the meter stops answering
    meter.faults.timeout = 1.0
    await sleep_until_wall(real(MIDNIGHT - 20))  # 23:59:40: kill -9 inside the outage
    agent.kill9()
    await sleep_until_wall(real(MIDNIGHT + 15))  # 00:00:15: power back, the agent restarts
    meter.faults.timeout = 0.0
    restarted_at = time.time()
    agent2 = rig.agent(config, "agent-2", env=faked).start()

    def closed(ms: list[Received]) -> bool:
        return (MIDNIGHT + 60) * 1000 in last_revisions(ms)

    await sub.wait_for(closed, real(MIDNIGHT + 60) - time.time() + 40, "the 00:01 intensity")
    assert await agent2.terminate() == 0, rig.report()
    received = sub.received()
    check_contract(received, ["m1"])
    assert "Traceback" not in agent.output() + agent2.output()

    # The device's records: consecutive, the one at midnight interpolated across the gap
    # and made by the restarted agent (its interval closed after the kill).
    records = check_energy_stream(received, "m1")
    by_ts = {r["ts"] // 1000: r for r in records}
    assert by_ts[MIDNIGHT]["quality"] == "interpolated", records
    made_at = min(
        m.at for m in received if m.kind == "energy" and m.json()["ts"] == MIDNIGHT * 1000
    )
    assert made_at >= restarted_at

    # Hand arithmetic: 0.01 kWh a second from the first reading on.
    first_s = first_ms / 1000
    day_before = KWH_PER_S * (MIDNIGHT - first_s)  # the 15th, from the agent's first reading
    intensity = last_revisions(received)
    at_midnight = intensity[MIDNIGHT * 1000]["windows"]
    after = intensity[(MIDNIGHT + 60) * 1000]["windows"]
    # The record at local midnight describes the day that just ended.
    assert at_midnight["today"]["energy_kwh"] == pytest.approx(day_before, abs=2e-3)
    assert at_midnight["month"]["energy_kwh"] == pytest.approx(day_before, abs=2e-3)
    # 00:01 on the 16th: today is the first minute of the day, 0.6 kWh, a third of it
    # interpolated across the outage; the month keeps the 15th's energy across the kill.
    assert after["today"]["energy_kwh"] == pytest.approx(0.6, abs=2e-3), after["today"]
    assert after["today"]["co2_kg"] == pytest.approx(0.6 * FACTOR, abs=1e-3)
    assert after["today"]["missing_share"] == pytest.approx(0.0, abs=1e-9), after["today"]
    assert 0.1 < after["today"]["interpolated_share"] < 0.9, after["today"]
    assert after["month"]["energy_kwh"] == pytest.approx(day_before + 0.6, abs=2e-3)
    assert after["24h"]["energy_kwh"] == pytest.approx(day_before + 0.6, abs=2e-3)
    # ... and the device's own records say the same.
    assert sum(r["energy_kwh"] for t, r in by_ts.items() if t > MIDNIGHT) == pytest.approx(
        after["today"]["energy_kwh"], abs=1e-6
    )
    assert sum(r["energy_kwh"] for r in records) == pytest.approx(
        after["month"]["energy_kwh"], abs=1e-6
    )
