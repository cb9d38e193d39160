"""The shipped broker config (deploy/mosquitto/) against a real mosquitto.

The broker runs deploy/mosquitto/mosquitto.conf and deploy/mosquitto/acl as
shipped: only the listener's port and address, the file locations, the pid file
and the log destination are rewritten (see :func:`shipped_config`), and each
rewrite fails the test if the line it replaces is gone. Every certificate is made
by ``energy-agent certs``. What a fleet operator relies on is checked: a gateway
reaches the bridge through its own prefix only, cannot write for another
gateway (not even through its last will), cannot read other gateways, and
nothing without a certificate from the fleet's CA gets an MQTT session at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.cli import Cli, free_port
from tests.support.mqtt import (
    LOOPBACK,
    AgentProcess,
    agent_config,
    have_mosquitto,
    make_password_file,
    wait_until,
)
from tests.support.shipped_broker import (
    FACTOR_TOPIC,
    NOT_AUTHORIZED,
    SHARED,
    PasswordBroker,
    Peer,
    Pki,
    ShippedBroker,
    broker_files,
)
from tests.support.simulators import Simulators

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]


def tls_connect(port: int, ca: Path, cert: tuple[Path, Path] | None) -> bytes:
    """TLS, then an MQTT 3.1.1 CONNECT: the CONNACK's bytes, or the TLS/socket error raised."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        # CONNECT: protocol "MQTT" level 4, clean session, keepalive 30, client id "probe".
        s.sendall(bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 5]) + b"probe")
        return s.recv(4)


def refusal(port: int, ca: Path, cert: tuple[Path, Path] | None) -> str:
    """Why no MQTT session came about: the TLS or socket error, or "closed" for a hang-up."""
    try:
        reply = tls_connect(port, ca, cert)
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    assert not reply, f"the broker answered the CONNECT: {reply!r}"
    return "closed"


# --- the tests ------------------------------------------------------------------------------------


async def test_a_gateway_reaches_the_bridge_through_its_own_prefix(
    peers: dict[str, Peer],
) -> None:
    bridge, gw = peers["bridge"], peers["plant-a.gw-01"]
    await bridge.subscribe(SHARED)
    topic = "energy/v1/plant-a/gw-01/m1/measurements"
    assert await gw.publish(topic, b'{"ts": 1}') == 0
    await wait_until(lambda: bridge.received() == [(topic, b'{"ts": 1}')], 10, "the message")
    # The bridge may write its rejects to the dead-letter topic.
    # (0x10: accepted, "no matching subscribers": nobody reads the dead letters here.)
    assert await bridge.publish("energy/dead-letter", b"{}") == 0x10


async def test_the_bridges_liveness_probe_is_answered_under_the_acl(
    peers: dict[str, Peer],
) -> None:
    """The bridge's watchdog probe (agent/bridge/consumer.py) is an UNSUBSCRIBE from a
    filter it never holds: the shipped broker must answer it and keep the session."""
    from agent.bridge.consumer import PROBE_FILTER

    bridge = peers["bridge"]
    answers: list[list[int]] = []
    bridge.client.on_unsubscribe = lambda _c, _u, _mid, reasons, _p: answers.append(
        [r.value for r in reasons]
    )
    for _ in range(3):
        bridge.client.unsubscribe(PROBE_FILTER)
    await wait_until(lambda: len(answers) == 3, 10, "three UNSUBACKs")
    assert answers == [[0x11]] * 3  # "no subscription existed": answered, nothing changed
    assert bridge.disconnects == 0


