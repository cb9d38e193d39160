"""``GET /api/trend?span=24h|30d``: the page's trends, bucketed on the gateway.

Why buckets here and not in the browser: 30 days of one-minute records of a
dozen meters are ~500,000 rows; a phone should get ~100 numbers per line, not
the rows. SQLite sums each device's ``energy`` records per bucket (the one that
holds the interval's end) and quality (:meth:`HistoryReader.energy_sums`), in a
worker thread, and the answer is kept for a while (``TTL_MS``), so viewers never
make the gateway read the file more often than that.

Buckets: 96 of 15 minutes for ``24h``, 120 of 6 hours for ``30d``, edges on the
site's clock (6-hour buckets start at local 00, 06, 12, 18), the last one
holding now. Per bucket and device:

* ``energy_kwh``: the sum of its records' energy;
* ``power_kw``: the energy of its intervals whose energy is whole (``measured``,
  ``integrated``, ``interpolated``) over their hours (electricity only): the mean
  power while it was metered, so a gap is a gap, not a dip to zero, and a
  ``partial``, ``gap`` or ``reset`` interval (the first after a start, a lower
  bound) does not read as a drop;
* ``coverage``: the share of the bucket covered by intervals whose quality is
  ``measured`` or ``integrated``, counted from the oldest record in the span to
  the newest (null before the history begins: not a gap, nothing to cover).

The site is its **root** meters (``parent`` unset, production excluded), as the
core's site totals: energy and CO2 summed, ``power_kw`` the sum of the roots'
mean power, ``intensity_g_per_kwh`` = 1000 x CO2 / energy, and ``coverage``
the mean of every device's. Which devices are roots comes from the status
snapshot (the config), since the records do not say.

Answer: ``{"span", "from", "bucket_s", "n", "site": {series: [..]},
"devices": {id: {"kind", "series": [..]}}}``; a series is ``n`` numbers or null.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.history.db import HistoryError
from agent.history.reader import EnergySum, HistoryReader
from agent.status import AgentStatus

MIN_MS = 60_000
#: span -> (bucket length ms, buckets)
SPANS: dict[str, tuple[int, int]] = {"24h": (15 * MIN_MS, 96), "30d": (360 * MIN_MS, 120)}
#: How long an answer is reused: a fraction of its bucket.
TTL_MS = {"24h": 30_000, "30d": 300_000}
#: Qualities that count as covered (docs/core.md "Quality").
COVERED = frozenset({"measured", "integrated"})
#: Qualities whose energy is the interval's whole energy: a mean power can be made of it.
WHOLE = COVERED | {"interpolated"}
ELECTRICITY, PRODUCTION = "electricity", "production"


class BadSpan(ValueError):
    """A span the page does not know."""


@dataclass(frozen=True, slots=True)
class Meter:
    """What a trend needs to know of a configured device (from the status snapshot)."""

    id: str
    kind: str
    root: bool


def edges(span: str, now_ms: int, zone: str) -> tuple[int, int, int]:
    """(first bucket's start, bucket length, buckets) for ``span``, on the site's clock."""
    if span not in SPANS:
        raise BadSpan(f"span: give one of {', '.join(SPANS)}")
    bucket, n = SPANS[span]
    try:
        tz: dt.tzinfo = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    off = dt.datetime.fromtimestamp(now_ms / 1000, tz).utcoffset() or dt.timedelta()
    off_ms = int(off.total_seconds() * 1000)
    end = ((now_ms + off_ms) // bucket + 1) * bucket - off_ms
    return end - n * bucket, bucket, n


class _Acc:
    """One device's sums per bucket."""

    def __init__(self, n: int) -> None:
        self.energy = [0.0] * n
        self.co2 = [0.0] * n
        self.present_s = [0] * n
        self.good_s = [0] * n
        self.whole_s = [0] * n
        self.whole_kwh = [0.0] * n

    def add(self, i: int, part: EnergySum) -> None:
        self.energy[i] += part.energy_kwh
        self.co2[i] += part.co2_kg
        self.present_s[i] += part.seconds
        if part.quality in COVERED:
            self.good_s[i] += part.all_seconds
        if part.quality in WHOLE:
            self.whole_s[i] += part.seconds
            self.whole_kwh[i] += part.energy_kwh

    def mean_kw(self, i: int) -> float | None:
        """Mean power over the intervals whose energy is whole (see the module's doc)."""
        return self.whole_kwh[i] * 3600 / self.whole_s[i] if self.whole_s[i] else None


def _r(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits) + 0.0


def build(
    sums: Sequence[EnergySum],
    meters: Iterable[Meter],
    start: int,
    bucket: int,
    n: int,
    span: str = "24h",
) -> dict[str, Any]:
    """The trend document of the history's sums (see the module's docstring)."""
    meters = list(meters)
    acc = {m.id: _Acc(n) for m in meters}
    upto, first = start, start + n * bucket
    for part in sums:
        if 0 <= part.bucket < n and part.device in acc:
            acc[part.device].add(part.bucket, part)
            upto = max(upto, part.last_ms)
            first = min(first, part.first_ms)
    first = max(first, start)
    elapsed_s = [
        max(0, min(upto, start + (i + 1) * bucket) - max(first, start + i * bucket)) / 1000
        for i in range(n)
    ]
    devices: dict[str, Any] = {}
    coverage: dict[str, list[float | None]] = {}
    for m in meters:
        a = acc[m.id]
        power = [a.mean_kw(i) if m.kind == ELECTRICITY else None for i in range(n)]
        cov = [min(1.0, a.good_s[i] / elapsed_s[i]) if elapsed_s[i] else None for i in range(n)]
        coverage[m.id] = cov
        devices[m.id] = {
            "kind": m.kind,
            "root": m.root,
            "energy_kwh": [_r(a.energy[i], 4) if a.present_s[i] else None for i in range(n)],
            "power_kw": [_r(p, 3) for p in power],
            "coverage": [_r(c, 3) for c in cov],
        }
    return {
        "span": span,
        "from": start,
        "bucket_s": bucket // 1000,
        "n": n,
        "site": _site(meters, acc, devices, coverage, n),
        "devices": devices,
    }


def _site(
    meters: list[Meter],
    acc: dict[str, _Acc],
    devices: dict[str, Any],
    coverage: dict[str, list[float | None]],
    n: int,
) -> dict[str, list[float | None]]:
    roots = [m for m in meters if m.root and m.kind != PRODUCTION]
    energy: list[float | None] = []
    power: list[float | None] = []
    intensity: list[float | None] = []
    cover: list[float | None] = []
    for i in range(n):
        have = [m for m in roots if acc[m.id].present_s[i]]
        kwh = sum(acc[m.id].energy[i] for m in have) if have else None
        co2 = sum(acc[m.id].co2[i] for m in have)
        energy.append(_r(kwh, 4))
        intensity.append(_r(1000 * co2 / kwh, 1) if kwh else None)
        kws = [
            kw
            for m in have
            if m.kind == ELECTRICITY and (kw := devices[m.id]["power_kw"][i]) is not None
        ]
        power.append(_r(sum(kws), 3) if kws else None)
        covs = [c[i] for c in coverage.values()]
        known = [c for c in covs if c is not None]
        cover.append(_r(sum(known) / len(covs), 3) if known else None)
    return {
        "power_kw": power,
        "energy_kwh": energy,
        "intensity_g_per_kwh": intensity,
        "coverage": cover,
    }


def answer(
    path: Path | None, span: str, meters: Iterable[Meter], zone: str, now_ms: int
) -> dict[str, Any]:
    """One span's trend (BadSpan for an unknown span, HistoryError if the file cannot be read)."""
    start, bucket, n = edges(span, now_ms, zone)
    sums: list[EnergySum] = []
    if path is not None and path.exists():
        reader = HistoryReader.open(path)
        try:
            sums = reader.energy_sums(start, start + n * bucket, bucket)
        finally:
            reader.close()
    return build(sums, meters, start, bucket, n, span)


class TrendCache:
    """The last answer per span, reused for ``TTL_MS`` (see the module's docstring)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._kept: dict[str, tuple[int, dict[str, Any]]] = {}

    def get(self, span: str) -> dict[str, Any] | None:
        kept = self._kept.get(span)
        now = int(self._clock() * 1000)
        if kept is None or now - kept[0] > TTL_MS.get(span, 0):
            return None
        return kept[1]

    def put(self, span: str, doc: dict[str, Any]) -> None:
        self._kept[span] = (int(self._clock() * 1000), doc)


class Trends:
    """``/api/trend`` for one agent: its history file, the cache, one reading at a time.

    Two viewers asking at once wait for one reading of the file and share it; the
    reading runs in a worker thread (SQLite lets the event loop run meanwhile).
    """

    def __init__(self, history: Path | None, clock: Any = time.time) -> None:
        self.history = history
        self._cache = TrendCache(clock)
        self._lock = asyncio.Lock()

    async def answer(
        self, span: str, status: AgentStatus, now_ms: int
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, document) for ``span`` of the devices in ``status``."""
        if span not in SPANS:
            return 400, {"error": f"span: give one of {', '.join(SPANS)}"}
        async with self._lock:
            if (kept := self._cache.get(span)) is not None:
                return 200, kept
            meters = [Meter(d.id, d.kind, d.parent is None) for d in status.devices]
            zone = status.agent.timezone
            try:
                doc = await asyncio.to_thread(answer, self.history, span, meters, zone, now_ms)
            except HistoryError as exc:
                return 503, {"error": f"the history cannot be read now: {exc.reason}"}
            self._cache.put(span, doc)
            return 200, doc
