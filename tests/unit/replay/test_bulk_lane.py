"""The bulk lane (agent/core/bulk.py) writes what the per-slot path writes, byte for byte.

`replay --out FILE.jsonl` takes regular stretches of readings through the site's
bulk lane; the running agent and every other output go slot by slot. What a user
checks: the same command prints the same bytes either way, and continues `run` from
the same snapshot. Judged on every golden case and on drawn inputs (several meters,
an export counter, a meter counted by its power and exporting, outages long and
short, late data that revises published records, glitches, month ends, DST,
intervals from 1 minute to 1 hour).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config
from agent.core.engine import load_kernel
from agent.replay import Backfill, Options, Topic
from agent.replay.writers import JsonLines
from drivers.profile import ProfileLibrary

CASES = Path(__file__).resolve().parents[2] / "cases"
GOLDEN = sorted(p for g in ("replay-*", "backfill-*") for p in CASES.glob(g) if p.is_dir())
LIBRARY = ProfileLibrary()
RECORDS = frozenset({Topic.ENERGY, Topic.INTENSITY})

load_kernel()  # numba's default cache: the configs below name no state directory


def _replay(config: Path, inputs: list[Path], topics: frozenset[Topic], bulk: bool, snap: Path):
    """The JSON lines, the snapshot's bytes, and how many lines the lane wrote."""
    backfill = Backfill(load_config(config), LIBRARY, inputs, Options(topics, bulk=bulk))
    out = io.StringIO()
    writer = JsonLines(out)
    lane = 0
    for batch in backfill.run():
        lane += sum(m.text is not None for m in batch)
        writer.write(batch)
    backfill.site.save_snapshot(snap)
    return out.getvalue(), snap.read_bytes(), lane


def _same(config: Path, inputs: list[Path], topics: frozenset[Topic], tmp: Path) -> int:
    slow, slow_snap, none = _replay(config, inputs, topics, False, tmp / "slow.snap")
    fast, fast_snap, lane = _replay(config, inputs, topics, True, tmp / "fast.snap")
    assert none == 0
    assert fast == slow
    assert fast_snap == slow_snap
    return lane


def _inputs(case: Path) -> list[Path]:
    f = case / "inputs"
    if not f.exists():
        return [case / "readings.csv"]
    return [case / name for name in f.read_text().split()]


@pytest.mark.parametrize("case", [c for c in GOLDEN if (c / "expected.jsonl").exists()], ids=str)
def test_golden_cases_print_the_same_bytes_through_the_lane(case: Path, tmp_path: Path) -> None:
    topics = frozenset(Topic)
    if (case / "topics").exists():
        topics = frozenset(Topic(t.strip()) for t in (case / "topics").read_text().split(","))
    _same(case / "config.yaml", _inputs(case), topics, tmp_path)


CONFIG = """\
site: {{id: plant-a, timezone: {tz}}}
gateway: {{id: gw-01}}
carbon:
  electricity: {{kg_per_kwh: 0.5703}}
buses:
  - {{id: bus-1, tcp: {{host: 127.0.0.1, port: 502}}}}
devices:
{devices}
publish: {{energy_interval_s: {interval}}}
"""
METER = (
    "  - {{id: m{i}, bus: bus-1, unit: {i}, interval_s: 10,\n"
    "     registers: [{{quantity: energy_import_kwh, table: input, address: 0, type: float64}},\n"
    "                 {{quantity: energy_export_kwh, table: input, address: 4, type: float64}}]}}"
)
#: A meter counted by its active power only: its export is the power's negative part.
POWER_METER = (
    "  - {{id: m{i}, bus: bus-1, unit: {i}, interval_s: 10,\n"
    "     registers: [{{quantity: active_power_kw, table: input, address: 0, type: float32}}]}}"
)
STARTS = [
    datetime(2025, 1, 31, 20, 0, tzinfo=UTC),  # a month's end (and a year's, in some zones)
    datetime(2025, 3, 29, 22, 0, tzinfo=UTC),  # Europe's clocks go forward
    datetime(2025, 11, 2, 2, 0, tzinfo=UTC),  # America's go back
    datetime(2025, 6, 30, 16, 0, tzinfo=UTC),
]


