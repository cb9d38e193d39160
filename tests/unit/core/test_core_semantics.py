"""What a plant engineer would check by hand: small streams, numbers worked out on paper.

Every expected number below is written out, not computed by the code under test. Each
stream runs through the numba engine and through the reference, and both must give the
table.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.core.channels import RING, ChannelKind, ChannelSpec, Event, Flag, quality_of
from agent.core.engine import Engine
from tests.support.core_rows import (
    GAP,
    INTEGRATED,
    INTERPOLATED,
    MEASURED,
    PARTIAL,
    RESET,
    Run,
    ms,
    slot,
)

COUNTER = ChannelSpec("meter", max_rate_per_h=200.0, max_gap_s=300.0)


def test_a_step_across_a_minute_boundary_splits_in_proportion() -> None:
    r = Run(COUNTER, 60)
    r.feed([("10:00:30", 100.0), ("10:01:30", 100.5), ("10:02:00", 100.5)])
    # 0.5 kWh over 60 s, half of it before 10:01; the first minute starts before the meter
    r.check([("10:01", 0.25, PARTIAL), ("10:02", 0.25, MEASURED)])
    assert r.events() == {}


def test_an_interval_boundary_splits_a_step_exactly() -> None:
    r = Run(ChannelSpec("meter", max_rate_per_h=200.0, max_gap_s=3600.0), 900)
    # 0.9 kWh from 10:14:20 to 10:15:20: 40 s of 60 before the boundary -> 0.6 / 0.3
    r.feed([("10:00:00", 1000.0), ("10:14:20", 1014.0), ("10:15:20", 1014.9), ("10:30:00", 1029.9)])
    r.check([("10:15", 14.6, MEASURED), ("10:30", 15.3, MEASURED)])


def test_a_polling_gap_is_spread_evenly_and_marked_interpolated() -> None:
    r = Run(COUNTER, 60)
    r.feed([("10:00:00", 500.0), ("10:10:00", 510.0), ("10:11:00", 511.0)])
    gap = [(f"10:{m:02d}", 1.0, INTERPOLATED) for m in range(1, 11)]
    r.check([*gap, ("10:11", 1.0, MEASURED)])
    assert r.events() == {}


def test_an_unsigned_32_bit_counter_wraps() -> None:
    # uint32 x 0.01 kWh: the range is 2^32 x 0.01 = 42,949,672.96 kWh
    spec = ChannelSpec("u32", wrap=42949672.96, max_rate_per_h=100.0)
    r = Run(spec, 60)
    r.feed([("10:00:00", 42949672.90), ("10:00:30", 0.10), ("10:01:00", 0.10)])
    # 0.06 kWh up to the top, 0.10 after it
    r.check([("10:01", 0.16, MEASURED)], abs_tol=1e-6)
    assert r.events() == {Event.WRAP: 1}
    assert r.event_rows == [(0, "10:00:30", Event.WRAP, 0.10)]


def test_a_real_reset_rebaselines_at_the_first_of_three_agreeing_readings() -> None:
    r = Run(COUNTER, 60)  # 200 kW: 0.833 kWh in 15 s, 3.33 in 60 s
    held = r.feed(
        [
            ("10:00:00", 4999.0),
            ("10:00:30", 5000.0),
            ("10:00:45", 3.0),  # meter reset: 5000 -> 3, rejected for now
            ("10:01:00", 3.5),  # agrees with 3.0 (+0.5 in 15 s)
        ]
    )
    assert held == []  # the minute waits: 3.0 may still be garbage
    r.feed([("10:02:00", 4.5)])  # agrees with 3.5 (+1.0 in 60 s): three agree
    # New baseline 3.0 at 10:00:45. Minute 10:00: 4999 -> 5000 = 1.0, nothing for
    # 10:00:30 -> 10:00:45, 3.0 -> 3.5 = 0.5; minute 10:01: 3.5 -> 4.5 = 1.0.
    r.check([("10:01", 1.5, RESET), ("10:02", 1.0, MEASURED)])
    # 30 + 15 s measured, the 15 s the rebaseline skipped missing
    assert r.coverage == [("10:01", 45.0, 0.0), ("10:02", 60.0, 0.0)]
    assert r.events() == {Event.GLITCH: 3, Event.RESET: 1}
    assert r.event_rows == [
        (0, "10:00:45", Event.GLITCH, 3.0),
        (0, "10:01:00", Event.GLITCH, 3.5),
        (0, "10:02:00", Event.GLITCH, 4.5),
        (0, "10:00:45", Event.RESET, 3.0),  # the new baseline, below 5000: down
    ]


def test_a_single_garbage_zero_costs_nothing_without_any_limit() -> None:
    """No max_power_kw: a decrease is still only a candidate, and one alone is a glitch."""
    r = Run(ChannelSpec("meter"), 60)
    r.feed(
        [
            ("10:00:00", 1000.0),
            ("10:00:30", 1000.5),
            ("10:00:40", 0.0),  # garbage
            ("10:01:00", 1001.0),  # a step of 0.5 from 1000.5: accepted, the 0 forgotten
            ("10:02:00", 1002.0),
        ]
    )
    r.check([("10:01", 1.0, MEASURED), ("10:02", 1.0, MEASURED)])
    assert r.coverage == [("10:01", 60.0, 0.0), ("10:02", 60.0, 0.0)]
    assert r.event_rows == [(0, "10:00:40", Event.GLITCH, 0.0)]
    assert r.events() == {Event.GLITCH: 1}


def test_a_candidate_that_disagrees_restarts_the_run_at_itself() -> None:
    r = Run(COUNTER, 60)  # 200 kW: 0.556 kWh in 10 s
    r.feed(
        [
            ("10:00:00", 1000.0),
            ("10:00:30", 1000.5),
            ("10:00:40", 0.0),  # run [0.0]
            ("10:00:50", 500.0),  # +500 in 10 s from 0.0: disagrees, run [500.0]
            ("10:01:00", 1001.0),  # +0.5 from 1000.5: accepted, the run dropped
            ("10:01:10", 2.0),  # run [2.0]
            ("10:01:20", 2.05),  # run [2.0, 2.05]
            ("10:01:30", 9.0),  # +6.95 in 10 s: disagrees, run [9.0]
            ("10:01:40", 9.05),  # run [9.0, 9.05]
            ("10:01:50", 9.1),  # run [9.0, 9.05, 9.1]: new baseline 9.0 at 10:01:30
            ("10:02:00", 9.15),
        ]
    )
    # minute 10:01: 1000 -> 1001; minute 10:02: nothing for 10:01:00 -> 10:01:30, then
    # 9.0 -> 9.15 = 0.15 over its last 30 s
    r.check([("10:01", 1.0, MEASURED), ("10:02", 0.15, RESET)])
    assert r.coverage == [("10:01", 60.0, 0.0), ("10:02", 30.0, 0.0)]
    glitches = [
        ("10:00:40", 0.0),
        ("10:00:50", 500.0),
        ("10:01:10", 2.0),
        ("10:01:20", 2.05),
        ("10:01:30", 9.0),
        ("10:01:40", 9.05),
        ("10:01:50", 9.1),
    ]
    assert r.event_rows == [
        *((0, t, Event.GLITCH, v) for t, v in glitches),
        (0, "10:01:30", Event.RESET, 9.0),
    ]


def test_a_jump_up_and_back_costs_nothing() -> None:
    """Two readings that agree with each other are not enough: a third normal one wins."""
    r = Run(COUNTER, 60)
    r.feed(
        [
            ("10:00:00", 1000.0),
            ("10:00:30", 1000.5),
            ("10:00:40", 50000.0),
            ("10:00:50", 50000.1),  # agrees with 50000.0: a run of two
            ("10:01:00", 1001.0),  # back: +0.5 from 1000.5 in 30 s
        ]
    )
    r.check([("10:01", 1.0, MEASURED)])
    assert r.events() == {Event.GLITCH: 2}
    assert [e for _, _, e, _ in r.event_rows] == [Event.GLITCH, Event.GLITCH]


def _steady(start: str, n: int, every_s: int, kwh_per_reading: float, v0: float) -> list:
    t0 = ms(start)
    return [(t0 + i * every_s * 1000, v0 + i * kwh_per_reading) for i in range(n)]


def test_a_single_spike_counts_nothing_and_leaves_no_residue() -> None:
    # 60 kW read every 10 s from 10:00:00 to 13:00:00: 1/6 kWh per reading
    readings = _steady("10:00:00", 3 * 360 + 1, 10, 1 / 6, 1000.0)
    spike_at = ms("10:37:05")
    i = next(k for k, (t, _) in enumerate(readings) if t > spike_at)
    spiked = [*readings[:i], (spike_at, readings[i - 1][1] + 1e9), *readings[i:]]

    clean, dirty = Run(COUNTER, 60), Run(COUNTER, 60)
    clean.feed(readings)
    dirty.feed(spiked)
    assert dirty.events() == {Event.GLITCH: 1}
    assert clean.events() == {}
    assert dirty.records == clean.records  # exactly, not approximately
    end = slot("13:00")
    for width, kwh in [(1, 1.0), (15, 15.0), (60, 60.0), (1440, 180.0)]:
        got = dirty.window(end - width, end)
        assert got == clean.window(end - width, end)  # exactly
        assert got == pytest.approx(kwh, abs=1e-9)
    # the window around the spike itself
    assert dirty.window("10:30", "10:45") == clean.window("10:30", "10:45")
    assert dirty.window("10:30", "10:45") == pytest.approx(15.0, abs=1e-9)
    assert np.array_equal(dirty.engine.ring_e, clean.engine.ring_e)


def test_a_replaced_meter_at_a_higher_reading_rebaselines_after_three_readings() -> None:
    r = Run(ChannelSpec("meter", max_rate_per_h=100.0), 60)  # 100 kW: 1.67 kWh a minute
    r.feed([("10:00:00", 100.0), ("10:01:00", 101.0), ("10:02:00", 102.0)])
    # the new meter reads 50,000: rejected, and the minute after 10:02 stays open
    assert r.feed([("10:03:00", 50000.0), ("10:04:00", 50001.0)]) == []
    assert r.events() == {Event.GLITCH: 2}
    r.feed([("10:05:00", 50002.0), ("10:06:00", 50003.0), ("10:07:00", 50004.0)])
    r.check(
        [
            ("10:01", 1.0, MEASURED),
            ("10:02", 1.0, MEASURED),
            ("10:03", 0.0, RESET),  # 10:02 -> 10:03, to the new baseline: nothing
            ("10:04", 1.0, MEASURED),  # 50000 -> 50001: the agreeing readings count
            ("10:05", 1.0, MEASURED),
            ("10:06", 1.0, MEASURED),
            ("10:07", 1.0, MEASURED),
        ]
    )
    assert r.coverage[2:4] == [("10:03", 0.0, 0.0), ("10:04", 60.0, 0.0)]
    assert r.events() == {Event.GLITCH: 3, Event.REBASELINE: 1}
    assert r.event_rows[-1] == (0, "10:03:00", Event.REBASELINE, 50000.0)  # up: a jump


def test_a_float32_counter_at_a_million_kwh_is_never_a_glitch() -> None:
    # float32 at 1e6 has a ULP of 0.0625 kWh; at 100 kW a 1 s poll moves 0.0278 kWh, so
    # the reading stands still, then jumps a whole ULP (2.25 x what 100 kW allows).
    spec = ChannelSpec("f32", max_rate_per_h=120.0, tol_rel=2.0**-22)
    t0 = ms("10:00:00")
    true = [1e6 + i * 100.0 / 3600.0 for i in range(3601)]
    rows = [(t0 + i * 1000, float(np.float32(x))) for i, x in enumerate(true)]
    assert {b - a for (_, a), (_, b) in itertools.pairwise(rows)} == {0.0, 0.0625}
    r = Run(spec, 3600)
    r.feed(rows)
    assert r.events() == {}
    [(end, kwh, q)] = r.records
    assert (end, q) == ("11:00", MEASURED)
    assert abs(kwh - 100.0) <= 0.0625
    for m in range(60):
        minute = r.window(slot("10:00") + m, slot("10:00") + m + 1)
        assert abs(minute - 100.0 / 60.0) <= 0.0625


POWER = ChannelSpec("p", kind=ChannelKind.POWER, max_rate_per_h=500.0, max_gap_s=300.0)


def test_power_is_integrated_by_trapezoid() -> None:
    r = Run(POWER, 60)
    t0 = ms("10:00:00")
    r.feed([(t0 + i * 10_000, 60.0) for i in range(61)])  # 60 kW, 10:00 to 10:10
    r.check([(f"10:{m:02d}", 1.0, INTEGRATED) for m in range(1, 11)])
    assert r.window("10:00", "10:10") == pytest.approx(10.0, abs=1e-9)
    # a ramp 0 -> 120 kW over one minute is 1 kWh; negative power (export) counts as 0
    r2 = Run(POWER, 60)
    r2.feed([("10:00:00", 0.0), ("10:01:00", 120.0), ("10:02:00", -50.0), ("10:03:00", -50.0)])
    r2.check([("10:01", 1.0, INTEGRATED), ("10:02", 1.0, INTEGRATED), ("10:03", 0.0, INTEGRATED)])


def test_power_gap_is_not_integrated_and_marked_gap() -> None:
    r = Run(POWER, 60)
    r.feed(
        [
            ("10:00:00", 60.0),
            ("10:00:30", 60.0),
            ("10:01:00", 60.0),
            ("10:10:00", 60.0),  # 9 minutes of silence: longer than max_gap_s = 300
            ("10:10:30", 60.0),
            ("10:11:00", 60.0),
            ("10:11:20", 9999.0),  # above max_power_kw: rejected
            ("10:12:00", 60.0),
        ]
    )
    gap = [(f"10:{m:02d}", 0.0, GAP) for m in range(2, 11)]
    r.check(
        [("10:01", 1.0, INTEGRATED), *gap, ("10:11", 1.0, INTEGRATED), ("10:12", 1.0, INTEGRATED)]
    )
    assert r.events() == {Event.GLITCH: 1}


def test_duplicate_out_of_order_and_missing_readings_change_nothing() -> None:
    base = [
        ("10:00:00", 10.0),
        ("10:00:30", 10.5),
        ("10:01:00", 11.0),
        ("10:01:30", 11.5),
        ("10:02:00", 12.0),
    ]
    messy = [
        ("10:00:00", 10.0),
        ("10:00:30", 10.5),
        ("10:00:30", 99.0),  # same timestamp, different value
        ("10:01:00", 11.0),
        ("10:00:10", 5.0),  # late
        ("10:01:00", 11.0),  # exact duplicate
        ("10:01:15", float("nan")),  # "not available"
        ("10:01:30", 11.5),
        ("10:02:00", 12.0),
    ]
    expected = [("10:01", 1.0, MEASURED), ("10:02", 1.0, MEASURED)]
    clean, dirty = Run(COUNTER, 60), Run(COUNTER, 60)
    clean.feed(base)
    dirty.feed(messy)
    clean.check(expected)
    dirty.check(expected)
    assert dirty.records == clean.records
    assert dirty.events() == {Event.OUT_OF_ORDER: 3, Event.MISSING: 1}


def test_the_first_interval_is_partial_when_the_first_reading_is_inside_it() -> None:
    spec = ChannelSpec("meter", max_rate_per_h=200.0, max_gap_s=3600.0)
    r = Run(spec, 900)
    r.feed([("10:07:00", 100.0), ("10:15:00", 108.0), ("10:30:00", 123.0)])
    r.check([("10:15", 8.0, PARTIAL), ("10:30", 15.0, MEASURED)])
    on_boundary = Run(spec, 900)
    on_boundary.feed([("10:00:00", 100.0), ("10:15:00", 115.0)])
    on_boundary.check([("10:15", 15.0, MEASURED)])


def test_quality_words_most_serious_first() -> None:
    assert quality_of(Flag.RESET | Flag.PARTIAL | Flag.INTERPOLATED, ChannelKind.COUNTER) == RESET
    assert quality_of(Flag.PARTIAL | Flag.GAP, ChannelKind.POWER) == PARTIAL
    assert quality_of(Flag.GAP | Flag.INTERPOLATED, ChannelKind.POWER) == GAP
    assert quality_of(Flag.INTERPOLATED, ChannelKind.COUNTER) == INTERPOLATED
    assert quality_of(Flag.NONE, ChannelKind.COUNTER) == MEASURED
    assert quality_of(Flag.NONE, ChannelKind.POWER) == INTEGRATED


def test_demand_is_the_15_minute_average_and_its_peak_resets_each_month() -> None:
    jan, feb = "2024-01-01T00:00:00", "2024-02-01T00:00:00"
    spec = ChannelSpec("meter", max_rate_per_h=500.0)
    r = Run(spec, 900, demand=[True], month_starts_ms=[ms(jan), ms(feb)])
    t0 = ms("2024-01-31T23:00:00")
    # 120 kW (1 kWh per 30 s) from 23:00 to 23:30, then 60 kW to 00:30 on 1 February
    rows = [(t0 + i * 30_000, 1000.0 + i * 1.0) for i in range(61)]
    rows += [(ms("2024-01-31T23:30:00") + i * 30_000, 1060.0 + i * 0.5) for i in range(1, 121)]
    until_midnight = [row for row in rows if row[0] <= ms("2024-01-31T23:59:30")]
    r.feed(until_midnight)
    kw, at, month = r.engine.demand_peak(0)
    # the window first holds 15 minutes of 120 kW at the minute 23:14-23:15;
    # it stays 120 until 23:29, and the first minute keeps the peak
    assert (kw, at, month) == (120.0, slot("2024-01-31T23:14:00"), 0)
    assert r.ref.demand_kw(0, at) == pytest.approx(120.0)
    assert r.ref.demand_kw(0, at - 1) == pytest.approx(112.0)  # 14 minutes since the start
    assert r.ref.demand_peak(0, slot(jan), slot(feb)) == (pytest.approx(120.0), at)
    r.feed([row for row in rows if row[0] > ms("2024-01-31T23:59:30")])
    kw, at, month = r.engine.demand_peak(0)
    # a new month: the peak starts over; at 60 kW the 15-minute demand is 60 kW
    assert (kw, at, month) == (60.0, slot(feb), 1)
    assert r.ref.demand_peak(0, slot(feb), slot("2024-03-01T00:00:00")) == (
        pytest.approx(60.0),
        slot(feb),
    )


def test_state_per_channel_fits_in_64_kib() -> None:
    n = 100
    e = Engine([ChannelSpec(f"m{i}") for i in range(n)], 900)
    per_channel = sum(a.nbytes for a in e.state_arrays().values()) / n
    assert per_channel <= 64 * 1024
    assert e.ring_e.shape == e.ring_f.shape == (n, RING)
