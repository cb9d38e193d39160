"""Who may hold a connection to the page: the gate's rules, then a real server on loopback.

The server tests speak raw sockets from 127.0.0.x source addresses (every
127/8 address is local on Linux), so per-address limits are exercised by
"hosts" that really differ.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.config.models import Http
from agent.http.limits import HEAD_TIMEOUT_S, Gate, Limits, Slot, address_key
from agent.http.server import BasicAuth, HttpServer
from agent.http.state import StateView
from agent.runtime.agent import Agent
from tests.support.agents import make_agent

PASSWORD = "s3cret-Pa55"
AUTH = "Authorization: Basic " + base64.b64encode(f"energy:{PASSWORD}".encode()).decode()


# --- the gate ------------------------------------------------------------------------------


def test_clients_are_counted_per_ipv4_address_and_ipv6_64() -> None:
    assert address_key(("10.1.2.3", 5000)) == "10.1.2.3"
    assert address_key(("::ffff:10.1.2.3", 5000, 0, 0)) == "10.1.2.3"
    a = address_key(("2001:db8:1:2:aaaa::1", 5000, 0, 0))
    b = address_key(("2001:db8:1:2:ffff:1:2:3", 6000, 0, 0))
    assert a == b == "2001:db8:1:2::/64"
    assert address_key(("2001:db8:1:3::1", 1, 0, 0)) != a
    assert address_key(("fe80::1%eth0", 1, 0, 2)) == "fe80::/64"
    assert address_key(None) == "None"  # not an IP socket: one bucket, no crash


class Drops:
    """Records which slots the gate dropped."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def arrive(self, gate: Gate, address: str, name: str) -> Slot:
        return gate.arrive(address, lambda: self.dropped.append(name))


def test_one_address_only_churns_its_own_pending_connections() -> None:
    gate = Gate(Limits(pending_per_address=3, pending=10), per_address_admitted=False)
    d = Drops()
    viewer = d.arrive(gate, "10.0.0.1", "viewer")
    for i in range(20):
        d.arrive(gate, "10.0.0.66", f"flood-{i}")
    assert d.dropped == [f"flood-{i}" for i in range(17)]  # oldest first
    assert gate.pending == 4
    assert gate.admit(viewer) is None


def test_a_full_pending_pool_drops_from_the_address_holding_the_most() -> None:
    gate = Gate(Limits(pending_per_address=4, pending=8), per_address_admitted=False)
    d = Drops()
    viewer = d.arrive(gate, "10.0.0.1", "viewer")
    for i in range(60):  # six flooding addresses, ten connections each
        d.arrive(gate, f"10.0.1.{i % 6}", f"flood-{i}")
    assert "viewer" not in d.dropped
    assert gate.pending == 8
    assert gate.admit(viewer) is None
    # only when as many addresses as slots hold one connection each does the oldest go
    late = d.arrive(gate, "10.0.0.2", "late")
    for i in range(7):
        d.arrive(gate, f"10.0.2.{i}", f"single-{i}")
    assert "late" not in d.dropped
    d.arrive(gate, "10.0.2.99", "one-too-many")
    assert d.dropped[-1] == "late" and late.dropped


def test_a_dropped_connection_is_not_admitted_and_leaves_no_count() -> None:
    # asyncio.wait_for (3.11) can return the head that arrived with the cancellation:
    # the dropped connection runs on and asks to be admitted. It must not be, or its
    # slot leaks (seen in the flood test: 8 admitted per address, for ever).
    gate = Gate(Limits(pending_per_address=1), per_address_admitted=True)
    d = Drops()
    old = d.arrive(gate, "10.0.0.9", "old")
    new = d.arrive(gate, "10.0.0.9", "new")
    assert d.dropped == ["old"]
    assert gate.admit(old) == "dropped for newer connections"
    assert gate.admit(new) is None and gate.open_stream(new) is None
    for slot in (old, new, new):  # leave is idempotent
        gate.leave(slot)
    assert (gate.pending, gate.admitted, gate.streams) == (0, 0, 0)


def test_admitted_limits_per_address_only_without_a_password() -> None:
    limits = Limits(clients=4, streams=3, clients_per_address=2, streams_per_address=1)
    d = Drops()
    open_ = Gate(limits, per_address_admitted=True)
    a = [d.arrive(open_, "10.0.0.1", f"a{i}") for i in range(3)]
    assert open_.admit(a[0]) is None and open_.admit(a[1]) is None
    assert open_.admit(a[2]) == "too many connections from this address"
    assert open_.open_stream(a[0]) is None
    assert open_.open_stream(a[1]) == "too many event streams from this address"
    b = [d.arrive(open_, "10.0.0.2", f"b{i}") for i in range(3)]
    assert open_.admit(b[0]) is None and open_.open_stream(b[0]) is None
    assert open_.admit(b[1]) is None
    c = d.arrive(open_, "10.0.0.3", "c")
    assert open_.admit(c) == "too many connections"  # 4 in all
    open_.leave(a[0])
    assert open_.admit(c) is None  # a slot came back

    with_password = Gate(limits, per_address_admitted=False)
    w = [d.arrive(with_password, "10.0.0.1", f"w{i}") for i in range(5)]
    assert [with_password.admit(s) for s in w[:4]] == [None] * 4  # no per-address limit
    assert with_password.admit(w[4]) == "too many connections"
    assert [with_password.open_stream(s) for s in w[:4]] == [None] * 3 + ["too many event streams"]
    assert d.dropped == []


