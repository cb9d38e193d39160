"""Reading the bridge's points back from the database: the ledger's verification at
the bridge, and the monthly report after it.

One question, two databases: the points of one measurement of one gateway with
``start < ts <= end`` (a record's ts is its interval's end), as
:class:`agent.points.Point`: measurement, tags, fields, ts, exactly as the
bridge wrote them. Backends:

* :mod:`agent.store.victoria`: VictoriaMetrics' ``/api/v1/export`` (JSON lines
  of raw samples; each field is a series ``{measurement}_{field}``);
* :mod:`agent.store.flux`: InfluxDB 2 (and Cloud) through influxdb-client's
  query API with Flux.
"""

from __future__ import annotations

from typing import Protocol

from agent.contract.points import Point


class StoreError(Exception):
    """The database could not be read (down, refused, an answer not understood)."""


class PointStore(Protocol):
    def points(
        self, measurement: str, site: str, gateway: str, start_ms: int, end_ms: int
    ) -> list[Point]:
        """The points of ``measurement`` of one gateway with ``start < ts <= end``."""
        ...

    def close(self) -> None: ...


def group_points(
    samples: list[tuple[str, dict[str, str], int, str, float | int]],
) -> list[Point]:
    """(measurement, tags, ts, field, value) samples -> one point per (tags, ts)."""
    grouped: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, float | int]] = {}
    for measurement, tags, ts, field, value in samples:
        key = (measurement, tuple(sorted(tags.items())), ts)
        grouped.setdefault(key, {})[field] = value
    return [
        Point(measurement, dict(tags), fields, ts)
        for (measurement, tags, ts), fields in sorted(grouped.items())
    ]
