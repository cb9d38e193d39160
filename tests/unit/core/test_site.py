"""SiteCore: from polls of a config's devices to the records the agent publishes.

A longer, messy stream (an electricity tree with a power-only child, gas, a
production counter, jittered polls, "not available" values, a polling gap, local
midnight of the 25-hour day) is checked the way a plant engineer checks a report:
every record is valid under the payload contract, the windows add up to the
interval records, a restart from a snapshot changes nothing.
"""

from __future__ import annotations

import json
import math
import random
import zipfile
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import load_config
from agent.config.models import AgentConfig
from agent.contract import Message
from agent.contract.models import EnergyModel, IntensityModel, MeasurementsModel
from agent.core import snapshot
from agent.core.calendar import SiteCalendar
from agent.core.engine import load_kernel
from agent.core.site import Reading, SiteCore
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

LIBRARY = ProfileLibrary()
# The kernel with numba's default cache, before a config's state_dir could redirect it
# (and NUMBA_CACHE_DIR with it, for every process the test session starts).
load_kernel()
PREFIX = "energy/v1/plant-a/gw-01"
MIN = 60_000
INTERVAL_MS = 300_000
ZONE = "Europe/Berlin"
# 2024-10-26 22:30 local (+2) = 20:30 UTC; four hours of data cross local midnight
# into the 25-hour Sunday (clocks go back at 03:00).
START = int(datetime(2024, 10, 26, 20, 30, tzinfo=UTC).timestamp() * 1000) + 4_321
HOURS = 4

EK = Quantity.ENERGY_IMPORT_KWH
P = Quantity.ACTIVE_POWER_KW
GAS = Quantity.GAS_VOLUME_M3
UNITS = Quantity.OUTPUT_UNITS


def _reg(quantity: str, type_: str = "float64", **extra: Any) -> dict[str, Any]:
    return {"quantity": quantity, "table": "input", "address": 0, "type": type_, **extra}


DEVICES: list[dict[str, Any]] = [
    # a root electricity meter: counter and power
    {
        "id": "main",
        "unit": 1,
        "interval_s": 10,
        "max_power_kw": 500,
        "registers": [
            _reg("energy_import_kwh"),
            {**_reg("active_power_kw", "float32"), "address": 8},
        ],
    },
    # children: a 0.01 kWh integer counter, and a meter with power only (integrated)
    {
        "id": "line-a",
        "unit": 2,
        "interval_s": 10,
        "parent": "main",
        "registers": [_reg("energy_import_kwh", "uint32", scale=0.01)],
    },
    {
        "id": "line-b",
        "unit": 3,
        "interval_s": 10,
        "parent": "main",
        "registers": [_reg("active_power_kw", "float32")],
    },
    {
        "id": "boiler",
        "unit": 4,
        "interval_s": 10,
        "kind": "gas",
        "registers": [_reg("gas_volume_m3")],
    },
    {
        "id": "count",
        "unit": 5,
        "interval_s": 10,
        "kind": "production",
        "registers": [_reg("output_units", "uint32")],
    },
]
EXTRA = {"id": "extra", "unit": 6, "interval_s": 10, "registers": [_reg("energy_import_kwh")]}


def make_config(tmp: Path, devices: list[dict[str, Any]] | None = None, **over: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "site": {"id": "plant-a", "timezone": ZONE},
        "gateway": {"id": "gw-01"},
        "carbon": {
            "electricity": {"kg_per_kwh": 0.5},
            "natural_gas": {"kg_per_m3": 2.0, "kwh_per_m3": 10.0},
        },
        "buses": [{"id": "bus-1", "tcp": {"host": "127.0.0.1"}}],
        "devices": [{"bus": "bus-1", **d} for d in (DEVICES if devices is None else devices)],
        "publish": {"energy_interval_s": 300},
        "state_dir": str(tmp),
        **over,
    }
    return AgentConfig.model_validate(data)


