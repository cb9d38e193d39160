"""A month of a gateway's history, written with the agent's own History, for the page's
trends: every device's 15-minute ``energy`` records on a day/night step, so the sums
the page shows can be worked out by hand.

Electricity and gas meters run at ``day_kw`` from 08:00 to 20:00 site time and at
``day_kw / 4`` otherwise; production meters record 0 kWh. One 6-hour hole (no
records at all) sits ten days back, so a gap is seen as one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.history.db import NewRecord
from agent.history.writer import History

QUARTER_MS = 15 * 60_000
#: kg CO2 per kWh of the seeded records (any factor: the page divides it back out).
FACTOR = 0.5703


@dataclass(frozen=True)
class Seeded:
    first_ms: int
    last_ms: int
    hole: tuple[int, int]
    day_kw: dict[str, float]


def power_at(day_kw: float, end_ms: int, zone: str) -> float:
    """The seeded power of the quarter hour ending at ``end_ms``."""
    start = dt.datetime.fromtimestamp((end_ms - QUARTER_MS) / 1000, ZoneInfo(zone))
    return day_kw if 8 <= start.hour < 20 else day_kw / 4


def seed(path: Path, devices: Iterable[tuple[str, str]], until_ms: int, zone: str) -> Seeded:
    """30 days of records ending at the quarter hour before ``until_ms``; ``devices`` are
    (id, kind). Day power: 10 kW for the first device, 20 kW for the next, ..."""
    last = until_ms // QUARTER_MS * QUARTER_MS
    first = last - 30 * 96 * QUARTER_MS
    hole = (last - 10 * 86_400_000, last - 10 * 86_400_000 + 6 * 3_600_000)
    day_kw: dict[str, float] = {}
    records: list[NewRecord] = []
    for n, (device, kind) in enumerate(devices):
        kw = 0.0 if kind == "production" else 10.0 * (n + 1)
        day_kw[device] = kw
        for end in range(first + QUARTER_MS, last + 1, QUARTER_MS):
            if hole[0] < end <= hole[1]:
                continue
            kwh = power_at(kw, end, zone) * 0.25
            payload = {
                "ts": end,
                "interval_s": 900,
                "carrier": kind,
                "quality": "measured",
                "energy_kwh": kwh,
                "co2_kg": kwh * FACTOR,
            }
            records.append(
                NewRecord(
                    "energy",
                    device,
                    end,
                    0,
                    "",
                    f"seed/{device}/energy",
                    json.dumps(payload).encode(),
                )
            )
    history = History(path, max_bytes=2**30, retention_months=25)
    try:
        for i in range(0, len(records), 2000):  # below the writer's in-memory bound
            history.put(records[i : i + 2000])
        assert history.held() == 0, "the seeded history was not stored"
    finally:
        history.close()
    return Seeded(first, last, hole, day_kw)
