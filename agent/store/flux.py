"""InfluxDB 2 (and Cloud): the points of a range through influxdb-client's Flux query API.

The query asks for one measurement of one gateway, every field, in
``start < ts <= end`` (Flux's ``range`` includes its start and excludes its
stop, so both move on by a millisecond); the answer is one row per field and
time, which :func:`points_of_rows` puts back together as the bridge wrote them.
Integer fields come back as integers, floats as floats.

Not tested here against a server (none runs on the test machine): the query's
text and the parsing of an answer are tested with recorded annotated-CSV
responses served to the real client (tests/unit/store/test_store.py). InfluxDB 3 does
not serve Flux; it answers SQL and InfluxQL (docs/ledger.md says what to use).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException

from agent.contract.points import Point
from agent.store import StoreError, group_points

#: Columns of a Flux row that are not the point's tags.
_NOT_TAGS = frozenset(
    {"result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def flux_query(
    bucket: str, measurement: str, site: str, gateway: str, start_ms: int, end_ms: int
) -> str:
    if not _NAME.fullmatch(measurement):
        raise StoreError(f"measurement {measurement!r} is not a name")
    for name, value in (("site", site), ("gateway", gateway)):
        if not _ID.fullmatch(value):
            raise StoreError(f"{name} {value!r} is not an id")
    quoted = bucket.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'from(bucket: "{quoted}")\n'
        f"  |> range(start: time(v: {(start_ms + 1) * 1_000_000}), "
        f"stop: time(v: {(end_ms + 1) * 1_000_000}))\n"
        f'  |> filter(fn: (r) => r._measurement == "{measurement}" and r.site == "{site}" '
        f'and r.gateway == "{gateway}")\n'
    )


def points_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Flux rows (one field each) -> points."""
    samples: list[tuple[str, dict[str, str], int, str, float | int]] = []
    for row in rows:
        try:
            t = row["_time"]
            ts = int(t.timestamp() * 1000) if hasattr(t, "timestamp") else int(t)
            value = row["_value"]
            measurement, field = str(row["_measurement"]), str(row["_field"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"a Flux row without its columns: {exc!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # not a number the bridge wrote
        tags = {k: str(v) for k, v in row.items() if k not in _NOT_TAGS and v is not None}
        samples.append((measurement, tags, ts, field, value))
    return group_points(samples)


class FluxStore:
    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str,
        timeout_s: float = 10.0,
        verify_tls: bool = True,
        ca: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(
            url=url,
            token=token,
            org=org,
            verify_ssl=verify_tls,
            ssl_ca_cert=ca,
            timeout=int(timeout_s * 1000),
        )
        self._api = self._client.query_api()

    def points(
        self, measurement: str, site: str, gateway: str, start_ms: int, end_ms: int
    ) -> list[Point]:
        query = flux_query(self.bucket, measurement, site, gateway, start_ms, end_ms)
        try:
            tables = self._api.query(query, org=self.org)
        except ApiException as exc:
            raise StoreError(
                f"InfluxDB refused the query: HTTP {exc.status}: {exc.reason}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreError(f"InfluxDB: {type(exc).__name__}: {exc}") from None
        return points_of_rows(rec.values for table in tables for rec in table.records)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
