"""Coverage, slot rows, alignment, export and run-time limits, worked out by hand.

How much of every slot and interval was measured, interpolated across a gap, or is
missing; every closed slot handed out as a row, however many one reading closes;
intervals aligned to a local offset; export integrated from the same power readings
as import; limits and wrap ranges changed at run time. Each stream runs through the
engine and the reference (:class:`tests.support.core_rows.Run` compares them).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from agent.core.channels import SLOT_MS, ChannelKind, ChannelSpec, Event, Flag
from agent.core.engine import Engine
from agent.core.snapshot import Snapshot
from tests.support.core_rows import (
    GAP,
    INTEGRATED,
    INTERPOLATED,
    MEASURED,
    PARTIAL,
    Run,
    hhmm,
    ms,
    slot,
)

COUNTER = ChannelSpec("meter", max_rate_per_h=200.0, max_gap_s=300.0)
POWER = ChannelSpec("p", kind=ChannelKind.POWER, max_rate_per_h=500.0, max_gap_s=300.0)
EXPORT = ChannelSpec("p-export", kind=ChannelKind.POWER_EXPORT, max_rate_per_h=500.0)


def _every(start: str, end: str, every_s: int, kwh_per_min: float, v0: float) -> list:
    """A counter read every ``every_s`` from ``start`` to ``end`` inclusive."""
    t0, t1 = ms(start), ms(end)
    return [(t, v0 + (t - t0) / SLOT_MS * kwh_per_min) for t in range(t0, t1 + 1, every_s * 1000)]


# --- coverage -----------------------------------------------------------------------------


def test_normal_polling_is_measured_and_the_first_interval_misses_its_start() -> None:
    r = Run(COUNTER, 300)
    r.feed(_every("10:02:30", "10:10:00", 10, 1.0, 100.0))  # 60 kW
    # 10:00-10:05: from the first reading at 10:02:30 only: 2.5 kWh, 150 s measured
    r.check([("10:05", 2.5, PARTIAL), ("10:10", 5.0, MEASURED)])
    assert r.coverage == [("10:05", 150.0, 0.0), ("10:10", 300.0, 0.0)]
    slots = r.closed[0].slots
    assert slots.slot[0] == slot("10:02")
    assert (slots.measured_ms[0], slots.flags[0]) == (30_000, Flag.PARTIAL)
    assert slots.measured_ms[1:].tolist() == [60_000] * 7
    assert slots.flags[1:].tolist() == [0] * 7


def test_a_polling_gap_is_interpolated_coverage() -> None:
    r = Run(COUNTER, 300)  # max_gap_s 300: 7 minutes without a reading is a gap
    r.feed(
        [
            ("10:00:00", 500.0),
            ("10:01:00", 501.0),
            ("10:08:00", 508.0),  # 1 kWh a minute throughout
            ("10:09:00", 509.0),
            ("10:10:00", 510.0),
        ]
    )
    r.check([("10:05", 5.0, INTERPOLATED), ("10:10", 5.0, INTERPOLATED)])
    # 10:00-10:01 measured, 10:01-10:08 interpolated, 10:08-10:10 measured
    assert r.coverage == [("10:05", 60.0, 240.0), ("10:10", 120.0, 180.0)]


def test_a_power_gap_is_missing_coverage() -> None:
    r = Run(POWER, 300)
    rows = [("10:00:00", 60.0), ("10:00:30", 60.0), ("10:01:00", 60.0)]
    rows += [(t, 60.0) for t in range(ms("10:10:00"), ms("10:15:00") + 1, 30_000)]
    r.feed(rows)  # nothing from 10:01 to 10:10: longer than max_gap_s, not integrated
    r.check([("10:05", 1.0, GAP), ("10:10", 0.0, GAP), ("10:15", 5.0, INTEGRATED)])
    assert r.coverage == [("10:05", 60.0, 0.0), ("10:10", 0.0, 0.0), ("10:15", 300.0, 0.0)]


def test_the_span_a_rebaseline_skips_is_missing_coverage() -> None:
    r = Run(COUNTER, 300)
    r.feed(_every("10:00:00", "10:02:00", 30, 1.0, 1000.0))  # 1002.0 at 10:02
    # reset at 10:03 to 0, climbing 1 kWh a minute; three agree by 10:04
    r.feed(_every("10:03:00", "10:10:00", 30, 1.0, 0.0))
    # 10:00-10:05: 2 kWh to 10:02, nothing 10:02-10:03, 2 kWh 10:03-10:05
    assert [(e, round(x, 9), q) for e, x, q in r.records] == [
        ("10:05", 4.0, "reset"),
        ("10:10", 5.0, MEASURED),
    ]
    assert r.coverage == [("10:05", 240.0, 0.0), ("10:10", 300.0, 0.0)]


# --- slot rows ----------------------------------------------------------------------------


def test_a_34_hour_outage_hands_out_every_slot_it_closes() -> None:
    """The reading after the outage closes 2,040 slots at once, more than the ring's
    1,536: every one comes out as a row (the site builds its windows from these), even
    through an output buffer of 4 rows."""
    r = Run(COUNTER, 900, out_capacity=4)
    r.feed([("10:00:00", 1000.0), ("10:01:00", 1001.0)])
    back = ms("2024-01-16T20:01:00")  # 34 h later, 1 kWh a minute all along
    r.feed([(back, 1001.0 + 34 * 60)])
    slots = r.closed[-1].slots
    assert len(slots) == 34 * 60
    assert slots.slot.tolist() == list(range(slot("10:01"), back // SLOT_MS))
    assert np.allclose(slots.energy, 1.0, rtol=0, atol=1e-9)
    assert math.isclose(float(slots.energy.sum()), 2040.0, rel_tol=0, abs_tol=1e-6)
    assert set(slots.interpolated_ms.tolist()) == {60_000}
    assert set(slots.measured_ms.tolist()) == {0}
    assert set(slots.flags.tolist()) == {Flag.INTERPOLATED}
    # 136 quarter hours from 10:15 to 20:00 the next day, 15 kWh each; the first had
    # its first minute measured
    rec = r.closed[-1].records
    assert len(rec) == 136 and hhmm(int(rec.end_ms[-1])) == "20:00"
    assert np.allclose(rec.energy, 15.0, rtol=0, atol=1e-9)
    assert (rec.measured_ms[0], rec.interpolated_ms[0]) == (60_000, 840_000)
    assert set(rec.interpolated_ms[1:].tolist()) == {900_000}


def test_slot_rows_carry_the_15_minute_demand() -> None:
    spec = ChannelSpec("meter", max_rate_per_h=500.0)
    r = Run([spec, ChannelSpec("b")], 900, demand=[True, False])
    r.feed(_every("10:00:00", "10:20:00", 30, 2.0, 0.0))  # 120 kW on both channels
    slots = r.closed[0].slots
    a = slots.channel == 0
    # slot k after 10:00 holds k + 1 minutes of 2 kWh: (k + 1) x 2 x 60 / 15 kW, then 120
    want = [8.0 * (k + 1) for k in range(15)] + [120.0] * 5
    assert slots.demand_kw[a] == pytest.approx(want, abs=1e-9)
    assert np.isnan(slots.demand_kw[~a]).all()


# --- alignment ----------------------------------------------------------------------------


def test_hourly_intervals_aligned_to_a_half_hour_zone() -> None:
    """Asia/Kolkata is UTC+5:30: with the offset 30, the hour ending 18:30 UTC ends at
    local midnight, so a local day is made of whole intervals."""
    assert datetime(2024, 1, 15, 18, 30, tzinfo=UTC).astimezone(ZoneInfo("Asia/Kolkata")).strftime(
        "%H:%M"
    ) == ("00:00")
    readings = _every("17:00:00", "19:00:00", 60, 1.0, 0.0)
    r = Run(COUNTER, 3600, align_offset_slots=30)
    r.feed(readings)
    # 16:30-17:30 from the first reading at 17:00: 30 kWh; 17:30-18:30: 60 kWh
    r.check([("17:30", 30.0, PARTIAL), ("18:30", 60.0, MEASURED)])
    assert r.coverage == [("17:30", 1800.0, 0.0), ("18:30", 3600.0, 0.0)]
    assert r.engine.interval_start_slot(slot("18:59")) == slot("18:30")
    assert r.engine.emitted_end(0) == ms("18:30:00")
    utc = Run(COUNTER, 3600)  # offset 0: on the UTC hour, as before
    utc.feed(readings)
    utc.check([("18:00", 60.0, MEASURED), ("19:00", 60.0, MEASURED)])


@pytest.mark.parametrize("offset", [-1, 60, 61])
def test_an_offset_outside_the_interval_is_refused(offset: int) -> None:
    with pytest.raises(ValueError, match="align_offset_slots"):
        Engine([COUNTER], 3600, align_offset_slots=offset)


# --- export -------------------------------------------------------------------------------


def test_import_and_export_from_the_same_power_readings() -> None:
    r = Run([POWER, EXPORT], 60)
    r.feed(
        [
            ("10:00:00", 0.0),
            ("10:01:00", -120.0),  # exporting
            ("10:02:00", 120.0),
            ("10:02:30", 9999.0),  # beyond 500 kW: a glitch on both channels
            ("10:03:00", 120.0),
        ]
    )
    # trapezoids of max(P, 0) and max(-P, 0): 0 -> -120 is 1 kWh of export; -120 -> 120
    # is 1 kWh each way (net 0, the trapezoid of P); 120 -> 120 is 2 kWh of import
    r.check([("10:01", 0.0, INTEGRATED), ("10:02", 1.0, INTEGRATED), ("10:03", 2.0, INTEGRATED)])
    r.check(
        [("10:01", 1.0, INTEGRATED), ("10:02", 1.0, INTEGRATED), ("10:03", 0.0, INTEGRATED)],
        channel=1,
    )
    assert r.event_rows == [
        (0, "10:02:30", Event.GLITCH, 9999.0),
        (1, "10:02:30", Event.GLITCH, 9999.0),
    ]


# --- limits at run time -------------------------------------------------------------------


def test_a_limit_set_at_run_time_decides_from_then_on() -> None:
    r = Run(ChannelSpec("meter"), 60)  # no limit yet
    r.feed([("10:00:00", 100.0), ("10:01:00", 101.0), ("10:02:00", 1101.0)])  # +1000 taken
    assert r.engine.max_rate(0) == math.inf
    r.engine.set_limit(0, 200.0)
    r.ref.set_limit(0, 200.0)
    r.feed([("10:03:00", 2101.0), ("10:04:00", 1102.0), ("10:05:00", 1103.0)])
    # +1000 kWh in a minute is now a glitch; 10:02-10:04 interpolates 1101 -> 1102
    r.check(
        [
            ("10:01", 1.0, MEASURED),
            ("10:02", 1000.0, MEASURED),
            ("10:03", 0.5, MEASURED),
            ("10:04", 0.5, MEASURED),
            ("10:05", 1.0, MEASURED),
        ]
    )
    assert r.event_rows == [(0, "10:03:00", Event.GLITCH, 2101.0)]


def test_a_wrap_range_set_at_run_time() -> None:
    # uint16 x 0.01 kWh scaled by CT 100: the range is 65,536 x 0.01 x 100 = 65,536 kWh
    r = Run(ChannelSpec("u16", max_rate_per_h=1000.0), 60)
    r.engine.set_wrap(0, 65536.0)
    r.ref.set_wrap(0, 65536.0)
    r.feed([("10:00:00", 65535.0), ("10:00:30", 3.0), ("10:01:00", 5.0)])
    r.check([("10:01", 6.0, MEASURED)])  # 1 to the top and 3 after it, then 2
    assert r.event_rows == [(0, "10:00:30", Event.WRAP, 3.0)]
    assert r.engine.wrap(0) == 65536.0


@pytest.mark.parametrize(
    ("setter", "value"),
    [("set_limit", 0.0), ("set_limit", -5.0), ("set_limit", math.nan), ("set_wrap", -1.0)],
)
def test_a_nonsense_limit_is_refused(setter: str, value: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        getattr(Engine([COUNTER], 60), setter)(0, value)


def test_a_restore_keeps_the_limits_in_force() -> None:
    """A snapshot taken under 200 kW, restored where the site has since set 50 kW and a
    wrap range: the values in force stay, the file's are not taken back."""
    before = Engine([COUNTER], 60)
    before.feed(np.array([0, 0]), np.array([ms("10:00:00"), ms("10:01:00")]), np.array([1.0, 2.0]))
    snap = Snapshot(Path("core.npz"))
    before.save(snap)
    after = Engine([ChannelSpec("meter")], 60)
    after.set_limit(0, 50.0)
    after.set_wrap(0, 1000.0)
    after.restorer(snap, same_interval=True)()
    assert (after.max_rate(0), after.wrap(0)) == (50.0, 1000.0)
    assert after.has_reference(0)


