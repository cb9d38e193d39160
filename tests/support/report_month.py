"""A month of a small plant as meter readings, for the report's tests.

Site in Asia/Shanghai (UTC+8, no clock change), November 2026, a reading every
5 minutes from 2026-10-31 23:00 to 2026-12-01 01:00 local:

* ``main``: the electricity root, 100 kW from 08:00 to 20:00 local, 40 kW otherwise;
* ``line-a``: its child, 30 % of main (so main's unmetered rest is 70 %);
* ``boiler``: natural gas, 20 m³/h from 06:00 to 22:00, nothing at night;
* ``counter``: production, 60 units an hour from 08:00 to 20:00;
* an outage: main and line-a say nothing between 2026-11-10 02:00 and 06:00 local
  (the readings at 02:00 and 06:00 are there), so the core spreads the four hours
  evenly (quality ``interpolated``); the load was a flat 40 kW, so the spread is exact.

The electricity factor is 0.5703 kg/kWh, 0.8 for intervals starting 17:00-21:59.
Counters are computed from the start, so the sum of any run of intervals is the
counter's difference: the tests' hand sums hold to the last float digit.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Asia/Shanghai")
STEP_S = 300
FIRST = dt.datetime(2026, 10, 31, 23, 0, tzinfo=ZONE)
LAST = dt.datetime(2026, 12, 1, 1, 0, tzinfo=ZONE)
OUTAGE = (
    dt.datetime(2026, 11, 10, 2, 0, tzinfo=ZONE),
    dt.datetime(2026, 11, 10, 6, 0, tzinfo=ZONE),
)

CONFIG = """\
site: {{id: plant-a, timezone: Asia/Shanghai, name: Plant A}}
gateway: {{id: gw-01}}
carbon:
  electricity:
    kg_per_kwh: 0.5703
    source: "MEE 2022 national grid average (test)"
    schedule:
      - {{hours: "17-21", kg_per_kwh: 0.8}}
      - {{kg_per_kwh: 0.5703}}
  natural_gas: {{kg_per_m3: 2.162, kwh_per_m3: 10.81, source: "NDRC default (test)"}}
core: {{max_gap_s: 600}}
buses:
  - {{id: bus-1, tcp: {{host: 127.0.0.1, port: 502}}}}
devices:
  - {{id: main, bus: bus-1, unit: 1, interval_s: 300,
     registers: [{{quantity: energy_import_kwh, table: input, address: 0, type: float64}}]}}
  - {{id: line-a, bus: bus-1, unit: 2, interval_s: 300, parent: main,
     registers: [{{quantity: energy_import_kwh, table: input, address: 0, type: float64}}]}}
  - {{id: boiler, bus: bus-1, unit: 3, interval_s: 300, kind: gas,
     registers: [{{quantity: gas_volume_m3, table: holding, address: 0, type: float64}}]}}
  - {{id: counter, bus: bus-1, unit: 4, interval_s: 300, kind: production,
     registers: [{{quantity: output_units, table: holding, address: 100, type: float64}}]}}
publish: {{energy_interval_s: 900}}
state_dir: {state_dir}
report:
  tariff: example-cn-tou
  lines:
    - {{id: line-a, name: Line A, devices: [line-a], counters: [counter]}}
  products:
    - {{id: widget, name: Widget, counters: [counter]}}
{extra}"""


def main_kw(hour: int) -> float:
    return 100.0 if 8 <= hour < 20 else 40.0


def gas_m3_h(hour: int) -> float:
    return 20.0 if 6 <= hour < 22 else 0.0


def units_h(hour: int) -> float:
    return 60.0 if 8 <= hour < 20 else 0.0


def readings(path: Path) -> int:
    """Write the readings CSV (long form); returns the number of rows."""
    counters = {"main": 1000.0, "line-a": 300.0, "boiler": 50.0, "counter": 0.0}
    rows = ["ts,device,quantity,value"]
    t = FIRST
    step = dt.timedelta(seconds=STEP_S)
    while t <= LAST:
        ms = int(t.timestamp() * 1000)
        silent = OUTAGE[0] < t < OUTAGE[1]
        for device, quantity in (
            ("main", "energy_import_kwh"),
            ("line-a", "energy_import_kwh"),
            ("boiler", "gas_volume_m3"),
            ("counter", "output_units"),
        ):
            if not (silent and device in ("main", "line-a")):
                rows.append(f"{ms},{device},{quantity},{counters[device]!r}")
        # What the next 5 minutes add, by the local hour they run in.
        h = t.hour
        counters["main"] += main_kw(h) * STEP_S / 3600
        counters["line-a"] += 0.3 * main_kw(h) * STEP_S / 3600
        counters["boiler"] += gas_m3_h(h) * STEP_S / 3600
        counters["counter"] += units_h(h) * STEP_S / 3600
        t += step
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows) - 1


def config(path: Path, state_dir: Path, extra: str = "") -> Path:
    path.write_text(CONFIG.format(state_dir=state_dir, extra=extra), encoding="utf-8")
    return path