@st.composite
def sites(draw: st.DrawFn) -> tuple[str, str]:
    """A config and its readings (long CSV, in time order)."""
    tz = draw(st.sampled_from(["UTC", "Asia/Kolkata", "Europe/Berlin", "America/New_York"]))
    interval = draw(st.sampled_from([60, 300, 900, 3600]))
    meters = draw(st.integers(1, 3))
    start = int(draw(st.sampled_from(STARTS)).timestamp()) * 1000
    hours = draw(st.integers(1, 30))
    step = draw(st.sampled_from([10, 20, 30]))
    # per meter: import counter only, import and export counters, or active power only
    kinds = draw(st.lists(st.sampled_from(["import", "export", "power"]), min_size=meters))
    kinds = kinds[:meters]
    rows: list[tuple[int, str, str, float]] = []
    for m, kind in enumerate(kinds):
        outages = draw(
            st.lists(st.tuples(st.integers(0, hours * 60), st.integers(1, 600)), max_size=3)
        )
        glitch = draw(st.one_of(st.none(), st.integers(0, hours * 3600 // step)))
        kwh, rate = 1000.0 + m, draw(st.sampled_from([0.001, 0.004, 0.0125]))
        # a power meter: a load, and a generator that exports some hours (negative power)
        swing = draw(st.sampled_from([0.0, 20.0, 75.0]))
        for k in range(hours * 3600 // step):
            minute = k * step // 60
            kwh += rate * step
            if any(a <= minute < a + n for a, n in outages):
                continue
            ts = start + k * step * 1000
            if kind == "power":
                kw = 12.5 - swing * (minute % 180 >= 90) + (k % 7) * 0.25
                rows.append((ts, f"m{m + 1}", "active_power_kw", kw + (9e4 if k == glitch else 0)))
                continue
            value = kwh + (5000.0 if k == glitch else 0.0)
            rows.append((ts, f"m{m + 1}", "energy_import_kwh", round(value, 3)))
            if kind == "export":
                rows.append((ts, f"m{m + 1}", "energy_export_kwh", round(100 + k * 0.0005, 4)))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    csv = "ts,device,quantity,value\n" + "".join(f"{t},{d},{q},{v}\n" for t, d, q, v in rows)
    devices = "\n".join(
        (POWER_METER if kind == "power" else METER).format(i=i + 1) for i, kind in enumerate(kinds)
    )
    return CONFIG.format(tz=tz, devices=devices, interval=interval), csv


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(site=sites())
def test_drawn_sites_print_the_same_bytes_through_the_lane(
    site: tuple[str, str], tmp_path: Path
) -> None:
    config, csv = site
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "readings.csv").write_text(csv)
    _same(tmp_path / "config.yaml", [tmp_path / "readings.csv"], RECORDS, tmp_path)


def test_a_regular_day_goes_through_the_lane(tmp_path: Path) -> None:
    """One meter at 1 Hz for a day: all but the first stretch in bulk (the lane is not
    a path no input takes)."""
    t0 = 1_735_689_600_000
    rows = "".join(
        f"{t0 + k * 1000},m1,energy_import_kwh,{1000 + k * 0.005:.3f}\n" for k in range(86_400)
    )
    (tmp_path / "readings.csv").write_text("ts,device,quantity,value\n" + rows)
    devices = METER.format(i=1)
    (tmp_path / "config.yaml").write_text(
        CONFIG.format(tz="Asia/Shanghai", devices=devices, interval=60)
    )
    lane = _same(tmp_path / "config.yaml", [tmp_path / "readings.csv"], RECORDS, tmp_path)
    assert lane > 0.9 * 2 * 1440


def test_a_day_with_a_power_meter_exporting_goes_through_the_lane(tmp_path: Path) -> None:
    """A meter counted by its power, exporting half of each hour, beside an import
    counter, at 1 Hz for a day: the export and the site's net import come out of the
    lane for all but the first stretch, the same bytes as slot by slot."""
    t0 = 1_735_689_600_000
    rows = "".join(
        f"{t0 + k * 1000},m1,energy_import_kwh,{1000 + k * 0.005:.3f}\n"
        f"{t0 + k * 1000},m2,active_power_kw,{-40.0 if k % 3600 < 1800 else 15.5 + k % 5}\n"
        for k in range(86_400)
    )
    (tmp_path / "readings.csv").write_text("ts,device,quantity,value\n" + rows)
    devices = METER.format(i=1) + "\n" + POWER_METER.format(i=2)
    (tmp_path / "config.yaml").write_text(
        CONFIG.format(tz="Europe/Berlin", devices=devices, interval=300)
    )
    lane = _same(tmp_path / "config.yaml", [tmp_path / "readings.csv"], RECORDS, tmp_path)
    assert lane > 0.9 * 3 * 288


def test_many_meters_sum_their_days_in_the_same_order(tmp_path: Path) -> None:
    """Twenty meters over a month's first days: the month window adds finished days,
    and each day's sums are a slot's twenty rows added in turn, slot after slot; any
    other order (pairwise sums) shows in the last digit of the month's CO2."""
    t0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 1000
    lines = []
    for k in range(2 * 2880 + 600):
        ts = t0 + k * 30_000
        for m in range(20):
            lines.append(f"{ts},m{m + 1},energy_import_kwh,{1000 + k * 0.0137 * (1 + m % 7):.3f}\n")
    (tmp_path / "readings.csv").write_text("ts,device,quantity,value\n" + "".join(lines))
    devices = "\n".join(METER.format(i=i + 1) for i in range(20))
    config = CONFIG.format(tz="UTC", devices=devices, interval=60)
    (tmp_path / "config.yaml").write_text(config)
    assert _same(tmp_path / "config.yaml", [tmp_path / "readings.csv"], RECORDS, tmp_path)