def stream(
    seed: int = 7,
    devices: tuple[str, ...] = ("main", "line-a", "line-b", "boiler", "count", "extra"),
) -> list[Reading]:
    """Jittered 10-s polls of every device, in time order."""
    rng = random.Random(seed)
    counters = {"main": 1000.0, "line-a": 200.0, "boiler": 50.0, "count": 10_000.0, "extra": 5.0}
    out: list[Reading] = []
    gap = (START + 100 * MIN, START + 107 * MIN)  # main is silent for seven minutes
    for k in range(HOURS * 360):
        base = START + k * 10_000
        for dev in devices:
            t = base + rng.randint(0, 3_000)
            if dev == "main" and gap[0] <= t < gap[1]:
                counters["main"] += 0.1
                continue
            values: dict[Quantity, float | None]
            if dev == "main":
                counters["main"] += rng.uniform(0.05, 0.15)
                ok = rng.random() > 0.01
                values = {EK: counters["main"] if ok else None, P: round(rng.uniform(18, 54), 1)}
            elif dev == "line-a":
                counters["line-a"] = round(counters["line-a"] + rng.randint(2, 5) / 100, 2)
                values = {EK: counters["line-a"]}
            elif dev == "line-b":
                values = {P: round(rng.uniform(5, 15), 2)}
            elif dev == "boiler":
                counters["boiler"] += rng.uniform(0.01, 0.03)
                values = {GAS: counters["boiler"]}
            elif dev == "count":
                counters["count"] += rng.randint(0, 2)
                values = {UNITS: counters["count"]}
            else:
                counters["extra"] += 0.05
                values = {EK: counters["extra"]}
            out.append(Reading(dev, t, values))
    out.sort(key=lambda r: r.ts)
    return out


def batches(readings: list[Reading], seed: int = 3) -> list[list[Reading]]:
    """Random batch sizes, as polls of several buses arrive together."""
    rng = random.Random(seed)
    out = []
    i = 0
    while i < len(readings):
        n = rng.randint(1, 40)
        out.append(readings[i : i + n])
        i += n
    return out


def run(site: SiteCore, parts: list[list[Reading]], *, final: bool = True) -> list[Message]:
    out: list[Message] = []
    for b in parts:
        out += site.feed(b)
    if final:
        out += site.flush()
    return out


def kind_of(m: Message) -> str:
    return m.topic.rsplit("/", 1)[-1]


def device_of(m: Message) -> str:
    return m.topic.split("/")[-2]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[Message]:
    tmp = tmp_path_factory.mktemp("site")
    readings = [r for r in stream() if r.device != "extra"]
    return run(SiteCore(make_config(tmp), LIBRARY), batches(readings))


# --- the contract ----------------------------------------------------------------------


