"""The gateway's HTTP server: routes, limits, auth, SSE framing, /api/state and /metrics.

A real :class:`Agent` (not started: no buses, no broker) gets poll results
through its own ``on_result``, so the state document and the metrics are the
ones a running gateway serves; the server listens on a free loopback port and
is spoken to with raw sockets, so the bytes on the wire are what is checked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.cli.main import main as cli_main
from agent.cli.serving import live_page
from agent.config import parse_config
from agent.config.models import Http
from agent.http.limits import Limits
from agent.http.server import BasicAuth, HttpServer
from agent.runtime.agent import Agent
from agent.runtime.outbox import MemoryOutbox
from tests.support.agents import CONFIG, LIBRARY, MIN, T0, make_agent

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return make_agent(tmp_path)


@pytest.fixture
async def server(agent: Agent) -> AsyncIterator[HttpServer]:
    srv = live_page(agent, tick_s=0.1)
    async with srv:
        yield srv


async def request(
    port: int, raw: bytes | str, *, read_all: bool = True
) -> tuple[int, dict[str, str], bytes]:
    if isinstance(raw, str):
        raw = raw.encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body


def get(path: str, *extra: str, method: str = "GET") -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *extra]
    return "\r\n".join(lines) + "\r\n\r\n"


# --- routes ----------------------------------------------------------------------------


async def test_page_is_self_contained_and_small(server: HttpServer) -> None:
    status, headers, body = await request(server.port, get("/"))
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert int(headers["content-length"]) == len(body) < 100_000
    assert "default-src 'none'" in headers["content-security-policy"]
    html = body.decode()
    # nothing loaded from anywhere else: no external src/href, CSS imports or absolute fetches
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert not re.search(r"""(fetch|EventSource)\(\s*["'](https?:)?//""", html)
    for needle in ("prefers-color-scheme: dark", 'EventSource("events")', "RECONNECTING"):
        assert needle in html


async def test_head_has_headers_and_no_body(server: HttpServer) -> None:
    status, headers, body = await request(server.port, get("/", method="HEAD"))
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/state/x", "/../etc/passwd"])
async def test_unknown_paths_are_404(server: HttpServer, path: str) -> None:
    status, _, _ = await request(server.port, get(path))
    assert status == 404


async def test_other_methods_are_405(server: HttpServer) -> None:
    status, headers, _ = await request(server.port, get("/api/state", method="POST"))
    assert status == 405 and headers["allow"] == "GET, HEAD"


async def test_malformed_and_oversized_requests(server: HttpServer) -> None:
    assert (await request(server.port, "GARBAGE\r\n\r\n"))[0] == 400
    assert (await request(server.port, "GET / HTTP/2.0\r\n\r\n"))[0] == 505
    assert (await request(server.port, get("/", "Bad header line")))[0] == 400
    huge = get("/", *(f"X-Filler-{i}: {'a' * 200}" for i in range(60)))
    assert (await request(server.port, huge))[0] == 431
    many = get("/", *(f"X-{i}: 1" for i in range(100)))
    assert (await request(server.port, many))[0] == 431
    body = get("/api/state", "Content-Length: 5") + "hello"
    assert (await request(server.port, body))[0] == 413


async def test_a_silent_client_is_dropped(agent: Agent) -> None:
    async with live_page(agent, tick_s=0.1, limits=Limits(head_timeout_s=0.2)) as srv:
        status, _, _ = await request(srv.port, "GET / HTTP/1.1\r\n")  # never finishes
        assert status == 408


# --- /api/state --------------------------------------------------------------------------


async def test_state_document(server: HttpServer, agent: Agent) -> None:
    status, headers, body = await request(server.port, get("/api/state"))
    assert status == 200 and headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert set(doc) == {
        "schema",
        "ts",
        "agent",
        "health",
        "mqtt",
        "buffer",
        "storage",
        "ledger",
        "reports",
        "site",
        "devices",
        "alarms",
    }
    assert doc["alarms"] == []  # the config has no alarm rules
    assert doc["agent"]["site"] == "plant-t" and doc["agent"]["site_name"] == "Test plant"
    # never connected to a broker, a device failing: degraded, and it says why
    assert doc["health"]["state"] == "degraded"
    problems = " ".join(doc["health"]["problems"])
    assert "MQTT" in problems and "spare" in problems
    assert doc["mqtt"]["connected"] is False and doc["mqtt"]["broker"] == "127.0.0.1:1"
    buf = doc["buffer"]
    assert buf["depth"] == agent.outbox.stats().depth > 0
    assert buf["alarm"] is True  # messages waiting and no link
    site = doc["site"]
    # roots: main (120 kW) and spare (failing, so not counted); sub is inside main
    assert site["power_kw"] == pytest.approx(120.0)
    assert site["power_meters"] == 1 and site["power_complete"] is False
    it = site["intensity"]
    assert it["window"] == "15m"
    # 15 minutes of 120 kW = 30 kWh at 0.5703 kg/kWh (the default factor) and 90 parts
    assert it["energy_kwh"] == pytest.approx(30.0, rel=1e-6)
    assert it["intensity_g_per_kwh"] == pytest.approx(
        1000 * agent.site.factors.at(agent.site.devices[0].carrier, T0, T0 + MIN).value, rel=1e-6
    )
    assert it["output_units"] == pytest.approx(90.0)
    assert it["kwh_per_unit"] == pytest.approx(30.0 / 90.0, rel=1e-6)
    assert site["today"]["energy_kwh"] > 30.0 and site["today"]["tce"] > 0
    dm = {m["device"]: m for m in site["demand"]["meters"]}
    assert set(dm) == {"main", "spare"}  # root electricity meters only
    assert dm["main"]["now_kw"] == pytest.approx(120.0, rel=1e-6)
    assert dm["main"]["peak_kw"] == pytest.approx(120.0, rel=1e-6)
    assert dm["spare"]["now_kw"] is None and dm["spare"]["peak_kw"] is None
    assert site["demand"]["now_kw"] == pytest.approx(120.0, rel=1e-6)
    devs = {d["id"]: d for d in doc["devices"]}
    assert [d["id"] for d in doc["devices"]] == ["main", "sub", "spare", "parts"]
    assert devs["main"]["state"] == "ok" and devs["main"]["power_kw"] == 120.0
    assert devs["sub"]["parent"] == "main"
    assert devs["spare"]["state"] == "error" and devs["spare"]["reason"] == "timeout"
    assert devs["spare"]["age_s"] is None and devs["spare"]["failures"] == 1
    assert devs["parts"]["power_kw"] is None and devs["parts"]["main"]["unit"] == "units"
    assert "history" not in doc


async def test_state_with_history(agent: Agent) -> None:
    last = agent.devices["main"].last_ok_ms
    assert last is not None
    # a tick long enough that only our own refresh (at the data's time) counts
    async with live_page(agent, tick_s=3600) as srv:
        srv.view.refresh(last + 500)
        _, _, body = await request(srv.port, get("/api/state?history=1"))
    doc = json.loads(body)
    assert doc["history"]["window_s"] == 900
    hist = doc["history"]["power_kw"]
    # the view records the polls it sees, from its first tick on
    assert hist["main"][-1] == [last, 120.0]
    assert hist["spare"] == []


async def test_sparkline_history_is_thinned_and_15_minutes(agent: Agent) -> None:
    from agent.http.state import StateView

    view = StateView(agent.status)
    last = agent.devices["main"].last_ok_ms
    assert last is not None
    for k in range(2000):  # one poll a second for 2000 s
        agent.devices["main"].last_ok_ms = last + k * 1000
        view.refresh(last + k * 1000)
    hist = view.history()["main"]
    assert len(hist) == 180
    assert hist[-1][0] - hist[0][0] <= 15 * 60 * 1000


def test_sparklines_keep_15_minutes_of_a_1_s_meter_in_little_memory(agent: Agent) -> None:
    import gc
    import tracemalloc

    from agent.http import state

    view = state.StateView(agent.status)
    last = agent.devices["main"].last_ok_ms
    assert last is not None
    tracemalloc.start()
    try:
        for k in range(1200):  # 20 minutes of one poll a second
            agent.devices["main"].last_ok_ms = last + k * 1000
            view.refresh(last + k * 1000)
        gc.collect()
        # what the view holds (allocated in its module), not the agent's own objects
        held = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, state.__file__)])
        kept = sum(s.size for s in held.statistics("filename"))
    finally:
        tracemalloc.stop()
    points = view.history(max_points=10_000)["main"]
    assert len(points) == 901  # 15 minutes and the poll at the start of them
    assert points[0] == [last + 299_000, 120.0] and points[-1] == [last + 1_199_000, 120.0]
    # 16 bytes a point (ts, kW), with the arrays' slack; as tuples in a deque ~110 KB.
    assert kept < 25_000, f"{kept:,} bytes held for 900 points"


