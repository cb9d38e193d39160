"""The site's windows over outages: exact however late, across a restart, revised.

The readings are the golden outage cases' (tests/cases/replay-outage-*: 1 kWh per
minute per meter, Asia/Shanghai, 900 s intervals), fed one reading at a time with
the hold on the readings' clock, as the running agent sees them.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config import load_config
from agent.contract import Message, encode
from agent.core.engine import load_kernel
from agent.core.series import REACH_SLOTS
from agent.core.site import Reading, SiteCore
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

DAY_MS = 86_400_000
CASES = Path(__file__).resolve().parents[2] / "cases"
LIBRARY = ProfileLibrary()
SHANGHAI = ZoneInfo("Asia/Shanghai")
load_kernel()  # numba's default cache: the cases' configs name no state_dir


def local_ms(day: int, hour: int = 0) -> int:
    return int(datetime(2024, 1, day, hour, tzinfo=SHANGHAI).timestamp() * 1000)


def _case(name: str) -> tuple[Path, list[Reading]]:
    case = CASES / name
    with (case / "readings.csv").open(newline="") as f:
        rows = [
            Reading(r["device"], int(r["ts"]), {Quantity(r["quantity"]): float(r["value"])})
            for r in csv.DictReader(f)
        ]
    return case, rows


def _site(case: Path, tmp: Path) -> SiteCore:
    config = load_config(case / "config.yaml")
    return SiteCore(config.model_copy(update={"state_dir": tmp}), LIBRARY)


def feed(site: SiteCore, rows: list[Reading]) -> list[Message]:
    out: list[Message] = []
    for r in rows:
        out += site.feed([r], measurements=False)
        out += site.flush(now_ms=r.ts)
    return out


def _wire(ms: list[Message]) -> list[str]:
    return [f"{m.topic} {encode(m.payload).decode()}" for m in ms]


def _intensity(ms: list[Message]) -> list[dict[str, object]]:
    return [m.payload for m in ms if m.topic.endswith("/intensity")]


def _kwh(payload: dict[str, object], window: str) -> float:
    windows = payload["windows"]
    assert isinstance(windows, dict)
    return float(windows[window]["energy_kwh"])


@pytest.mark.parametrize(
    ("name", "cut_at"),
    [
        ("replay-outage-overnight", local_ms(1, 23)),  # the last reading before the gap
        ("replay-outage-34h", local_ms(2, 12)),  # mid-gap, past the first local midnight
        ("replay-outage-one-of-two", local_ms(2, 3)),  # m2 down, m1's records published
    ],
)
def test_a_restart_during_an_outage_changes_nothing(name: str, cut_at: int, tmp_path: Path) -> None:
    """Saved during the outage and restored in a new core, the rest of the readings give
    exactly what one uninterrupted core gives: the series (slots and days) and the
    published revisions are in the snapshot."""
    case, rows = _case(name)
    before = [r for r in rows if r.ts <= cut_at]
    after = rows[len(before) :]
    one_run = _site(case, tmp_path / "a")
    feed(one_run, before)
    expected = feed(one_run, after) + one_run.flush()

    first = _site(case, tmp_path / "b")
    feed(first, before)
    first.save_snapshot(tmp_path / "core.npz")
    restored = _site(case, tmp_path / "c")
    assert restored.load_snapshot(tmp_path / "core.npz")
    got = feed(restored, after) + restored.flush()
    assert _wire(got) == _wire(expected)


def test_the_midnight_record_after_an_overnight_outage_and_a_restart(tmp_path: Path) -> None:
    """Gateway off from 23:00 to 07:00, restarted after local midnight: the record of
    00:00 Jan 2 says today 1440 kWh (1380 measured + 60 interpolated minutes at 1 kWh),
    the 12:00 record month 1440 + 720 = 2160."""
    case, rows = _case("replay-outage-overnight")
    before = [r for r in rows if r.ts <= local_ms(1, 23)]
    site = _site(case, tmp_path / "a")
    feed(site, before)
    site.save_snapshot(tmp_path / "core.npz")
    restored = _site(case, tmp_path / "b")
    restored.load_snapshot(tmp_path / "core.npz")
    out = _intensity(feed(restored, rows[len(before) :]) + restored.flush())
    by_ts = {int(str(p["ts"])): p for p in out}
    midnight = by_ts[local_ms(2)]
    assert (_kwh(midnight, "today"), _kwh(midnight, "month")) == (1440.0, 1440.0)
    assert midnight["windows"]["today"]["interpolated_share"] == pytest.approx(60 / 1440)  # type: ignore[index]
    noon = by_ts[local_ms(2, 12)]
    assert (_kwh(noon, "today"), _kwh(noon, "month"), _kwh(noon, "24h")) == (720, 2160, 1440)


def test_a_late_meter_revises_the_records_it_missed(tmp_path: Path) -> None:
    """m2 down 23:00 -> 07:00: the 00:00 record goes out on time with m2 missing (2820,
    m2 named), and again with rev 1 once m2's gap is closed (2880, nothing missing);
    each of the 31 records 23:15 ... 06:45 exactly twice, the others once."""
    case, rows = _case("replay-outage-one-of-two")
    site = _site(case, tmp_path)
    out = _intensity(feed(site, rows) + site.flush())
    revs: dict[int, list[int]] = {}
    for p in out:
        revs.setdefault(int(str(p["ts"])), []).append(int(str(p["rev"])))
    twice = [ts for ts, r in revs.items() if r == [0, 1]]
    assert twice == list(range(local_ms(1, 23) + 900_000, local_ms(2, 7), 900_000))
    assert all(r == [0] for ts, r in revs.items() if ts not in twice)
    first, last = (p for p in out if p["ts"] == local_ms(2))
    today = first["windows"]["today"]  # type: ignore[index]
    assert (today["energy_kwh"], today["missing_count"], today["missing_devices"]) == (
        2820.0,
        1,
        ["m2"],
    )
    assert today["missing_share"] == pytest.approx(60 / 2880)
    today = last["windows"]["today"]  # type: ignore[index]
    assert (today["energy_kwh"], today["missing_count"], today["missing_share"]) == (2880, 0, 0)


def test_the_series_shrinks_once_an_outage_is_over(tmp_path: Path) -> None:
    """During the 34 h outage the series holds the whole gap; once every record of it is
    out, it keeps no more than twice the reach of a window (a 25-hour day and a margin:
    it drops what is older once that is more than one reach) and the month's days."""
    case, rows = _case("replay-outage-34h")
    site = _site(case, tmp_path)
    feed(site, rows)
    series = site.windows.series
    end_slot = rows[-1].ts // 60_000
    assert end_slot - series.base <= 2 * REACH_SLOTS + 60
    assert series.data.shape[0] <= 3 * REACH_SLOTS
    assert sorted(series.days) == [
        datetime(2024, 1, d).toordinal() for d in (1, 2, 3)
    ]  # January's days so far