def test_every_record_is_valid(uninterrupted: list[Message]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for m in uninterrupted:
        kind = kind_of(m)
        counts[kind] += 1
        if kind == "intensity":
            assert m.topic == f"{PREFIX}/intensity"
            IntensityModel.model_validate(m.payload)
            assert set(m.payload["windows"]) == {"1m", "15m", "1h", "24h", "today", "month"}
            continue
        dev = device_of(m)
        assert dev in {"main", "line-a", "line-b", "boiler", "count"}
        assert m.topic == f"{PREFIX}/{dev}/{kind}"
        if kind == "energy":
            EnergyModel.model_validate(m.payload)
        else:
            assert kind == "measurements"
            MeasurementsModel.model_validate(m.payload)
    # Polls from 20:30:04 to 00:29:57 UTC: intervals end at 20:35 (partial) ... 00:25,
    # (00:25 - 20:35) / 5 min + 1 = 47; the one ending 00:30 is still open.
    assert counts["intensity"] == 47
    assert counts["energy"] == 5 * 47
    # main is silent from START + 100 min for 420 s: the 42 polls k = 600 ... 641
    assert counts["measurements"] == 5 * HOURS * 360 - 42


def test_energy_records_per_carrier(uninterrupted: list[Message]) -> None:
    first: dict[str, dict[str, Any]] = {}
    for m in uninterrupted:
        if kind_of(m) != "energy":
            continue
        p = m.payload
        dev = device_of(m)
        first.setdefault(dev, p)
        assert p["interval_s"] == 300
        assert p["ts"] % INTERVAL_MS == 0
        assert math.isclose(p["avg_power_kw"], p["energy_kwh"] * 12, abs_tol=1e-8)
        if dev == "boiler":
            assert p["carrier"] == "natural_gas"
            assert p["ef_kg_per_kwh"] == 0.2  # 2.0 kg/m3 / 10 kWh/m3
            assert math.isclose(p["energy_kwh"], p["volume_m3"] * 10, abs_tol=1e-8)
            assert math.isclose(p["co2_kg"], p["volume_m3"] * 2.0, abs_tol=1e-8)
        elif dev == "count":
            assert p["carrier"] == "production"
            assert (p["energy_kwh"], p["co2_kg"], p["ef_kg_per_kwh"]) == (0.0, 0.0, None)
            assert p["units"] >= 0
        else:
            assert p["carrier"] == "electricity"
            assert math.isclose(p["co2_kg"], p["energy_kwh"] * 0.5, abs_tol=1e-8)
        assert ("unmetered_kwh" in p) == (dev == "main")
    # every device's first reading lies inside its first interval
    assert {d: p["quality"] for d, p in first.items()} == dict.fromkeys(first, "partial")
    qualities = defaultdict(set)
    for m in uninterrupted:
        if kind_of(m) == "energy":
            qualities[device_of(m)].add(m.payload["quality"])
    assert "interpolated" in qualities["main"]  # the seven-minute gap
    assert qualities["line-b"] == {"partial", "integrated"}
    assert "reset" not in set().union(*qualities.values())


def test_unmetered_is_parent_minus_children(uninterrupted: list[Message]) -> None:
    energy = {
        (device_of(m), m.payload["ts"]): m.payload for m in uninterrupted if kind_of(m) == "energy"
    }
    ends = sorted({ts for _, ts in energy})
    for ts in ends[1:]:  # the first interval is partial for each meter at its own time
        main = energy[("main", ts)]
        kids = energy[("line-a", ts)]["energy_kwh"] + energy[("line-b", ts)]["energy_kwh"]
        assert math.isclose(main["unmetered_kwh"], main["energy_kwh"] - kids, abs_tol=1e-8)


def test_measurement_seq_counts_from_one_per_device(uninterrupted: list[Message]) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in uninterrupted:
        if kind_of(m) == "measurements":
            seqs[device_of(m)].append(m.payload["seq"])
    for dev, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), dev


def test_intensity_after_every_energy_record_of_its_ts(uninterrupted: list[Message]) -> None:
    intensity_at: dict[int, int] = {}
    last_energy_at: dict[int, int] = {}
    for i, m in enumerate(uninterrupted):
        if kind_of(m) == "intensity":
            assert m.payload["ts"] not in intensity_at, "one intensity record per interval"
            intensity_at[m.payload["ts"]] = i
        elif kind_of(m) == "energy":
            last_energy_at[m.payload["ts"]] = i
    assert set(intensity_at) == set(last_energy_at)
    for ts, i in intensity_at.items():
        assert last_energy_at[ts] < i, ts
    assert list(intensity_at) == sorted(intensity_at), "intensity records in time order"


