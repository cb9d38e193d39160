"""The report's arithmetic on rows made by hand: roots for totals, children and the
unmetered rest for breakdowns, progress against targets, hours of the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.contract import Carrier, MessageKind, Topics
from agent.contract.build import energy_payload
from agent.report.figures import Factors, compute, compute_quarters, tree
from agent.report.period import parse_period
from agent.report.progress import OUTPUT, VALUE_ADDED, Basis, progress
from agent.report.sources import EnergyRow, JsonLinesSource
from agent.report.verification import BROKEN, NOT_VERIFIED, VERIFIED, statuses

H = 3_600_000
PREFIX = "energy/v1"


def row(
    device: str, ts: int, kwh: float, *, carrier: str = "electricity", **kw: object
) -> EnergyRow:
    values: dict[str, object] = {
        "interval_s": 900, "quality": "measured", "co2_kg": kwh * 0.5,
        "ef_kg_per_kwh": 0.5, "volume_m3": None, "units": None, "unmetered_kwh": None,
    }  # fmt: skip
    values.update(kw)
    return EnergyRow(device, ts, carrier=carrier, energy_kwh=kwh, **values)  # type: ignore[arg-type]


def test_roots_make_the_totals_children_and_the_rest_the_breakdown() -> None:
    p = parse_period("2026-11-01..2026-11-01", "UTC")
    t0 = p.start_ms
    devices = tree([
        ("main", None, "electricity", None), ("a", None, "electricity", "main"),
        ("a1", None, "electricity", "a"), ("oven", None, "natural_gas", None),
    ])  # fmt: skip
    rows = [
        row("main", t0 + H, 10.0, unmetered_kwh=6.0),  # main 10 = a 4 + rest 6
        row("a", t0 + H, 4.0, unmetered_kwh=1.0),  # a 4 = a1 3 + rest 1
        row("a1", t0 + H, 3.0),
        row("oven", t0 + H, 21.62, carrier="natural_gas", volume_m3=2.0, co2_kg=4.324),
    ]
    fig = compute(rows, p, devices, Factors(0.1229, 1.2143))
    t = fig.totals()
    assert t["electricity_import_kwh"] == 10.0  # not 10 + 4 + 3
    assert t["scope2_kg"] == 5.0 and t["scope1_kg"] == 4.324
    assert t["co2_kg"] == t["scope1_kg"] + t["scope2_kg"]  # type: ignore[operator]
    assert t["kgce"] == pytest.approx(10 * 0.1229 + 2 * 1.2143)
    # level 0: main 10; level 1: a 4 + main's rest 6; level 2: a1 3 + a's rest 1
    assert fig.levels() == [(0, 10.0, 0.0), (1, 4.0, 6.0), (2, 3.0, 1.0)]
    assert [d.level for d in devices.values()] == [0, 1, 2, 0]
    # one 15-minute record a device in a 24 h day: 95 of 96 quarters missing each
    assert fig.missing_share() == pytest.approx(95 / 96)
    assert fig.coverage_share() == pytest.approx(1 / 96)


def test_peak_demand_is_the_highest_quarter_hour_of_the_roots() -> None:
    p = parse_period("2026-11-01..2026-11-01", "Asia/Shanghai")
    t0 = p.start_ms
    devices = tree([("main", None, "electricity", None), ("a", None, "electricity", "main")])
    q = 900_000
    rows = [row("main", t0 + q * (i + 1), kwh, interval_s=900) for i, kwh in enumerate([5, 30, 20])]
    rows.append(row("a", t0 + 2 * q, 29.0))  # a child: never in the peak
    fig = compute(rows, p, devices, Factors(0.1229, 1.2143))
    # 30 kWh in the quarter 00:15-00:30 local = 120 kW
    assert fig.peak() == (120.0, t0 + q)
    t = fig.totals()
    assert t["average_kw"] == pytest.approx(55 / 24)
    assert t["load_factor"] == pytest.approx(55 / 24 / 120)


def test_progress_on_track_and_behind_by_hand() -> None:
    base = Basis(tce=100.0, co2_t=200.0, units=1000.0, value_added=50.0)
    # per value added: energy 90/50 against 100/50 = -10 %: behind -13.5 % by 3.5 points;
    # CO2 140/50 against 200/50 = -30 %: on track for -18 %
    cur = Basis(tce=90.0, co2_t=140.0, units=900.0, value_added=50.0)
    found, why = progress(cur, base, energy_pct=13.5, co2_pct=18.0)
    assert why is None
    energy, co2 = found
    assert energy.per == VALUE_ADDED
    assert energy.change_pct == pytest.approx(-10.0)
    assert not energy.on_track and energy.behind_pts == pytest.approx(3.5)
    assert co2.change_pct == pytest.approx(-30.0) and co2.on_track and co2.behind_pts == 0
    # without value added, per unit of output: 90/900 against 100/1000 = 0 %
    cur = Basis(tce=90.0, co2_t=140.0, units=900.0, value_added=None)
    found, _ = progress(cur, base, energy_pct=13.5, co2_pct=18.0)
    assert found[0].per == OUTPUT and found[0].change_pct == pytest.approx(0.0)
    assert progress(Basis(1, 1, None, None), base, energy_pct=1, co2_pct=1) == (
        [],
        "no_denominator",
    )


def test_each_hour_takes_the_word_of_the_periods_that_cover_it() -> None:
    # hour 0: two verified half hours; hour 1: a hole at 1:30; hour 2: a broken period
    units = [
        (0, H // 2, True), (H // 2, H, True), (H, H + H // 2, True),
        (2 * H, 3 * H, False), (3 * H, 4 * H, True),
    ]  # fmt: skip
    v = statuses(0, 4 * H, units, "not_sealed")
    assert v.hours == [(0, VERIFIED), (H, NOT_VERIFIED), (2 * H, BROKEN), (3 * H, VERIFIED)]
    assert v.note == "not_sealed"
    assert statuses(0, H, [(0, H, True)], "not_sealed").note == ""


def test_due_periods_are_the_ended_days_and_months_in_the_sites_zone() -> None:
    from agent.report.schedule import due

    # 2026-12-06 00:30 in Shanghai is 2026-12-05 16:30 UTC: "yesterday" is the 5th there
    now = 1_796_515_200_000 - 8 * H + 30 * 60_000  # 2026-12-06 00:00 UTC = 1_796_515_200_000
    assert due(now, "Asia/Shanghai", ["month"]) == ["2026-10", "2026-11"]
    days = due(now, "Asia/Shanghai", ["day"])
    assert days[-1] == "2026-12-05..2026-12-05" and days[0] == "2026-11-29..2026-11-29"
    assert due(now, "UTC", ["day"])[-1] == "2026-12-04..2026-12-04"
    assert due(now, "UTC", []) == []


def test_the_figures_do_not_depend_on_the_order_records_come_in(tmp_path: Path) -> None:
    """Summed in ts order per device and quarter hour, then in (quarter, device) order:
    a shuffled file gives the figures of an ordered one to the bit. In arrival order
    0.2 + 0.7 + 0.1 is 0.9999999999999999, in ts order 0.2 + 0.1 + 0.7 is 1.0."""
    assert 0.2 + 0.7 + 0.1 != 0.2 + 0.1 + 0.7
    p = parse_period("2026-11-01..2026-11-01", "UTC")
    t0, m = p.start_ms, 60_000
    topics = Topics(PREFIX, "plant-a", "gw-01")
    devices = tree([("main", None, "electricity", None), ("b", None, "electricity", None)])

    def line(device: str, ts: int, kwh: float) -> str:
        payload = energy_payload(
            ts=ts, interval_s=60, carrier=Carrier.ELECTRICITY, energy_kwh=kwh,
            co2_kg=kwh * 0.5, ef_kg_per_kwh=0.5, quality="measured",
        )  # fmt: skip
        msg = topics.message(MessageKind.ENERGY, payload, device)
        return json.dumps({"topic": msg.topic, "payload": msg.payload})

    ordered = [
        line("main", t0 + 13 * m, 0.2), line("b", t0 + 13 * m, 0.3),
        line("main", t0 + 14 * m, 0.1), line("main", t0 + 15 * m, 0.7),
        line("b", t0 + 16 * m, 0.6),
    ]  # fmt: skip
    shuffled = [ordered[i] for i in (0, 1, 3, 2, 4)]  # main at 00:15 before 00:14
    figs = []
    for name, lines in (("ordered", ordered), ("shuffled", shuffled)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        src = JsonLinesSource(path, prefix=PREFIX)
        figs.append(
            compute_quarters(src.quarters(p.start_ms, p.end_ms), p, devices, Factors(0.1, 1.0))
        )
    a, b = figs
    assert a.per_device["main"].kwh == 1.0  # 0.2 + 0.1 + 0.7, in ts order
    assert b.per_device == a.per_device and b.days == a.days and b.hours == a.hours
    # quarter 00:00-00:15: main 1.0 + b 0.3 = 1.3 kWh, 5.2 kW
    assert b.quarters == a.quarters == {t0 // 900_000: 1.0 + 0.3, t0 // 900_000 + 1: 0.6}
    assert a.peak() == b.peak() == ((1.0 + 0.3) * 4, t0)


def test_an_hour_long_interval_makes_no_peak_demand() -> None:
    p = parse_period("2026-11-01..2026-11-01", "UTC")
    devices = tree([("main", None, "electricity", None)])
    # 00:00-01:00 placed whole in the quarter of its start; 01:00-01:15 the only peak
    fig = compute(
        [row("main", p.start_ms + H, 40.0, interval_s=3600),
         row("main", p.start_ms + H + 900_000, 5.0, interval_s=900)],
        p, devices, Factors(0.1, 1.0),
    )  # fmt: skip
    assert fig.long_intervals and fig.peak() == (20.0, p.start_ms + H)
    assert fig.hours[(p.days()[0], 0)][0] == 40.0 and fig.hours[(p.days()[0], 1)][0] == 5.0
