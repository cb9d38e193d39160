"""Reading points back: VictoriaMetrics' export (parsed here; the real database in
tests/integration/test_ledger.py) and InfluxDB's Flux answer.

No InfluxDB runs on the test machine, so the Flux backend is tested this far and no
further: the query it builds, and a recorded annotated-CSV answer (written by hand
from InfluxDB's documented format: #datatype/#group/#default annotations, a table
per field type) served over loopback HTTP to the real influxdb-client, whose
parser turns it into rows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.contract import Carrier, MessageKind, TopicRef, energy_payload
from agent.contract.points import Point
from agent.ledger.canonical import digest, lines_of, lines_of_points
from agent.store import StoreError
from agent.store.flux import FluxStore, flux_query
from agent.store.victoria import export_url, parse_export

T = 1_749_945_660_000  # 2025-06-15 00:01:00 UTC
LABELS = {
    "site": "plant-a",
    "gateway": "gw-01",
    "device": "m1",
    "carrier": "electricity",
    "quality": "measured",
}


def series(name: str, values: list[float], stamps: list[int], **labels: str) -> str:
    return json.dumps(
        {"metric": {"__name__": name, **labels}, "values": values, "timestamps": stamps}
    )


def test_the_export_request_asks_for_start_exclusive_end_inclusive() -> None:
    url = export_url("http://vm:8428/", "energy", "plant-a", "gw-01", T - 60_000, T)
    assert url.startswith("http://vm:8428/api/v1/export?")
    assert "start=1749945600.001" in url and "end=1749945660.000" in url
    assert "match%5B%5D=%7B__name__%3D~%22energy_.%2B%22%2Csite%3D%22plant-a%22" in url
    with pytest.raises(StoreError):
        export_url("http://vm", "energy", 'x",gateway=~".*', "gw", 0, 1)


def test_an_export_becomes_the_points_the_bridge_wrote() -> None:
    labels = LABELS
    body = "\n".join(
        json.dumps({"metric": {"__name__": f"energy_{f}", **labels}, "values": v, "timestamps": ts})
        for f, v, ts in (
            ("interval_s", [60, 60], [T, T + 60_000]),
            ("energy_kwh", [0.1, 0.25], [T, T + 60_000]),
            ("co2_kg", [0.05703], [T]),
        )
    )
    body += "\n" + json.dumps(
        {"metric": {"__name__": "measurements_seq"}, "values": [1], "timestamps": [T]}
    )
    points = parse_export(body.encode(), "energy")
    assert points == [
        Point("energy", labels, {"interval_s": 60.0, "energy_kwh": 0.1, "co2_kg": 0.05703}, T),
        Point("energy", labels, {"interval_s": 60.0, "energy_kwh": 0.25}, T + 60_000),
    ]
    with pytest.raises(StoreError):
        parse_export(b'{"metric": 1}', "energy")


def test_a_record_read_back_hashes_as_it_was_sealed() -> None:
    """VictoriaMetrics gives interval_s back as 60.0: the canonical form writes 60 either
    way, so the database's copy hashes like the gateway's."""
    ref = TopicRef(MessageKind.ENERGY, "plant-a", "gw-01", "m1")
    payload = energy_payload(
        ts=T,
        interval_s=60,
        carrier=Carrier.ELECTRICITY,
        energy_kwh=0.1,
        co2_kg=0.05703,
        ef_kg_per_kwh=0.5703,
        quality="measured",
    )
    labels = LABELS
    body = "\n".join(
        json.dumps(
            {
                "metric": {"__name__": f"energy_{k}", **labels},
                "values": [float(v)],
                "timestamps": [T],
            }
        )
        for k, v in payload.items()
        if k not in ("ts", "carrier", "quality") and v is not None
    )
    back = parse_export(body.encode(), "energy")
    assert digest(lines_of_points(back)) == digest(lines_of(ref, payload))


# --- InfluxDB 2: Flux -----------------------------------------------------------------------

ANSWER = (
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,"
    "string,string,string,string,string,string\r\n"
    "#group,false,false,true,true,false,false,true,true,true,true,true,true,true\r\n"
    "#default,_result,,,,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_value,_field,_measurement,carrier,device,gateway,"
    "quality,site\r\n"
    ",,0,2025-06-15T00:00:00.001Z,2025-06-15T00:01:00.001Z,2025-06-15T00:01:00Z,0.1,"
    "energy_kwh,energy,electricity,m1,gw-01,measured,plant-a\r\n"
    ",,1,2025-06-15T00:00:00.001Z,2025-06-15T00:01:00.001Z,2025-06-15T00:01:00Z,0.05703,"
    "co2_kg,energy,electricity,m1,gw-01,measured,plant-a\r\n"
    "\r\n"
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,long,string,"
    "string,string,string,string,string,string\r\n"
    "#group,false,false,true,true,false,false,true,true,true,true,true,true,true\r\n"
    "#default,_result,,,,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_value,_field,_measurement,carrier,device,gateway,"
    "quality,site\r\n"
    ",,2,2025-06-15T00:00:00.001Z,2025-06-15T00:01:00.001Z,2025-06-15T00:01:00Z,60,"
    "interval_s,energy,electricity,m1,gw-01,measured,plant-a\r\n"
    "\r\n"
)


@pytest.fixture
def influx() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server answering /api/v2/query with the recorded answer."""
    asked: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            asked.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            body = ANSWER.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/csv; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_the_flux_query_asks_for_one_gateway_start_exclusive_end_inclusive() -> None:
    q = flux_query("energy", "energy", "plant-a", "gw-01", T - 60_000, T)
    assert 'from(bucket: "energy")' in q
    start, stop = (T - 60_000 + 1) * 1_000_000, (T + 1) * 1_000_000
    assert f"range(start: time(v: {start}), stop: time(v: {stop}))" in q
    assert 'r._measurement == "energy" and r.site == "plant-a" and r.gateway == "gw-01"' in q
    assert 'from(bucket: "a\\"b")' in flux_query('a"b', "energy", "s", "g", 0, 1)
    with pytest.raises(StoreError):
        flux_query("b", "energy", "plant-a", 'g" or true', 0, 1)


def test_a_flux_answer_becomes_the_points_the_bridge_wrote(
    influx: tuple[str, list[dict[str, Any]]],
) -> None:
    url, asked = influx
    store = FluxStore(url, org="energy", bucket="energy", token="t")
    try:
        points = store.points("energy", "plant-a", "gw-01", T - 60_000, T)
    finally:
        store.close()
    assert asked[0]["path"].startswith("/api/v2/query?org=energy")
    assert asked[0]["body"]["query"] == flux_query(
        "energy", "energy", "plant-a", "gw-01", T - 60_000, T
    )
    tags = {
        "carrier": "electricity",
        "device": "m1",
        "gateway": "gw-01",
        "quality": "measured",
        "site": "plant-a",
    }
    assert points == [
        Point("energy", tags, {"energy_kwh": 0.1, "co2_kg": 0.05703, "interval_s": 60}, T)
    ]
    assert isinstance(points[0].fields["interval_s"], int)  # InfluxDB keeps the integer


def test_a_database_that_does_not_answer_is_a_store_error() -> None:
    store = FluxStore("http://127.0.0.1:9", org="o", bucket="b", token="t", timeout_s=2)
    try:
        with pytest.raises(StoreError):
            store.points("energy", "plant-a", "gw-01", 0, 1)
    finally:
        store.close()