def test_windows_add_up_to_the_interval_records(uninterrupted: list[Message]) -> None:
    """15m/1h/24h/today/month of the site = sums of the root meters' interval records."""
    cal = SiteCalendar(ZONE)
    per_end: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for m in uninterrupted:
        if kind_of(m) != "energy":
            continue
        p, dev = m.payload, device_of(m)
        e = per_end[p["ts"]]
        if dev in ("main", "boiler"):  # roots; line-a and line-b are inside main
            e["kwh"] += p["energy_kwh"]
            e["co2"] += p["co2_kg"]
        if dev == "main":
            e["kgce"] += p["energy_kwh"] * 0.1229
        if dev == "boiler":
            e["kgce"] += p["volume_m3"] * 1.2143
        if dev == "count":
            e["units"] += p["units"]
    checked_midnight = False
    for m in uninterrupted:
        if kind_of(m) != "intensity":
            continue
        ts = m.payload["ts"]
        w = m.payload["windows"]
        day_start, _ = cal.day_bounds(ts - 1)  # a record at midnight closes the day before
        spans = {
            "15m": lambda t, ts=ts: ts - 15 * MIN < t <= ts,
            "1h": lambda t, ts=ts: ts - 60 * MIN < t <= ts,
            "24h": lambda t, ts=ts: ts - 1440 * MIN < t <= ts,
            "today": lambda t, ts=ts, a=day_start: a < t <= ts,
            # the stream lies in one local month (October)
            "month": lambda t, ts=ts: t <= ts,
        }
        for name, inside in spans.items():
            ends = [t for t in per_end if inside(t)]
            kwh = sum(per_end[t]["kwh"] for t in ends)
            co2 = sum(per_end[t]["co2"] for t in ends)
            units = sum(per_end[t]["units"] for t in ends)
            kgce = sum(per_end[t]["kgce"] for t in ends)
            got = w[name]
            assert math.isclose(got["energy_kwh"], kwh, abs_tol=1e-7), (name, ts)
            assert math.isclose(got["co2_kg"], co2, abs_tol=1e-7), (name, ts)
            assert math.isclose(got["output_units"], units, abs_tol=1e-7), (name, ts)
            assert math.isclose(got["tce"], kgce / 1000, abs_tol=1e-9), (name, ts)
            assert math.isclose(got["kwh_per_unit"], kwh / units, abs_tol=1e-8)
            assert math.isclose(got["intensity_g_per_kwh"], 1000 * co2 / kwh, abs_tol=1e-6)
        if cal.local_date(ts) != cal.local_date(ts - 1):
            # the record at local midnight: today = the whole day, and the next record
            # starts a new day (checked by the spans above)
            checked_midnight = True
            assert cal.local_date(ts - 1) == date(2024, 10, 26)
    assert checked_midnight


def test_custom_prefix(tmp_path: Path) -> None:
    config = make_config(tmp_path, mqtt={"host": "broker", "prefix": "acme/energy/v1"})
    site = SiteCore(config, LIBRARY)
    out = run(site, batches([r for r in stream() if r.device != "extra"][:3000]))
    topics = {m.topic for m in out}
    assert "acme/energy/v1/plant-a/gw-01/intensity" in topics
    assert "acme/energy/v1/plant-a/gw-01/main/energy" in topics
    assert all(t.startswith("acme/energy/v1/plant-a/gw-01/") for t in topics)


# --- the meter tree --------------------------------------------------------------------


def _tree(tmp: Path) -> AgentConfig:
    return make_config(tmp, [DEVICES[0], DEVICES[1]])


