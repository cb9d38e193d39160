"""`energy-agent run` writes the day's report itself after local midnight (issue 16):
``report.schedule: [day]`` and nothing else, no timer, with the real agent, mosquitto
and a simulated meter, under libfaketime so that local midnight comes two and a half
minutes after the start (see tests/integration/test_run_overnight.py for why the
library is preloaded into the agent and the clocks shifted as they are). The child
`report --due` the agent starts inherits the faked clock.

What a user checks: ``state_dir/reports/<day>/`` holds the day's report, its total is
the sum of the day's energy records the agent published, and the agent said so.
"""

from __future__ import annotations

import csv
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from agent.i18n import Translator
from tests.support.mqtt import agent_config, have_mosquitto, sleep_until_wall
from tests.support.run_rig import Rig, by_device, device, tcp_bus
from tests.support.simulators import Simulators

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
#: Wednesday 16 December 2026, 00:00 in Shanghai: the 15th's report is due after it.
MIDNIGHT = int(datetime(2026, 12, 16, tzinfo=ZoneInfo(ZONE)).timestamp())
DAY = "2026-12-15"
#: Seconds of faked time from the start to midnight: numba loads, a few records close.
LEAD_S = 170
#: report.schedule_delay_s: the report starts at 00:00:20.
DELAY_S = 20
LOAD_KW = 36.0


@pytest.fixture
async def rig(tmp_path: Path, cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    r = Rig(tmp_path, list(cli.command), tmp_path_factory.getbasetemp() / "numba-reports")
    try:
        yield r
    finally:
        print(r.report())
        await r.close()


def totals(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return {row[0]: row[1] for row in list(csv.reader(f))[1:]}


async def test_run_writes_the_days_report_after_local_midnight(
    rig: Rig, simulators: Simulators
) -> None:
    broker = await rig.broker()
    sub = await rig.subscriber(broker.port, "reports")
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
    doc["report"] = {"schedule": ["day"], "schedule_delay_s": DELAY_S}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    reports = rig.tmp / "state" / "reports"

    offset = MIDNIGHT - LEAD_S - int(time.time())
    faked = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"+{offset}", "NO_FAKE_STAT": "1"}
    agent = rig.agent(config, env=faked).start()  # 23:57:10 local
    await sub.wait_for(lambda ms: bool(by_device(ms, "energy").get("m1")), 120, "a record")
    # The run at the start (made-up days: none has records) wrote nothing.
    await sleep_until_wall(MIDNIGHT - offset - 5)
    assert not (reports / DAY).exists()

    # After 00:00:20 the day's report appears, written by the agent's child.
    deadline = MIDNIGHT - offset + DELAY_S + 90
    while not (reports / DAY / "report.csv").exists() and time.time() < deadline:
        await sleep_until_wall(time.time() + 1)
    assert (reports / DAY / "report.csv").exists(), rig.report()
    await sleep_until_wall(time.time() + 2)  # the child's last lines in the log
    assert await agent.terminate() == 0, rig.report()
    out = agent.output()
    assert "Traceback" not in out
    assert "scheduled reports: `report --due` started" in out
    assert "scheduled reports: done (exit 0)" in out
    assert {p.name for p in (reports / DAY).iterdir()} >= {"report.html", "report.xlsx"}

    # The day's figures are its records': the ones ending in (15th 00:00, 16th 00:00].
    day = [
        r
        for r in by_device(sub.received(), "energy")["m1"]
        if (MIDNIGHT - 86400) * 1000 < r["ts"] <= MIDNIGHT * 1000
    ]
    assert day and max(r["ts"] for r in day) == MIDNIGHT * 1000, day
    kwh = sum(r["energy_kwh"] for r in day)
    got = totals(reports / DAY / "report.csv")
    total = float(got[Translator("en")("report.total_electricity_import_kwh")])
    assert total == pytest.approx(kwh, abs=1e-6)
    # 36 kW, 0.6 kWh a whole minute: the day holds a couple of minutes of it.
    assert 0.6 <= kwh <= LEAD_S / 60 * 0.6 + 1e-6