# --- auth --------------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pw = tmp_path / "http.pass"
    pw.write_text(PASSWORD + "\n")
    config_text = CONFIG.replace("STATE", str(tmp_path)).replace(
        'http: {listen: "127.0.0.1:0"}',
        f'http: {{listen: "127.0.0.1:0", username: plant, password_file: "{pw}"}}',
    )
    config = parse_config(config_text, "t.yaml", profiles=LIBRARY)
    agent = Agent(config, LIBRARY, outbox=MemoryOutbox(1_000_000))
    async with live_page(agent, tick_s=0.1) as srv:
        for path in ("/", "/api/state", "/api/history", "/metrics", "/events"):
            status, headers, _ = await request(srv.port, get(path))
            assert status == 401, path
            assert headers["www-authenticate"].startswith('Basic realm="energy-agent"')
        for bad in (_basic("plant", "wrong"), _basic("other", PASSWORD), "Authorization: Basic !!"):
            assert (await request(srv.port, get("/api/state", bad)))[0] == 401
        status, _, body = await request(srv.port, get("/api/state", _basic("plant", PASSWORD)))
        assert status == 200 and json.loads(body)["agent"]["site"] == "plant-t"
        status, _, body = await request(srv.port, get("/api/history", _basic("plant", PASSWORD)))
        assert status == 200 and json.loads(body)["records"] == []
    assert PASSWORD not in caplog.text
    assert base64.b64encode(f"plant:{PASSWORD}".encode()).decode() not in caplog.text