def test_parent_does_not_wait_for_a_child_that_started_later(tmp_path: Path) -> None:
    # main from 00:00, line-a only from 00:07:15: line-a has no record for the interval
    # ending 00:05 and never will. main's 00:05 record comes at once (unmetered unknown:
    # null), before the intensity of 00:05, not at the end of the stream.
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    readings = []
    for k in range(91):  # 00:00 .. 00:15, every 10 s
        t = t0 + k * 10_000
        readings.append(Reading("main", t, {EK: 100 + 0.1 * k}))
        if t >= t0 + 425_000:
            readings.append(Reading("line-a", t + 5_000, {EK: round(10 + 0.05 * k, 2)}))
    site = SiteCore(_tree(tmp_path), LIBRARY)
    out = [m for b in batches(readings) for m in site.feed(b, measurements=False)]
    out += site.flush()
    order = [(device_of(m) if kind_of(m) == "energy" else "site", m.payload["ts"]) for m in out]
    end = lambda m: t0 + m * MIN  # noqa: E731
    assert order == [
        ("main", end(5)),
        ("site", end(5)),
        ("line-a", end(10)),  # partial: from 00:07:15
        ("main", end(10)),
        ("site", end(10)),
        ("line-a", end(15)),
        ("main", end(15)),
        ("site", end(15)),
    ]
    main = {m.payload["ts"]: m.payload for m in out if device_of(m) == "main"}
    assert (main[end(5)]["unmetered_kwh"], main[end(5)]["incomplete_children"]) == (None, 1)
    # line-a from its first poll at 00:07:15 (k = 43: 12.15) to 00:10:00, where the
    # counter interpolates between 00:09:55 (12.95) and 00:10:05 (13.00) to 12.975:
    # 0.825 kWh, of 165 s of the interval's 300. main 3.0 - 0.825 = 2.175 would claim
    # line-a's first 135 s as unmetered: it is null, the partial child counted. Then
    # 00:15, both whole: 3.0 - 1.5 = 1.5.
    line_a = {m.payload["ts"]: m.payload for m in out if device_of(m) == "line-a"}
    assert line_a[end(10)]["energy_kwh"] == 0.825
    assert line_a[end(10)]["quality"] == "partial"
    assert (main[end(10)]["unmetered_kwh"], main[end(10)]["incomplete_children"]) == (None, 1)
    assert (main[end(15)]["unmetered_kwh"], main[end(15)]["incomplete_children"]) == (1.5, 0)


def test_parent_with_a_silent_child(tmp_path: Path) -> None:
    # line-a never answers: main is not held, unmetered is null, the site goes on.
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    readings = [Reading("main", t0 + k * 10_000, {EK: 100 + 0.1 * k}) for k in range(91)]
    site = SiteCore(_tree(tmp_path), LIBRARY)
    out = [m for b in batches(readings) for m in site.feed(b, measurements=False)]
    assert [kind_of(m) for m in out] == ["energy", "intensity"] * 3
    assert all(m.payload["unmetered_kwh"] is None for m in out if kind_of(m) == "energy")
    assert site.flush() == []


def test_parent_waits_for_a_lagging_child(tmp_path: Path) -> None:
    # line-a's polls arrive late (another, slower bus): main's 00:05 record waits for
    # line-a's 00:05 record, then carries unmetered = 3.0 - 1.5 = 1.5.
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    site = SiteCore(_tree(tmp_path), LIBRARY)

    def line_a(k: int) -> list[Reading]:
        return [Reading("line-a", t0 + k * 10_000, {EK: round(10 + 0.05 * k, 2)})]

    out = site.feed(line_a(0), measurements=False)
    for k in range(37):  # main to 00:06:00
        out += site.feed(
            [Reading("main", t0 + k * 10_000, {EK: 100 + 0.1 * k})], measurements=False
        )
    assert out == []  # main closed 00:05 but waits for line-a, and so does the site
    for k in range(1, 31):  # line-a to 00:05:00
        out += site.feed(line_a(k), measurements=False)
    assert [device_of(m) if kind_of(m) == "energy" else "site" for m in out] == [
        "line-a",
        "main",
        "site",
    ]
    assert math.isclose(out[1].payload["unmetered_kwh"], 1.5, abs_tol=1e-9)