async def test_a_gateway_cannot_write_for_another_gateway(
    peers: dict[str, Peer], broker: ShippedBroker, pki: Pki
) -> None:
    bridge, gw = peers["bridge"], peers["plant-a.gw-01"]
    await bridge.subscribe(SHARED, "energy/#")
    for topic in (
        "energy/v1/plant-a/gw-02/m1/measurements",  # a neighbour at the same site
        "energy/v1/plant-b/gw-01/m1/measurements",  # the same gateway id at another site
        "energy/v1/plant-a/gw-01x/status",  # a prefix of its own id is not its own
        "energy/dead-letter",
        FACTOR_TOPIC,
    ):
        assert await gw.publish(topic, b"forged") == NOT_AUTHORIZED, topic
        assert await gw.publish(topic, b"forged-qos0", qos=0) is None
    # A last will is the broker publishing for the client: the same rule holds.
    liar = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="liar", protocol=paho.MQTTv5
    )
    cert = pki.cert("plant-a.gw-01")
    liar.tls_set(ca_certs=str(pki.ca), certfile=str(cert[0]), keyfile=str(cert[1]))
    liar.will_set("energy/v1/plant-a/gw-02/status", b"forged-will", qos=1, retain=True)
    liar.connect(LOOPBACK, broker.port, keepalive=10)
    deadline = time.monotonic() + 10
    while not liar.is_connected() and time.monotonic() < deadline:
        liar.loop(timeout=0.1)  # no network thread: the socket is closed by hand below
    sock = liar.socket()
    assert sock is not None and liar.is_connected()
    sock.shutdown(socket.SHUT_RDWR)  # gone without DISCONNECT: the will is due
    sock.close()
    await wait_until(lambda: "Client liar " in broker.logs(), 10, "the broker to notice")

    # Its own prefix still works, and the session survived the refusals (with
    # max_queued_messages 0, mosquitto 2.0.11 would have disconnected it).
    own = "energy/v1/plant-a/gw-01/status"
    assert await gw.publish(own, b"mine") == 0
    await wait_until(lambda: (own, b"mine") in bridge.received(), 10, "the gateway's own message")
    assert gw.disconnects == 0
    # Everything above was published before `mine`; the broker delivers in order.
    assert [p for _, p in bridge.received()] == [b"mine"] * 2  # the shared and the plain copy


async def test_a_gateway_reads_live_factors_but_not_other_gateways(
    peers: dict[str, Peer],
) -> None:
    gw1, gw2, factors = peers["plant-a.gw-01"], peers["plant-a.gw-02"], peers["factors"]
    # mosquitto grants every subscription and applies the read rules to each
    # message it would deliver: what counts is what arrives.
    await gw2.subscribe("energy/v1/#", "$share/x/energy/v1/#", FACTOR_TOPIC)
    code = await gw1.publish("energy/v1/plant-a/gw-01/m1/energy", b"private")
    assert code is not None and code < 0x80  # accepted (with or without a reader)
    assert await factors.publish(FACTOR_TOPIC, b'{"kg_per_kwh": 0.6}') == 0
    # The factor was published after gw-01's message had been accepted, so had
    # gw-02 been allowed to read it, it would have arrived first.
    await wait_until(lambda: bool(gw2.received()), 10, "the live factor")
    assert gw2.received() == [(FACTOR_TOPIC, b'{"kg_per_kwh": 0.6}')]
    # Only `factors` writes factors.
    assert await gw2.publish(FACTOR_TOPIC, b"0") == NOT_AUTHORIZED


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(
    broker: ShippedBroker, pki: Pki
) -> None:
    # Same name, plant-a/gw-01, but issued by a CA the broker does not trust.
    # The client sees an "unknown ca" alert or, when the broker hangs up first, an EOF;
    # the broker says why.
    refusal(broker.port, pki.ca, pki.cert("plant-a.gw-01", rogue=True))
    await wait_until(lambda: "certificate verify failed" in broker.logs(), 10, "the reason")
    assert "plant-a/gw-01" not in broker.logs()
    # The genuine certificate gets a CONNACK "accepted" (0x20 0x02, flags, rc 0).
    assert tls_connect(broker.port, pki.ca, pki.cert("plant-a.gw-01")) == b"\x20\x02\x00\x00"