def test_a_restore_under_another_alignment_continues_on_the_new_grid() -> None:
    """Saved with UTC hours, restored with the offset 30 (the site moved to a :30 zone):
    the counter continues, and the next record ends at the next half hour with the hour
    before it, partly from slots closed before the snapshot."""
    before = Engine([COUNTER], 3600)
    rows = _every("10:00:00", "10:40:00", 60, 1.0, 0.0)
    before.feed(np.zeros(len(rows)), np.array([t for t, _ in rows]), np.array([v for _, v in rows]))
    snap = Snapshot(Path("core.npz"))
    before.save(snap)
    after = Engine([COUNTER], 3600, align_offset_slots=30)
    after.restorer(snap, same_interval=True)()
    assert after.emitted_end(0) == ms("10:30:00")  # the interval holding 10:40 began then
    rows = _every("10:41:00", "11:40:00", 60, 1.0, 41.0)
    rec = after.feed(
        np.zeros(len(rows)), np.array([t for t, _ in rows]), np.array([v for _, v in rows])
    ).records
    assert [hhmm(int(e)) for e in rec.end_ms] == ["11:30"]
    assert rec.energy[0] == pytest.approx(60.0, abs=1e-9)  # 10:30-11:30 at 1 kWh a minute
    assert (rec.measured_ms[0], rec.flags[0]) == (3_600_000, 0)