# --- a real server -------------------------------------------------------------------------


async def connect(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def get(port: int, path: str, *headers: str, source: str = "127.0.0.1") -> int:
    reader, writer = await connect(port, source)
    try:
        lines = [f"GET {path} HTTP/1.1", "Host: t", *headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return int(head.split(b" ")[1])
    finally:
        writer.close()


async def serve(agent: Agent, limits: Limits, password: bool) -> HttpServer:
    auth = BasicAuth("energy", PASSWORD) if password else None
    srv = HttpServer(
        Http(listen="127.0.0.1:0"),
        StateView(agent.status),
        agent.metrics,
        auth=auth,
        tick_s=0.1,
        limits=limits,
    )
    await srv.start()
    return srv


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return make_agent(tmp_path, minutes=1)


@pytest.fixture
async def guarded(agent: Agent) -> AsyncIterator[HttpServer]:
    srv = await serve(agent, Limits(pending_per_address=2, pending=4, clients=2), password=True)
    try:
        yield srv
    finally:
        await srv.close()


async def test_idle_sockets_from_other_hosts_do_not_keep_out_a_viewer(
    guarded: HttpServer,
) -> None:
    idle = [await connect(guarded.port, f"127.0.0.{2 + i % 3}") for i in range(30)]
    try:
        # the server keeps 4 of them (2 per address at most) and closes the rest
        async def closed(reader: asyncio.StreamReader) -> bool:
            try:
                return await asyncio.wait_for(reader.read(), 5) == b""
            except TimeoutError:
                return False

        first = await asyncio.gather(*(closed(r) for r, _ in idle[:26]))
        assert all(first)
        assert guarded.gate.pending <= 4
        for _ in range(20):
            assert await get(guarded.port, "/api/state", AUTH) == 200
        assert await get(guarded.port, "/api/state") == 401
    finally:
        for _, w in idle:
            w.close()


async def test_unauthenticated_requests_never_take_an_admitted_slot(
    guarded: HttpServer,
) -> None:
    # two viewers hold event streams: every admitted slot (clients=2) is taken
    streams = [await connect(guarded.port) for _ in range(2)]
    for reader, writer in streams:
        writer.write(f"GET /events HTTP/1.1\r\n{AUTH}\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"event: state"), 5)
    try:
        assert guarded.gate.admitted == 2
        assert await get(guarded.port, "/api/state", source="127.0.0.2") == 401
        assert await get(guarded.port, "/api/state", AUTH) == 503
    finally:
        for _, w in streams:
            w.close()
    await eventually(lambda: guarded.gate.admitted == 0)
    assert await get(guarded.port, "/api/state", AUTH) == 200


async def test_a_slowloris_is_cut_off_after_the_head_timeout(agent: Agent) -> None:
    srv = await serve(agent, Limits(), password=True)
    try:
        reader, writer = await connect(srv.port, "127.0.0.2")
        writer.write(b"GET /api/state HTTP/1.1\r\n")
        started = time.monotonic()
        answer = b""
        while not reader.at_eof() and time.monotonic() - started < 15:
            writer.write(b"X")  # a byte every 0.2 s: never idle, never done
            with contextlib.suppress(TimeoutError, ConnectionError):
                answer += await asyncio.wait_for(reader.read(1024), 0.2)
        held = time.monotonic() - started
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert HEAD_TIMEOUT_S - 0.5 < held < HEAD_TIMEOUT_S + 1.5
    finally:
        await srv.close()


async def test_without_a_password_streams_are_limited_per_address(agent: Agent) -> None:
    srv = await serve(agent, Limits(streams_per_address=2), password=False)
    held = []
    try:
        for _ in range(2):
            reader, writer = await connect(srv.port, "127.0.0.2")
            writer.write(b"GET /events HTTP/1.1\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"event: state"), 5)
            held.append(writer)
        assert await get(srv.port, "/events", source="127.0.0.2") == 503
        assert await get(srv.port, "/events", source="127.0.0.3") == 200
        assert await get(srv.port, "/api/state", source="127.0.0.2") == 200
        await eventually(lambda: srv.gate.streams == 2)  # closed streams end at the next frame
        reader, writer = await connect(srv.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        text = (await asyncio.wait_for(reader.read(), 5)).decode()
        writer.close()
        assert 'energy_agent_http_connections{pool="streams"} 2.0' in text
        assert 'energy_agent_http_connections{pool="admitted"} 3.0' in text  # and /metrics
        assert "energy_agent_http_dropped_total 0.0" in text
    finally:
        for w in held:
            w.close()
        await srv.close()