async def test_no_certificate_no_session(broker: ShippedBroker, pki: Pki) -> None:
    refusal(broker.port, pki.ca, None)
    await wait_until(
        lambda: "peer did not return a certificate" in broker.logs(), 10, "the broker's reason"
    )
    # Plain MQTT on the TLS port: no CONNACK either.
    with socket.create_connection((LOOPBACK, broker.port), timeout=5) as s:
        s.sendall(bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 5]) + b"probe")
        try:
            reply = s.recv(4)
        except ConnectionError:
            reply = b""
    assert not reply.startswith(b"\x20"), reply
    assert "New client connected" not in broker.logs()


async def test_an_offline_bridge_gets_every_message_queued_for_it(
    broker: ShippedBroker, pki: Pki, peers: dict[str, Peer]
) -> None:
    """More than mosquitto's default queue (1000) plus its default in-flight window (20),
    and more than the shipped in-flight window (1000): none may be dropped."""
    gw = peers["plant-a.gw-01"]
    bridge = Peer(broker.port, pki.ca, pki.cert("bridge"), "test-offline-bridge")
    await bridge.start(session_expiry_s=3600)
    await bridge.subscribe(SHARED)
    bridge.stop()
    n = 2500
    infos = [gw.client.publish(f"energy/v1/plant-a/gw-01/m1/q{i}", b"x", qos=1) for i in range(n)]
    await wait_until(lambda: all(i.is_published() for i in infos), 60, "every PUBACK")
    assert all(gw.acks[i.mid] == 0 for i in infos)
    await bridge.start(session_expiry_s=3600)
    try:
        await wait_until(lambda: len(bridge.received()) >= n, 60, f"{n} queued messages")
        topics = {t for t, _ in bridge.received()}
        assert topics == {f"energy/v1/plant-a/gw-01/m1/q{i}" for i in range(n)}
    finally:
        bridge.stop()


StartAgent = Callable[[str], Awaitable[AgentProcess]]


@pytest.fixture
async def start_agent(
    broker: ShippedBroker, pki: Pki, simulators: Simulators, cli: Cli, tmp_path: Path
) -> AsyncIterator[StartAgent]:
    """Starts ``energy-agent run`` as gateway ``{site}/gw-01`` with plant-a/gw-01's certificate."""
    started: list[AgentProcess] = []

    async def start(site: str) -> AgentProcess:
        sim = await simulators.start(simulators.tcp_endpoint(), {1: "eastron-sdm630"}, frozen=False)
        cert, key = pki.cert("plant-a.gw-01")
        config = agent_config(
            tmp_path,
            site=site,
            gateway="gw-01",
            buses=[{"id": "line-a", "tcp": {"host": sim.endpoint.host, "port": sim.endpoint.port}}],
            devices=[{"id": "m1", "bus": "line-a", "unit": 1, "profile": "eastron-sdm630"}],
            mqtt={
                "host": LOOPBACK,  # an address in the broker's certificate
                "port": broker.port,
                "tls": {"ca": str(pki.ca), "cert": str(cert), "key": str(key)},
            },
        )
        agent = AgentProcess(cli.command, config, tmp_path / "agent.log").start()
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.cleanup()
            print(agent.output()[-4000:])


async def test_the_agent_connects_with_its_client_certificate(
    broker: ShippedBroker, peers: dict[str, Peer], start_agent: StartAgent
) -> None:
    bridge = peers["bridge"]
    await bridge.subscribe(SHARED)
    agent = await start_agent("plant-a")
    base = "energy/v1/plant-a/gw-01"
    await wait_until(
        lambda: (
            any(t == f"{base}/status" and b'"online"' in p for t, p in bridge.received())
            and any(t == f"{base}/m1/measurements" for t, _ in bridge.received())
        ),
        90,
        "the agent's status and measurements at the bridge",
    )
    assert all(t.startswith(f"{base}/") for t, _ in bridge.received())
    assert "refused" not in agent.output(), agent.output()
    assert await agent.terminate() == 0, agent.output()
    # Its identity on the broker is the certificate's name, not anything it chose.
    assert "u'plant-a/gw-01'" in broker.logs()