def test_site_hold_releases_what_waits_for_a_silent_meter(tmp_path: Path) -> None:
    # The running agent calls flush(now): after core.site_hold_s (120 s) the parent goes
    # out with unmetered null and the intensity without the silent child.
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    site = SiteCore(_tree(tmp_path), LIBRARY)
    out = site.feed([Reading("line-a", t0, {EK: 10.0})], measurements=False)
    for k in range(37):
        out += site.feed(
            [Reading("main", t0 + k * 10_000, {EK: 100 + 0.1 * k})], measurements=False
        )
    end = t0 + 5 * MIN
    assert out + site.flush(now_ms=end + 119_000) == []
    late = site.flush(now_ms=end + 120_000)
    assert [(kind_of(m), m.payload["ts"]) for m in late] == [("energy", end), ("intensity", end)]
    assert late[0].payload["unmetered_kwh"] is None
    assert late[1].payload["windows"]["today"]["energy_kwh"] == 3.0


# --- snapshots -------------------------------------------------------------------------


@pytest.mark.parametrize("split", [0.1, 0.5, 0.62, 0.9])
def test_snapshot_continuation_equals_one_run(
    tmp_path: Path, uninterrupted: list[Message], split: float
) -> None:
    """Stop after part of the stream, save, restore into a new core, go on: same records.

    0.62 lies just after local midnight (22:30 + 0.62 x 4 h = 00:59): finished days and
    `today` come from the snapshot too.
    """
    config = make_config(tmp_path)
    parts = batches([r for r in stream() if r.device != "extra"])
    cut = int(len(parts) * split)
    first = SiteCore(config, LIBRARY)
    out = run(first, parts[:cut], final=False)
    path = tmp_path / "state" / "core.npz"
    first.save_snapshot(path)
    second = SiteCore(config, LIBRARY)
    assert second.load_snapshot(path)
    out += run(second, parts[cut:])
    assert len(out) == len(uninterrupted)
    for i, (a, b) in enumerate(zip(out, uninterrupted, strict=True)):
        assert a == b, f"message {i}"


def test_restart_after_downtime_spreads_the_gap(tmp_path: Path) -> None:
    """Ten minutes down between snapshot and restart: interpolated, not reset, not doubled."""
    config = make_config(tmp_path, [DEVICES[0]])
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)

    def main(k: int) -> Reading:
        return Reading("main", t0 + k * 10_000, {EK: 100 + 0.1 * k})

    first = SiteCore(config, LIBRARY)
    out = [m for k in range(31) for m in first.feed([main(k)])]  # 00:00 .. 00:05
    path = tmp_path / "core.npz"
    first.save_snapshot(path)
    second = SiteCore(config, LIBRARY)
    second.load_snapshot(path)
    out += [m for k in range(90, 121) for m in second.feed([main(k)])]  # 00:15 .. 00:20
    energy = [m.payload for m in out if device_of(m) == "main" and kind_of(m) == "energy"]
    # 00:05 measured; 00:05:00 (103.0) -> 00:15:00 (109.0) spread: 3.0 + 3.0; then 3.0
    assert [(p["energy_kwh"], p["quality"]) for p in energy] == [
        (3.0, "measured"),
        (3.0, "interpolated"),
        (3.0, "interpolated"),
        (3.0, "measured"),
    ]
    seqs = [m.payload["seq"] for m in out if kind_of(m) == "measurements"]
    assert seqs == list(range(1, 63))


