"""VictoriaMetrics: raw samples through ``/api/v1/export``.

VictoriaMetrics stores a field ``f`` of measurement ``m`` as the series ``m_f``
with the point's tags as labels (docs/influxdb.md). The export returns every raw
sample in the time range, one JSON line per series: ``{"metric": {...},
"values": [...], "timestamps": [...]}``. With ``-dedup.minScrapeInterval`` set
(as the bridge requires), samples of one series and millisecond are merged to
one at query time, the largest value kept.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from agent.contract.points import Point
from agent.store import StoreError, group_points

#: Labels VictoriaMetrics may add on ingestion that are not the bridge's tags.
_NOT_TAGS = frozenset({"__name__", "db"})


def export_url(
    base: str, measurement: str, site: str, gateway: str, start_ms: int, end_ms: int
) -> str:
    """The export request for ``start < ts <= end`` (VictoriaMetrics' bounds are both
    inclusive, in seconds with a fraction)."""
    for name, value in (("site", site), ("gateway", gateway)):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value):
            raise StoreError(f"{name} {value!r} is not an id")
    selector = f'{{__name__=~"{measurement}_.+",site="{site}",gateway="{gateway}"}}'
    query = urllib.parse.urlencode(
        {
            "match[]": selector,
            "start": f"{(start_ms + 1) / 1000:.3f}",
            "end": f"{end_ms / 1000:.3f}",
        }
    )
    return f"{base.rstrip('/')}/api/v1/export?{query}"


def parse_export(body: bytes, measurement: str) -> list[Point]:
    """The points in an export answer (StoreError if it is not one)."""
    prefix = measurement + "_"
    samples: list[tuple[str, dict[str, str], int, str, float | int]] = []
    for n, raw in enumerate(body.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            series: dict[str, Any] = json.loads(raw)
            labels = {str(k): str(v) for k, v in series["metric"].items()}
            stamps, values = series["timestamps"], series["values"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"export line {n} is not a series: {exc!r}") from None
        name = labels.get("__name__", "")
        if not name.startswith(prefix):
            continue
        field = name[len(prefix) :]
        tags = {k: v for k, v in labels.items() if k not in _NOT_TAGS}
        for ts, value in zip(stamps, values, strict=False):
            samples.append((measurement, tags, int(ts), field, float(value)))
    return group_points(samples)


class VictoriaMetricsStore:
    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def points(
        self, measurement: str, site: str, gateway: str, start_ms: int, end_ms: int
    ) -> list[Point]:
        url = export_url(self.url, measurement, site, gateway, start_ms, end_ms)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as answer:
                body = answer.read()
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"VictoriaMetrics {self.url}: {exc}") from None
        return parse_export(body, measurement)

    def close(self) -> None:
        return None