async def test_an_agent_whose_certificate_names_another_site_is_told_so(
    peers: dict[str, Peer], start_agent: StartAgent
) -> None:
    """docs/deploy.md: a certificate not matching the config's ids connects, but every
    publish is refused, and the agent's log says so (once, not per message). The refused
    messages are not lost: they stay in the outbox until the ACL or the config is fixed."""
    bridge = peers["bridge"]
    await bridge.subscribe(SHARED)
    agent = await start_agent("plant-b")
    await wait_until(lambda: "broker refuses messages" in agent.output(), 90, "the refusal")
    assert "Not authori" in agent.output(), agent.output()
    await asyncio.sleep(3)  # a few polls more, each refused
    assert agent.running
    assert await agent.terminate() == 0, agent.output()
    assert agent.output().count("broker refuses messages") == 1, agent.output()
    assert bridge.received() == []  # not even its online/offline status
    outbox = agent.config.parent / "state" / "outbox.db"
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        kept = db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 0").fetchone()[0]
    assert kept >= 3, "refused measurements were dropped from the outbox"


async def test_a_lost_gateway_is_locked_out_by_an_acl_block_and_a_reload(
    broker: ShippedBroker, peers: dict[str, Peer]
) -> None:
    """docs/deploy.md's pilot lock-out (no CRL): a deny block for the user, then SIGHUP."""
    gw1, gw2, bridge = peers["plant-a.gw-01"], peers["plant-a.gw-02"], peers["bridge"]
    await bridge.subscribe(SHARED)
    assert await gw1.publish("energy/v1/plant-a/gw-01/status", b"before") == 0
    acl = broker.directory / "energy" / "acl"
    acl.write_text(acl.read_text() + "\nuser plant-a/gw-01\ntopic deny #\n")
    assert broker.reload()
    await wait_until(lambda: "Reloading config" in broker.logs(), 10, "the reload")
    assert await gw1.publish("energy/v1/plant-a/gw-01/status", b"after") == NOT_AUTHORIZED
    assert await gw2.publish("energy/v1/plant-a/gw-02/status", b"neighbour") == 0
    await wait_until(lambda: len(bridge.received()) == 2, 10, "the neighbour's message")
    assert [p for _, p in bridge.received()] == [b"before", b"neighbour"]


async def test_the_same_acl_binds_password_users(tmp_path: Path, pki: Pki) -> None:
    energy = broker_files(tmp_path / "broker", pki)
    make_password_file(energy / "passwd", {"plant-a/gw-01": "pw-gw", "bridge": "pw-bridge"})
    broker = PasswordBroker(tmp_path / "broker", free_port())
    await broker.start()
    made: list[Peer] = []
    try:
        for login in (("bridge", "pw-bridge"), ("plant-a/gw-01", "pw-gw")):
            made.append(await Peer(broker.port, pki.ca, None, login[0], login).start())
        bridge, gw = made
        await bridge.subscribe(SHARED)
        assert await gw.publish("energy/v1/plant-a/gw-02/status", b"forged") == NOT_AUTHORIZED
        assert await gw.publish("energy/v1/plant-a/gw-01/status", b"mine") == 0
        await wait_until(lambda: bool(bridge.received()), 10, "the gateway's message")
        assert bridge.received() == [("energy/v1/plant-a/gw-01/status", b"mine")]
        wrong = Peer(broker.port, pki.ca, None, "wrong", ("plant-a/gw-01", "guess"))
        made.append(wrong)
        with pytest.raises(ConnectionRefusedError, match=r"Not authorized|Bad user name"):
            await wrong.start()
    finally:
        for p in made:
            p.stop()
        await broker.stop()
        print(broker.logs()[-4000:])
