"""Real components for the `run` tests: mosquitto, a recording MQTT subscriber, the agent.

* :class:`Broker` runs ``mosquitto`` (Debian's) on a loopback port with a config
  written to a temporary directory: anonymous or with a password file, plain or
  TLS (a throwaway CA made with the ``openssl`` CLI), with or without
  persistence. It can be stopped and started again on the same port.
* :class:`Subscriber` is a paho-mqtt client on its own thread that records every
  message it receives (arrival time, topic, payload, retain flag).
* :class:`AgentProcess` is ``energy-agent run -c FILE`` as a subprocess, its
  output in a file (a pipe nobody reads would block it).

Everything waits with ``await asyncio.sleep``: the tests' simulated meters are
served by the same event loop, and a blocking wait would silence them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

LOOPBACK = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PREFIX = "energy/v1"


def have_mosquitto() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


async def wait_until(
    predicate: Callable[[], bool], within: float, what: str, step: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(step)


async def sleep_until_wall(t: float) -> None:
    """Sleep (without blocking the loop) until the wall clock reads ``t`` (Unix seconds)."""
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def next_boundary(after: float, interval_s: int = 60) -> float:
    """The first wall-clock interval end strictly after ``after`` (Unix seconds)."""
    return (int(after) // interval_s + 1) * interval_s


# --- certificates and passwords ---------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, with ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=energy-agent test CA",
    )  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost",
    )  # fmt: skip
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return TlsFiles(ca, cert, key)


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file, made with ``mosquitto_passwd -b``."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise RuntimeError("mosquitto_passwd is not installed (apt-get install mosquitto)")
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = [tool, "-b", *(["-c"] if i == 0 else []), str(path), user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=30)
    path.chmod(0o600)
    return path


# --- the broker -----------------------------------------------------------------------------


class Broker:
    """mosquitto on ``127.0.0.1:port`` with a config written to ``directory``."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        persistence: bool = False,
        password_file: Path | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.directory = directory
        self.port = port
        self.persistence = persistence
        self.password_file = password_file
        self.tls = tls
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def config_text(self) -> str:
        lines = [f"listener {self.port} {LOOPBACK}"]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines += ["allow_anonymous true"]
        if self.persistence:
            store = self.directory / "store"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/"]
        else:
            lines += ["persistence false"]
        if os.geteuid() == 0:
            lines += ["user root"]  # else mosquitto drops to `mosquitto`, who cannot read tmp
        lines += ["log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
        lines += ["log_type information", "log_timestamp_format %H:%M:%S"]
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self, within: float = 10.0) -> None:
        assert not self.running
        self.conf.write_text(self.config_text())
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - starts it, does not wait
                [MOSQUITTO, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + within
        while not port_open(self.port):
            if self._proc.poll() is not None:
                raise AssertionError(f"mosquitto exited ({self._proc.returncode}):\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto not listening after {within} s:\n{self.logs()}")
            await asyncio.sleep(0.05)

    async def stop(self, within: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + within
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._proc = None

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# --- a recording subscriber ------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    at: float  # time.time() on arrival
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def kind(self) -> str:
        return self.topic.rsplit("/", 1)[-1]


@dataclass
class Subscriber:
    """A paho client on its own thread; records what arrives on ``topic``.

    ``persistent`` makes it a persistent session (clean_start=False with a session
    expiry): with a persistent broker, what is published while this client is away
    is queued for it, even across a broker restart. It resubscribes at every
    connect either way.
    """

    port: int
    client_id: str
    topic: str = f"{PREFIX}/#"
    persistent: bool = False
    tls: TlsFiles | None = None
    username: str | None = None
    password: str | None = None
    messages: list[Received] = field(default_factory=list)
    connects: int = 0
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        if self.tls is not None:
            self._client.tls_set(ca_certs=str(self.tls.ca), cert_reqs=ssl.CERT_REQUIRED)
        if self.username is not None:
            self._client.username_pw_set(self.username, self.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused.append(str(reason))
            return
        self.connects += 1
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(time.time(), msg.topic, bytes(msg.payload), msg.retain))

    async def start(self, within: float = 10.0) -> Subscriber:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if self.persistent else 0
        self._client.connect_async(
            LOOPBACK, self.port, keepalive=10, clean_start=not self.persistent, properties=props
        )
        self._client.loop_start()
        await wait_until(self._subscribed.is_set, within, f"subscriber {self.client_id}")
        return self

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def received(self, kind: str | None = None, device: str | None = None) -> list[Received]:
        """What arrived so far, optionally of one topic kind and/or one device."""
        with self._lock:
            out = list(self.messages)
        if kind is not None:
            out = [m for m in out if m.kind == kind]
        if device is not None:
            out = [m for m in out if m.topic.split("/")[-2] == device]
        return out

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], within: float, what: str
    ) -> list[Received]:
        await wait_until(lambda: predicate(self.received()), within, what, step=0.1)
        return self.received()


# --- the agent ------------------------------------------------------------------------------


def agent_config(
    tmp: Path,
    *,
    buses: Sequence[dict[str, Any]],
    devices: Sequence[dict[str, Any]],
    mqtt: dict[str, Any],
    site: str = "plant-t",
    gateway: str = "gw-t",
    **extra: Any,
) -> Path:
    doc: dict[str, Any] = {
        "site": {"id": site, "timezone": "UTC"},
        "gateway": {"id": gateway},
        "carbon": {"electricity": {"kg_per_kwh": 0.5}},
        "buses": list(buses),
        "devices": list(devices),
        "mqtt": mqtt,
        "publish": {"energy_interval_s": 60},
        "state_dir": str(tmp / "state"),
        "http": {"listen": "127.0.0.1:0"},
        **extra,
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class AgentProcess:
    """``energy-agent run -c CONFIG``; its stdout and stderr go to ``log``."""

    def __init__(
        self,
        command: Sequence[str],
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.config = config
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.command, "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    async def wait(self, within: float) -> int:
        proc = self.proc
        assert proc is not None
        await wait_until(lambda: proc.poll() is not None, within, "the agent to exit")
        return proc.returncode

    async def terminate(self, within: float = 15.0) -> int:
        """SIGTERM, then the exit code (the test fails if it takes longer than ``within``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(within)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