def test_a_snapshot_of_this_format_taken_mid_outage_continues(tmp_path: Path) -> None:
    """tests/cases/series-v2-one-of-two/core.npz: written by this format (the site's
    series, the revisions published) at 03:00 Jan 2 local, m2 down since 23:00. A later
    version must read it and continue exactly like one run: the 00:00 record's rev 1 says
    2880 kWh once m2 is back. (Rewrite it only with a core whose files must stay
    readable: see ``case.json`` for the cut.)"""
    golden = CASES / "series-v2-one-of-two"
    case, rows = _case("replay-outage-one-of-two")
    cut = int((golden / "case.json").read_text().split('"cut": ')[1].split("}")[0])
    one_run = _site(case, tmp_path / "a")
    feed(one_run, rows[:cut])
    expected = feed(one_run, rows[cut:]) + one_run.flush()
    restored = _site(case, tmp_path / "b")
    assert restored.load_snapshot(golden / "core.npz")
    got = feed(restored, rows[cut:]) + restored.flush()
    assert _wire(got) == _wire(expected)
    midnight = [p for p in _intensity(got) if p["ts"] == local_ms(2)]
    assert [(p["rev"], _kwh(p, "today")) for p in midnight] == [(1, 2880.0)]


def test_a_meter_added_across_a_restart_keeps_the_day_and_counts_as_missing_before(
    tmp_path: Path,
) -> None:
    """m1 alone until 12:00 Jan 1 (720 kWh), restarted with m2 configured too, which never
    answers: the 00:00 Jan 2 record still has all of m1's day (1440 kWh) and names m2,
    missing for the whole day: half of the day's meter-time."""
    case, rows = _case("replay-outage-overnight")
    before = [r for r in rows if r.ts <= local_ms(1, 12)]
    first = _site(case, tmp_path / "a")
    feed(first, before)
    first.save_snapshot(tmp_path / "core.npz")
    config = load_config(case / "config.yaml")
    m2 = config.devices[0].model_copy(update={"id": "m2", "unit": 2})
    config = config.model_copy(update={"devices": [*config.devices, m2], "state_dir": tmp_path})
    restored = SiteCore(config, LIBRARY)
    assert restored.load_snapshot(tmp_path / "core.npz")
    out = _intensity(feed(restored, rows[len(before) :]))
    (midnight,) = (p for p in out if p["ts"] == local_ms(2))
    today = midnight["windows"]["today"]  # type: ignore[index]
    assert (today["energy_kwh"], today["missing_devices"]) == (1440.0, ["m2"])
    assert today["missing_share"] == 0.5
    assert today["interpolated_share"] == pytest.approx(60 / 2880)  # m1's 23:00 - 24:00


def test_a_meter_that_never_comes_back_does_not_make_the_series_grow_for_ever(
    tmp_path: Path,
) -> None:
    """m2 answers for the first hour of 60 days, m1 all along (a reading every 15 min):
    the series keeps at most REVISE_DAYS (45) and a window's reach, not 60 days."""
    config = load_config(CASES / "replay-outage-one-of-two" / "config.yaml")
    site = SiteCore(config.model_copy(update={"state_dir": tmp_path}), LIBRARY)
    t0, ek = local_ms(1), Quantity.ENERGY_IMPORT_KWH
    rows = [Reading("m2", t0 + k * 15 * 60_000, {ek: 10.0 + k}) for k in range(5)]
    rows += [Reading("m1", t0 + k * 15 * 60_000, {ek: 100.0 + k}) for k in range(60 * 96)]
    rows.sort(key=lambda r: (r.ts, r.device))
    for day in range(60):
        batch = [r for r in rows if t0 + day * DAY_MS <= r.ts < t0 + (day + 1) * DAY_MS]
        site.feed(batch, measurements=False)
        site.flush(now_ms=batch[-1].ts)
    series = site.windows.series
    kept_days = (rows[-1].ts // 60_000 - series.base) / 1440
    assert 45 <= kept_days <= 45 + 2 * REACH_SLOTS / 1440
    assert len(site.windows._published) <= 46 * 96