def test_basic_auth_check() -> None:
    auth = BasicAuth("u", "p:with:colons")
    ok = "Basic " + base64.b64encode(b"u:p:with:colons").decode()
    assert auth.check(ok) and auth.check("basic " + ok.split()[1])
    assert not auth.check(None) and not auth.check("Bearer x") and not auth.check("Basic")


def test_http_config_warns_off_loopback_without_password(tmp_path: Path) -> None:
    assert Http().warnings() == [] and Http().loopback
    assert Http(listen="[::1]:8080").loopback and Http(listen="localhost:80").loopback
    open_ = Http(listen="0.0.0.0:8080")
    assert not open_.loopback and "password_file" in open_.warnings()[0]
    assert Http(listen="0.0.0.0:8080", password_file=tmp_path / "p").warnings() == []
    with pytest.raises(ValueError, match="':'"):
        Http(username="a:b")


def test_check_prints_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.replace("STATE", str(tmp_path)).replace("127.0.0.1:0", "0.0.0.0:8080"))
    assert cli_main(["check", "-c", str(cfg)]) == 0
    assert "warning: http.listen: '0.0.0.0:8080' is reachable" in capsys.readouterr().err


# --- SSE ---------------------------------------------------------------------------------


async def test_events_stream_frames(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(get("/events", "Accept: text/event-stream").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Type: text/event-stream" in head
        assert b"Content-Length" not in head
        assert await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) == b"retry: 2000\n\n"
        stamps = []
        for _ in range(3):  # the current state at once, then one per tick
            frame = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
            lines = frame.decode().split("\n")
            assert lines[0] == "event: state" and lines[1].startswith("data: ")
            assert lines[2:] == ["", ""]  # one data line: JSON has no raw newlines
            doc: dict[str, Any] = json.loads(lines[1][len("data: ") :])
            stamps.append(doc["ts"])
            assert doc["agent"]["gateway"] == "gw-t"
        assert stamps[2] > stamps[1]
    finally:
        writer.close()


async def test_close_ends_open_streams(agent: Agent) -> None:
    srv = live_page(agent, tick_s=0.1)
    await srv.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(get("/events").encode())
    await reader.readuntil(b"event: state")
    await asyncio.wait_for(srv.close(), 5)
    rest = await asyncio.wait_for(reader.read(), 5)  # EOF, not a hang
    assert isinstance(rest, bytes)
    writer.close()


async def test_serve_survives_a_busy_port(agent: Agent, caplog: pytest.LogCaptureFixture) -> None:
    async with live_page(agent) as first:
        settings = Http(listen=f"127.0.0.1:{first.port}")
        second = HttpServer(settings, first.view, first.metrics)
        stop = asyncio.Event()
        await asyncio.wait_for(second.serve(stop), 5)  # returns: logged, agent goes on
    assert "cannot listen" in caplog.text


# --- /metrics ----------------------------------------------------------------------------


async def test_metrics_parse_and_carry_the_series(server: HttpServer, agent: Agent) -> None:
    status, headers, body = await request(server.port, get("/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}

    polls = families["energy_agent_poll_seconds"]
    assert polls.type == "histogram"
    count = {s.labels["bus"]: s.value for s in polls.samples if s.name.endswith("_count")}
    assert count == {"bus-1": 3 * (20 * 6 + 1) + 1}
    errors = families["energy_agent_poll_errors"]
    assert errors.type == "counter"
    assert [(s.labels, s.value) for s in errors.samples if s.name.endswith("_total")] == [
        ({"device": "spare", "reason": "timeout"}, 1.0)
    ]
    depth = families["energy_agent_buffer_depth"].samples[0].value
    assert depth == agent.outbox.stats().depth > 0
    assert families["energy_agent_buffer_oldest_age_seconds"].samples[0].value > 0
    assert families["energy_agent_messages_published"].type == "counter"
    core = families["energy_agent_core_scan_seconds"]
    assert [s.value for s in core.samples if s.name.endswith("_count")] == [2 * 121 + 121]
    assert families["process_resident_memory_bytes"].samples[0].value > 1_000_000
    up = {s.labels["device"]: s.value for s in families["energy_agent_device_up"].samples}
    assert up == {"main": 1.0, "sub": 1.0, "spare": 0.0, "parts": 1.0}
    assert families["energy_agent_mqtt_connected"].samples[0].value == 0.0
    assert families["energy_agent_uptime_seconds"].samples[0].value >= 0


async def test_two_agents_do_not_share_metrics(tmp_path: Path) -> None:
    a = make_agent(tmp_path / "a", minutes=1)
    b = make_agent(tmp_path / "b", minutes=2)
    assert a.metrics.registry is not b.metrics.registry
    ta = a.metrics.exposition().decode()
    tb = b.metrics.exposition().decode()
    assert 'energy_agent_poll_seconds_count{bus="bus-1"} 22.0' in ta
    assert 'energy_agent_poll_seconds_count{bus="bus-1"} 40.0' in tb


# --- status --------------------------------------------------------------------------------


async def test_status_prints_the_same_picture(
    server: HttpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    code = await asyncio.to_thread(cli_main, ["status", "--url", url])
    out = capsys.readouterr().out
    assert code == 1  # degraded: no broker, a failing meter
    doc = server.view.current()
    assert "Test plant" in out and "ATTENTION" in out and "MQTT DOWN" in out
    assert f"{doc['site']['intensity']['intensity_g_per_kwh']:,.0f}" in out
    for d in doc["devices"]:
        assert d["id"] in out
    assert "ERROR timeout" in out
    code = await asyncio.to_thread(cli_main, ["status", "--url", url, "--json"])
    assert json.loads(capsys.readouterr().out)["agent"]["gateway"] == "gw-t"


def test_status_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["status", "--url", "http://127.0.0.1:1/", "--timeout", "1"]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert cli_main(["status", "--url", "ftp://x"]) == 2


# --- /api/history ------------------------------------------------------------------------


async def test_history_pages_filters_and_cursor(server: HttpServer, agent: Agent) -> None:
    """The agent stored 20 minutes of records in its history: energy of main, sub and
    parts, and intensity per minute. Pages follow each other without a gap or a repeat."""
    span = f"from={T0}&to={T0 + 30 * MIN}"
    status, headers, body = await request(server.port, get(f"/api/history?{span}&limit=1000"))
    assert status == 200 and headers["content-type"].startswith("application/json")
    every = json.loads(body)
    assert every["next"] is None
    kinds = {(r["kind"], r["device"]) for r in every["records"]}
    assert kinds == {
        ("energy", "main"),
        ("energy", "sub"),
        ("energy", "parts"),
        ("intensity", None),
    }
    energy_main = [r for r in every["records"] if r["device"] == "main"]
    assert [r["ts"] for r in energy_main] == [T0 + k * MIN for k in range(1, 21)]
    assert energy_main[-1]["payload"]["energy_kwh"] == pytest.approx(2.0)  # 120 kW, 1 min
    assert energy_main[-1]["topic"] == "energy/v1/plant-t/gw-t/main/energy"

    seen: list[tuple[int, str | None, str]] = []
    cursor = ""
    while True:
        q = f"/api/history?{span}&device=main&kind=energy&limit=7{cursor}"
        status, _, body = await request(server.port, get(q))
        assert status == 200
        page = json.loads(body)
        seen += [(r["ts"], r["device"], r["kind"]) for r in page["records"]]
        if page["next"] is None:
            break
        cursor = f"&cursor={page['next']}"
    assert seen == [(r["ts"], "main", "energy") for r in energy_main]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("from=yesterday", "from: 'yesterday' is neither Unix ms nor ISO 8601"),
        (f"from={T0}&to={T0}", "to must be after from"),
        ("limit=0", "limit: give 1 to 5000"),
        ("limit=99999", "limit: give 1 to 5000"),
        ("cursor=abc", "cursor 'abc' is not one this server gave"),
    ],
)
async def test_history_refuses_a_wrong_query_with_the_reason(
    server: HttpServer, query: str, says: str
) -> None:
    status, _, body = await request(server.port, get(f"/api/history?{query}"))
    assert status == 400
    assert says in json.loads(body)["error"]


async def test_state_says_the_ledger_is_off_without_a_key(server: HttpServer, agent: Agent) -> None:
    """No `keys init` was run: the history runs, the ledger is off and says why."""
    agent.ledger.start(T0)
    server.view.refresh()
    _, _, body = await request(server.port, get("/api/state"))
    ledger = json.loads(body)["ledger"]
    assert ledger["on"] is False
    assert "keys init" in ledger["reason"]
    assert ledger["history"]["ok"] is True and ledger["history"]["pending"] == 0