@pytest.mark.parametrize("change", ["device added", "device removed"])
def test_snapshot_after_config_change(tmp_path: Path, change: str) -> None:
    old_devices = DEVICES
    new_devices = [*DEVICES, EXTRA] if change == "device added" else DEVICES[:-1]
    kept = {"main", "line-a", "line-b", "boiler"}
    readings = stream()
    parts_old = batches([r for r in readings if r.device != "extra"])
    cut = len(parts_old) // 2
    cut_ts = parts_old[cut][0].ts
    wanted = {d["id"] for d in new_devices}
    after = batches([r for r in readings if r.ts >= cut_ts and r.device in wanted])

    reference = run(SiteCore(make_config(tmp_path, old_devices), LIBRARY), parts_old)
    first = SiteCore(make_config(tmp_path, old_devices), LIBRARY)
    before = run(first, parts_old[:cut], final=False)
    path = tmp_path / "core.npz"
    first.save_snapshot(path)
    second = SiteCore(make_config(tmp_path, new_devices), LIBRARY)
    assert second.load_snapshot(path)
    restored = before + run(second, after)

    def energy_of(msgs: list[Message]) -> dict[tuple[str, int], dict[str, Any]]:
        return {
            (device_of(m), m.payload["ts"]): m.payload
            for m in msgs
            if kind_of(m) == "energy" and device_of(m) in kept
        }

    # The devices in both configs continue exactly: no reset, nothing counted twice.
    assert energy_of(restored) == energy_of(reference)
    seq: dict[str, list[int]] = defaultdict(list)
    for m in restored:
        if kind_of(m) == "measurements":
            seq[device_of(m)].append(m.payload["seq"])
    for dev in kept:
        assert seq[dev] == list(range(1, len(seq[dev]) + 1)), dev
    if change == "device added":
        extra = [m.payload for m in restored if device_of(m) == "extra" and kind_of(m) == "energy"]
        assert extra[0]["quality"] == "partial"
        assert {p["quality"] for p in extra[1:]} == {"measured"}
        assert seq["extra"][0] == 1
    else:
        assert not any(
            device_of(m) == "count" for m in restored[len(before) :] if kind_of(m) != "intensity"
        )


def test_no_snapshot_is_a_fresh_start(tmp_path: Path) -> None:
    site = SiteCore(_tree(tmp_path), LIBRARY)
    assert site.load_snapshot(tmp_path / "none.npz") is False


def _valid_snapshot(tmp: Path) -> Path:
    site = SiteCore(_tree(tmp), LIBRARY)
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    run(
        site,
        [[Reading("main", t0 + k * 10_000, {EK: 100 + 0.1 * k}) for k in range(40)]],
        final=False,
    )
    path = tmp / "core.npz"
    site.save_snapshot(path)
    return path


def _corrupt(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "tail cut":
        path.write_bytes(data[:-20])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "text":
        path.write_text("not a snapshot\n")
    elif kind == "flipped byte":
        # a byte inside the first stored array: the zip's CRC no longer matches
        pos = data.index(b"NUMPY") + 200
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :])
    elif kind == "no meta":
        np.savez(path.with_suffix(""), I=np.zeros((1, 1)))  # np.savez adds .npz
    elif kind == "other format":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
        np.savez(path.with_suffix(""), **arrays, meta=np.frombuffer(b'{"format": 99}', np.uint8))
    elif kind == "meta not an object":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
        np.savez(path.with_suffix(""), **arrays, meta=np.frombuffer(b"[1, 2]", np.uint8))
    elif kind in ("seq not a number", "held record cut short"):
        # A document whose values are of the wrong kind: refused before anything is
        # restored, as a SnapshotError (which the agent handles), not a ValueError.
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(bytes(z["meta"]).decode())
        if kind == "seq not a number":
            meta["seq"] = {"main": "many"}
        else:
            meta["held"] = [[0, "main"]]
        blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(path.with_suffix(""), **arrays, meta=blob)
    elif kind == "arrays missing":
        with np.load(path) as z:
            meta = z["meta"]
        np.savez(path.with_suffix(""), meta=meta)
    elif kind == "array of another shape":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["ring_e"] = arrays["ring_e"][:, :100]
        np.savez(path.with_suffix(""), **arrays)
    else:
        raise AssertionError(kind)


