"""The shipped mosquitto config (deploy/mosquitto) on a free port, the fleet's
certificates, and connected peers: fixtures that the broker's security and
limits tests share (a test module never imports another).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.cli import ROOT, Cli, free_port
from tests.support.mqtt import (
    LOOPBACK,
    Broker,
    wait_until,
)

DEPLOY = ROOT / "deploy" / "mosquitto"
ETC = "/etc/mosquitto/energy/"
NOT_AUTHORIZED = 0x87
SHARED = "$share/bridge/energy/v1/#"
FACTOR_TOPIC = "energy/factors/cn-east"


# --- the shipped config, moved to a temporary directory ---------------------------------------


def _replace_line(text: str, startswith: str, new: str) -> str:
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(startswith)]
    assert len(hits) == 1, f"mosquitto.conf: expected one line starting {startswith!r}"
    lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def shipped_config(directory: Path, port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with port, paths and logging moved to ``directory``."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    assert text.count(ETC) >= 4, "the TLS files and the ACL live under /etc/mosquitto/energy/"
    text = text.replace(ETC, f"{directory / 'energy'}/")
    text = _replace_line(text, "listener 8883", f"listener {port} {LOOPBACK}")
    text = _replace_line(text, "pid_file ", "")
    text = _replace_line(
        text, "persistence_location /var/lib/mosquitto/", f"persistence_location {directory}/"
    )
    text = _replace_line(text, "log_dest file ", "log_dest stderr")
    if os.geteuid() == 0:
        text += "user root\n"  # else mosquitto drops to `mosquitto`, who cannot read tmp
    return text


class ShippedBroker(Broker):
    def config_text(self) -> str:
        return shipped_config(self.directory, self.port)

    def reload(self) -> bool:
        """SIGHUP, as `systemctl reload mosquitto` sends: re-reads the ACL file."""
        if self._proc is None or self._proc.poll() is not None:
            return False
        self._proc.send_signal(signal.SIGHUP)
        return True


@dataclass(frozen=True)
class Pki:
    ca: Path
    dir: Path
    rogue_dir: Path

    def cert(self, stem: str, rogue: bool = False) -> tuple[Path, Path]:
        d = self.rogue_dir if rogue else self.dir
        return d / f"{stem}.pem", d / f"{stem}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The fleet's CA and identities, and a second CA that issued a look-alike gateway."""
    cli = Cli()
    base = tmp_path_factory.mktemp("pki")
    fleet, rogue = base / "fleet", base / "rogue"
    for args in (
        ["init", "--dir", str(fleet)],
        ["server", "--dir", str(fleet), "--host", "localhost", "--ip", LOOPBACK],
        ["client", "--dir", str(fleet), "--site", "plant-a", "--name", "gw-01"],
        ["client", "--dir", str(fleet), "--site", "plant-a", "--name", "gw-02"],
        ["client", "--dir", str(fleet), "--name", "bridge"],
        ["client", "--dir", str(fleet), "--name", "factors"],
        ["init", "--dir", str(rogue)],
        ["client", "--dir", str(rogue), "--site", "plant-a", "--name", "gw-01"],
    ):
        result = cli.run("certs", *args)
        assert result.returncode == 0, str(result)
    return Pki(fleet / "ca.pem", fleet, rogue)


class PasswordBroker(ShippedBroker):
    """docs/deploy.md's variant without client certificates: a password file instead."""

    def config_text(self) -> str:
        text = _replace_line(super().config_text(), "require_certificate true", "")
        passwd = self.directory / "energy" / "passwd"
        return _replace_line(text, "use_identity_as_username true", f"password_file {passwd}")


def broker_files(directory: Path, pki: Pki) -> Path:
    """/etc/mosquitto/energy/ as docs/deploy.md installs it, under ``directory``."""
    energy = directory / "energy"
    energy.mkdir(parents=True)
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copy2(pki.dir / name, energy / name)
    shutil.copy2(DEPLOY / "acl", energy / "acl")
    return energy


@pytest.fixture
async def broker(tmp_path: Path, pki: Pki) -> AsyncIterator[ShippedBroker]:
    broker_files(tmp_path / "broker", pki)
    b = ShippedBroker(tmp_path / "broker", free_port())
    await b.start()
    try:
        yield b
    finally:
        await b.stop()
        print(b.logs()[-4000:])  # shown when the test failed


# --- a recording MQTT v5 client with a certificate ---------------------------------------------


class Peer:
    """paho v5 over TLS with a client certificate; records messages, acks and disconnects."""

    def __init__(
        self,
        port: int,
        ca: Path,
        cert: tuple[Path, Path] | None,
        client_id: str,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}  # mid -> PUBACK reason code
        self.granted: list[int] = []
        self.disconnects = 0
        self.refused: list[str] = []  # CONNACK reason codes of refusals
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        if cert is None:
            self.client.tls_set(ca_certs=str(ca))
        else:
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert[0]), keyfile=str(cert[1]))
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused.append(str(reason))
        else:
            self.connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnects += 1

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            self.acks[mid] = reason.value

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        with self._lock:
            self.granted.extend(r.value for r in reasons)

    async def start(self, session_expiry_s: int = 0) -> Peer:
        """``session_expiry_s`` > 0: a persistent session, as the bridge keeps one."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        self.connected.clear()
        self.client.connect(
            LOOPBACK, self.port, keepalive=10, clean_start=session_expiry_s == 0, properties=props
        )
        self.client.loop_start()
        await wait_until(lambda: self.connected.is_set() or bool(self.refused), 10, "a CONNACK")
        if self.refused:
            raise ConnectionRefusedError(self.refused[0])
        return self

    async def subscribe(self, *topics: str) -> list[int]:
        before = len(self.granted)
        for t in topics:
            self.client.subscribe(t, qos=1)
        await wait_until(lambda: len(self.granted) == before + len(topics), 10, "the SUBACKs")
        return self.granted[before:]

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int | None:
        """The PUBACK reason code (None for QoS 0, which has no acknowledgement)."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0:
            info.wait_for_publish(5)
            return None
        await wait_until(lambda: info.mid in self.acks, 10, f"the PUBACK for {topic}")
        return self.acks[info.mid]

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()


@pytest.fixture
async def peers(broker: ShippedBroker, pki: Pki) -> AsyncIterator[dict[str, Peer]]:
    made: dict[str, Peer] = {}

    async def start(stem: str) -> None:
        made[stem] = await Peer(broker.port, pki.ca, pki.cert(stem), f"test-{stem}").start()

    for stem in ("bridge", "plant-a.gw-01", "plant-a.gw-02", "factors"):
        await start(stem)
    try:
        yield made
    finally:
        for p in made.values():
            p.stop()
