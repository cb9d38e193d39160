"""The page's trends (agent.http.trend): buckets on the site's clock, the sums worked out
by hand, read from a real history file written by the agent's own History."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.history.db import NewRecord
from agent.history.reader import EnergySum
from agent.history.writer import History
from agent.http.trend import BadSpan, Meter, TrendCache, answer, build, edges

MIN = 60_000
HOUR = 60 * MIN
#: 2023-11-14 22:00 UTC = 2023-11-15 06:00 in Shanghai (UTC+8, no DST)
T = 1_700_000_000_000 // HOUR * HOUR

METERS = [
    Meter("main", "electricity", root=True),
    Meter("sub", "electricity", root=False),
    Meter("gas", "gas", root=True),
    Meter("parts", "production", root=True),
]


def _energy(device: str, ts: int, kwh: float, co2: float, quality: str = "measured") -> NewRecord:
    payload = {"ts": ts, "interval_s": 60, "energy_kwh": kwh, "co2_kg": co2, "quality": quality}
    return NewRecord(
        "energy", device, ts, 0, "", f"energy/v1/p/g/{device}/energy", json.dumps(payload).encode()
    )


def test_buckets_end_on_the_site_clock() -> None:
    # 24 h: 15-minute buckets, the last holding now
    start, bucket, n = edges("24h", T + 7 * MIN, "UTC")
    assert (bucket, n) == (15 * MIN, 96) and start + n * bucket == T + 15 * MIN
    # 30 days: 6-hour buckets at local 00/06/12/18. T is 06:00 in Shanghai: the last
    # bucket is 06:00-12:00 local = T .. T+6h; 30 min later in UTC it ends at 00:00 UTC.
    start, bucket, n = edges("30d", T + 30 * MIN, "Asia/Shanghai")
    assert (bucket, n) == (6 * HOUR, 120) and start + n * bucket == T + 6 * HOUR
    start, _, _ = edges("30d", T + 30 * MIN, "UTC")
    assert start + 120 * 6 * HOUR == T + 2 * HOUR  # 22:30 UTC is in 18:00-24:00 UTC
    with pytest.raises(BadSpan):
        edges("7d", T, "UTC")


def test_sums_power_intensity_and_coverage_per_bucket(tmp_path: Path) -> None:
    """Bucket T .. T+15 min, now T+10 min (10 minutes elapsed up to the newest record):
    main 10 one-minute records (0.5 kg each): 8 measured of 2 kWh, 2 partial of 1 kWh;
    sub (inside main) 10 x 0.5 kWh, the 5th interpolated; gas 5 x 1 kWh (0.2 kg); parts
    10 records of 0 kWh."""
    history = History(tmp_path / "history.db", max_bytes=2**30, retention_months=25)
    recs = []
    for k in range(1, 11):
        ts = T + k * MIN
        bad = k in (3, 4)
        recs.append(_energy("main", ts, 1.0 if bad else 2.0, 0.5, "partial" if bad else "measured"))
        recs.append(_energy("sub", ts, 0.5, 0.125, "interpolated" if k == 5 else "measured"))
        recs.append(_energy("parts", ts, 0.0, 0.0))
        if k <= 5:
            recs.append(_energy("gas", ts, 1.0, 0.2))
    recs.append(_energy("main", T - 24 * HOUR, 99.0, 9.0))  # before the window: left out
    recs.append(_energy("main", T - 29 * MIN, 2.0, 0.5))  # the span's history begins T-30
    history.put(recs)
    history.close()
    doc = answer(tmp_path / "history.db", "24h", METERS, "UTC", T + 10 * MIN + 5000)
    assert (doc["n"], doc["bucket_s"]) == (96, 900)
    last = doc["n"] - 1
    assert doc["from"] + last * 900_000 == T
    main, sub, gas = (doc["devices"][d] for d in ("main", "sub", "gas"))
    # main: 8 x 2 + 2 x 1 = 18 kWh; power over its 8 whole minutes: 16 kWh / 8 min =
    # 120 kW (not 18 kWh / 10 min = 108); 8 of the 10 minutes covered
    assert (main["energy_kwh"][last], main["power_kw"][last], main["coverage"][last]) == (
        18.0,
        120.0,
        0.8,
    )
    # gas: 5 kWh, no power (not electricity), covered 5 of the 10 minutes
    assert (gas["energy_kwh"][last], gas["power_kw"][last], gas["coverage"][last]) == (
        5.0,
        None,
        0.5,
    )
    # sub: an interpolated minute has its whole energy (power) but was not measured
    assert (sub["power_kw"][last], sub["coverage"][last]) == (30.0, 0.9)
    site = doc["site"]
    # site = roots without production: main + gas = 23 kWh, CO2 5 + 1 = 6 kg ->
    # 6000 / 23 = 260.87 g/kWh;
    # power = main's 120 kW (sub is inside main); coverage = (0.8 + 0.9 + 0.5 + 1) / 4
    assert site["energy_kwh"][last] == 23.0
    assert site["intensity_g_per_kwh"][last] == 260.9
    assert site["power_kw"][last] == 120.0
    assert site["coverage"][last] == 0.8
    # the bucket before has no records: no numbers, and no zero pretending to be one
    assert site["energy_kwh"][last - 1] is None and site["power_kw"][last - 1] is None
    assert site["coverage"][last - 1] == 0.0  # its 15 minutes passed without a record
    # T-30..T-15: main's one minute of 15, the others none: (1/15) / 4 = 0.01667
    assert site["coverage"][last - 2] == 0.017 and main["power_kw"][last - 2] == 120.0
    assert site["coverage"][last - 3] is None  # before the history begins
    assert len(site["power_kw"]) == 96 and site["energy_kwh"].count(None) == 94


def test_no_history_is_an_empty_trend() -> None:
    doc = answer(None, "30d", METERS, "UTC", T)
    assert doc["n"] == 120 and doc["site"]["power_kw"] == [None] * 120
    assert doc["site"]["coverage"] == [None] * 120


def test_the_cache_keeps_an_answer_for_a_while() -> None:
    now = [1000.0]
    cache = TrendCache(lambda: now[0])
    cache.put("24h", {"n": 1})
    now[0] += 29
    assert cache.get("24h") == {"n": 1} and cache.get("30d") is None
    now[0] += 2
    assert cache.get("24h") is None


def test_a_root_with_only_a_partial_interval_adds_no_power() -> None:
    """Two roots in one minute: a measured 1 kWh (60 kW) and a partial 0.5 kWh (its first
    interval after a start: no mean power). The site's power is 60 kW, its energy 1.5."""
    sums = [
        EnergySum("a", 0, "measured", 1.0, 0.5, 60, 60, T, T + MIN),
        EnergySum("b", 0, "partial", 0.5, 0.25, 60, 60, T, T + MIN),
    ]
    meters = [Meter("a", "electricity", root=True), Meter("b", "electricity", root=True)]
    doc = build(sums, meters, T, 15 * MIN, 1)
    assert doc["devices"]["b"]["power_kw"] == [None]
    assert doc["site"]["power_kw"] == [60.0] and doc["site"]["energy_kwh"] == [1.5]
    assert doc["site"]["coverage"] == [0.5]  # a covered its minute, b did not


def test_the_route_s_answers_bad_span_no_history_and_shared_readings(tmp_path: Path) -> None:
    import asyncio

    from agent.http.trend import Trends
    from tests.support.agents import T0 as AGENT_T0
    from tests.support.agents import make_agent

    status = make_agent(tmp_path / "agent", minutes=0).status(AGENT_T0)
    trends = Trends(tmp_path / "none.db", clock=lambda: AGENT_T0 / 1000)

    async def ask() -> list[tuple[int, dict[str, object]]]:
        bad = await trends.answer("7d", status, AGENT_T0)
        two = await asyncio.gather(*(trends.answer("24h", status, AGENT_T0) for _ in range(2)))
        return [bad, *two]

    bad, first, second = asyncio.run(ask())
    assert bad == (400, {"error": "span: give one of 24h, 30d"})
    assert first[0] == 200 and first[1] is second[1]  # one reading, shared
    assert sorted(first[1]["devices"]) == ["main", "parts", "spare", "sub"]  # type: ignore[call-overload]