CORRUPTIONS = [
    "empty",
    "truncated",
    "tail cut",
    "garbage",
    "text",
    "flipped byte",
    "no meta",
    "other format",
    "meta not an object",
    "arrays missing",
    "array of another shape",
    "seq not a number",
    "held record cut short",
]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_snapshot_raises_snapshot_error(tmp_path: Path, kind: str) -> None:
    path = _valid_snapshot(tmp_path)
    _corrupt(kind, path)
    site = SiteCore(_tree(tmp_path), LIBRARY)
    with pytest.raises(snapshot.SnapshotError):
        site.load_snapshot(path)
    # Nothing was half restored: the core starts fresh and counts like a new one.
    t0 = int(datetime(2024, 1, 2, tzinfo=UTC).timestamp() * 1000)
    parts = [[Reading("main", t0 + k * 10_000, {EK: 5 + 0.1 * k}) for k in range(31)]]
    fresh = SiteCore(_tree(tmp_path), LIBRARY)
    assert run(site, parts) == run(fresh, parts)


def test_snapshot_is_replaced_atomically(tmp_path: Path) -> None:
    path = _valid_snapshot(tmp_path)
    assert zipfile.is_zipfile(path)
    assert not path.with_name(path.name + ".tmp").exists()


# --- export energy (docs/core.md, "Export energy") ------------------------------------------


def _export_site(tmp: Path) -> SiteCore:
    case = Path(__file__).resolve().parents[2] / "cases" / "replay-export"
    config = load_config(case / "config.yaml")
    return SiteCore(config.model_copy(update={"state_dir": tmp}), LIBRARY)


def _export_readings(glitch_at: int | None = None) -> list[Reading]:
    """replay-export's readings: import +1 kWh a minute to 00:10, then export +0.5."""
    t0 = 1_709_251_200_000
    out = []
    for m in range(21):
        export = 200 + 0.5 * max(0, m - 10)
        if m == glitch_at:
            export = 1e9  # one garbage export reading
        values = {
            Quantity.ENERGY_IMPORT_KWH: 1000.0 + min(m, 10),
            Quantity.ENERGY_EXPORT_KWH: export,
        }
        out.append(Reading("m1", t0 + m * 60_000, values))
    return out


def _export_records(ms: list[Message]) -> list[tuple[float, float, float]]:
    return [
        (m.payload["energy_kwh"], m.payload["export_kwh"], m.payload["co2_kg"])
        for m in ms
        if m.topic.endswith("/energy")
    ]


def test_a_glitch_of_the_export_counter_is_its_own_event_and_counts_nothing(
    tmp_path: Path,
) -> None:
    """The export counter is corrected like the import one, on its own channel: a reading
    10^9 kWh high (beyond the carrier default limit) is a glitch event naming
    energy_export_kwh, and the records are those of the clean readings (hand arithmetic
    in tests/cases/replay-export/config.yaml)."""
    site = _export_site(tmp_path)
    ms = site.feed(_export_readings(glitch_at=13), measurements=False) + site.flush()
    assert _export_records(ms) == [
        (5.0, 0.0, 2.5),
        (5.0, 0.0, 2.5),
        (0.0, 2.5, 0.0),
        (0.0, 2.5, 0.0),
    ]
    events = [m.payload for m in ms if m.topic.endswith("/events")]
    assert [(e["event"], e["quantity"], e["value"]) for e in events] == [
        ("glitch", "energy_export_kwh", 1e9)
    ]


def test_the_export_channel_continues_across_a_restart(tmp_path: Path) -> None:
    """Its state is in the snapshot under its own key: a core restored at 00:12 gives the
    records one uninterrupted core gives."""
    rows = _export_readings()
    one = _export_site(tmp_path / "a")
    expected = one.feed(rows, measurements=False) + one.flush()
    first = _export_site(tmp_path / "b")
    got = first.feed(rows[:13], measurements=False)
    first.save_snapshot(tmp_path / "core.npz")
    again = _export_site(tmp_path / "c")
    assert again.load_snapshot(tmp_path / "core.npz")
    got += again.feed(rows[13:], measurements=False) + again.flush()
    assert _export_records(got) == _export_records(expected)
    assert _export_records(got)[2:] == [(0.0, 2.5, 0.0), (0.0, 2.5, 0.0)]
