"""Real components for the bridge tests: victoria-metrics, the bridge as a process, MQTT clients.

* :class:`VictoriaMetrics` is Debian's ``victoria-metrics`` on a loopback port. It
  accepts influxdb-client's ``/api/v2/write`` and stores ``measurement_field``
  series; with ``-dedup.minScrapeInterval=1ms`` a second point with the same
  series and time is kept once, as InfluxDB does. Read back with
  ``/internal/force_flush`` then ``/api/v1/export``. It can be stopped and started
  again on the same port and data directory (the database outage).
* :class:`BridgeProcess` is ``energy-agent bridge -c FILE`` as a subprocess, output
  in a file; its ``/metrics`` are read with prometheus-client's parser.
* :class:`Publisher` and :class:`Recorder` are paho clients on their own threads.
* :func:`recorded_stream` builds every topic of the contract with the payload
  builders; :func:`expected_points` says, independently of the bridge's code, what
  victoria-metrics must hold afterwards.

All waits are ``await asyncio.sleep``; HTTP calls to loopback run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent.contract import (
    Carrier,
    Message,
    MessageKind,
    Topics,
    device_status_payload,
    encode,
    energy_payload,
    gateway_status_payload,
    intensity_payload,
    measurements_payload,
    window_values,
)

LOOPBACK = "127.0.0.1"
VM_BINARY = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
PREFIX = "energy/v1"
DEAD_LETTER = "energy/dead-letter"
#: Every proxy variable pointed at a closed loopback port: victoria-metrics must not
#: reach anything outside this machine (no telemetry, no update checks).
NO_PROXY_ENV = {
    k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
}
#: The broker keeps every QoS 1 message for a session that is offline or not
#: acknowledging (mosquitto's default drops beyond 1000 queued): the deployment
#: setting the README asks for.
BROKER_EXTRA = "max_queued_messages 0\nmax_inflight_messages 0\n"


def have_victoria_metrics() -> bool:
    return os.access(VM_BINARY, os.X_OK)


async def wait_until(
    predicate: Callable[[], bool], limit_s: float, what: str, step: float = 0.1
) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(step)


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback only
        return bytes(r.read())


# --- victoria-metrics --------------------------------------------------------------------------

Point = tuple[str, tuple[tuple[str, str], ...], int, float]


#: The flags every test database runs with: deduplication as deploy/ ships it, all
#: of history kept, points readable as soon as they are written.
VM_FLAGS = (
    "-dedup.minScrapeInterval=1ms",
    "-retentionPeriod=100y",
    # Show points up to now (the default hides the last 30 s).
    "-search.latencyOffset=0s",
)


class VictoriaMetrics:
    """One victoria-metrics process on a loopback port.

    ``ports``, when given, is asked for another port if the first was taken between
    the moment it was found free and the moment victoria-metrics bound it (another
    process's ``bind(0)`` may land on it); the URL is only final once ``start`` returns.
    """

    def __init__(
        self,
        port: int,
        data_dir: Path,
        flags: Sequence[str] = VM_FLAGS,
        ports: Callable[[], int] | None = None,
    ) -> None:
        self.port = port
        self.ports = ports
        self.data_dir = data_dir
        self.flags = list(flags)
        self.log = data_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _spawn(self) -> None:
        env = {**os.environ, **NO_PROXY_ENV}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    VM_BINARY,
                    f"-storageDataPath={self.data_dir}",
                    f"-httpListenAddr={LOOPBACK}:{self.port}",
                    *self.flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def start(self) -> None:
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 15
        rebinds = 3
        while True:
            try:
                await asyncio.to_thread(_get, f"{self.url}/health", 1.0)
                return
            except OSError:
                if self.proc.poll() is not None:
                    if self.ports is not None and rebinds > 0 and self._lost_its_port():
                        rebinds -= 1
                        self.port = self.ports()
                        self._spawn()
                        continue
                    raise AssertionError(
                        f"victoria-metrics exited: {self.log.read_text(errors='replace')[-2000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise AssertionError("victoria-metrics did not answer in 15 s") from None
                await asyncio.sleep(0.1)

    def _lost_its_port(self) -> bool:
        tail = self.log.read_text(errors="replace")[-2000:]
        return f"{LOOPBACK}:{self.port}: bind: address already in use" in tail

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 15)
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    async def points(self, match: str = '{__name__!=""}') -> list[Point]:
        """Every stored sample as (name, sorted labels, ts_ms, value), after a flush."""

        def read() -> bytes:
            _get(f"{self.url}/internal/force_flush")
            # Every time there is, not the default window ending now.
            end = int(time.time()) + 30 * 86400
            query = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(end)})
            return _get(f"{self.url}/api/v1/export?{query}")

        out: list[Point] = []
        for raw in (await asyncio.to_thread(read)).splitlines():
            if not raw.strip():
                continue
            series = json.loads(raw)
            labels = dict(series["metric"])
            name = labels.pop("__name__")
            key = tuple(sorted(labels.items()))
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                out.append((name, key, int(ts), float(value)))
        return out


# --- the bridge as a process -------------------------------------------------------------------


def write_bridge_config(
    path: Path,
    *,
    mqtt_port: int,
    influx_url: str,
    metrics_port: int,
    client_id: str,
    group: str = "bridge",
    batch_size: int = 500,
    flush_interval_ms: int = 200,
    retry_max_s: float = 2.0,
    ledger: dict[str, Any] | None = None,
) -> Path:
    doc: dict[str, Any] = {
        "mqtt": {"host": LOOPBACK, "port": mqtt_port, "client_id": client_id},
        "influx": {"url": influx_url, "org": "energy", "bucket": "energy", "token": "t"},
        "bridge": {
            "group": group,
            "batch_size": batch_size,
            "flush_interval_ms": flush_interval_ms,
            "retry_max_s": retry_max_s,
            "dead_letter_topic": DEAD_LETTER,
            "metrics_listen": f"{LOOPBACK}:{metrics_port}",
        },
    }
    if ledger is not None:
        doc["ledger"] = ledger
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


class BridgeProcess:
    def __init__(
        self,
        command: Sequence[str],
        config: Path,
        metrics_port: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = [*command, "bridge", "-c", str(config)]
        self.metrics_port = metrics_port
        self.log = config.with_suffix(".log")
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> dict[str, float]:
        """``name{label="v"}`` -> value; {} while the endpoint does not answer."""
        try:
            text = _get(f"http://{LOOPBACK}:{self.metrics_port}/metrics", 2.0).decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    async def metric(self, name: str) -> float:
        return (await asyncio.to_thread(self.metrics)).get(name, 0.0)

    async def wait_metric(self, name: str, at_least: float, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        while (got := await self.metric(name)) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} is {got}, not {at_least}, after {limit_s} s:\n{self.output()[-3000:]}"
                )
            await asyncio.sleep(0.1)

    async def wait_ready(self, limit_s: float = 20.0) -> None:
        deadline = time.monotonic() + limit_s
        while (await self.metric("energy_bridge_subscribed")) != 1.0:
            if not self.alive():
                raise AssertionError(f"bridge exited early:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge not subscribed in {limit_s} s:\n{self.output()}")
            await asyncio.sleep(0.1)

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(kb) / 1024

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, within_s: float = 20.0) -> int | None:
        """SIGTERM; SIGKILL (exit code -9) if it has not exited within ``within_s``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(within_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --- MQTT clients ------------------------------------------------------------------------------


class Publisher:
    """QoS 1 publisher; :meth:`publish_all` returns when the broker acknowledged every message."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self._acked = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect(LOOPBACK, port)
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self._acked += 1

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    async def publish_all(
        self, messages: Iterable[tuple[str, bytes]], rate: float | None = None
    ) -> int:
        start = self.acked
        n = 0
        t0 = time.monotonic()
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=1)
            n += 1
            if rate is not None:
                ahead = t0 + n / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await wait_until(lambda: self.acked - start >= n, 60, f"PUBACK for {n} messages")
        return n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Recorder:
    """Records every message on ``topic`` (the dead-letter topic)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-recorder-{time.monotonic_ns()}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(LOOPBACK, port)
        self.client.loop_start()

    async def ready(self) -> None:
        await wait_until(self._subscribed.is_set, 10, "the recorder's subscription")

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _, p in list(self.messages)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the recorded stream and what must land ----------------------------------------------------


def recorded_stream(now_ms: int, *, sites: int = 2, minutes: int = 3) -> list[Message]:
    """Every topic of the contract, including nulls, gas, production and a meter tree."""
    out: list[Message] = []
    for s in range(sites):
        t = Topics(PREFIX, f"plant-{s}", "gw-01")
        t0 = now_ms - minutes * 60_000
        out.append(
            t.message(MessageKind.GATEWAY_STATUS, gateway_status_payload("online", t0, "1.0.0"))
        )
        ok = device_status_payload("ok", None, t0)
        out.append(t.message(MessageKind.DEVICE_STATUS, ok, "press-1"))
        failed = device_status_payload("error", "timeout", t0 + 1)
        out.append(t.message(MessageKind.DEVICE_STATUS, failed, "boiler"))
        for m in range(minutes):
            end = t0 + (m + 1) * 60_000
            for k in range(3):
                ts = end - 60_000 + k * 20_000 + 7
                values: dict[str, float | None] = {
                    "active_power_kw": 12.5 + m + k / 8,
                    "voltage_l1_v": 230.1,
                    "power_factor": None,
                    "energy_import_kwh": 1000.0 + m * 0.21 + k * 0.07,
                }
                poll = measurements_payload(ts, k, values)
                out.append(t.message(MessageKind.MEASUREMENTS, poll, "press-1"))
            out.append(
                t.message(
                    MessageKind.ENERGY,
                    energy_payload(
                        ts=end,
                        interval_s=60,
                        carrier=Carrier.ELECTRICITY,
                        energy_kwh=0.21 + m / 100,
                        co2_kg=(0.21 + m / 100) * 0.5703,
                        ef_kg_per_kwh=0.5703,
                        quality="measured",
                        unmetered_kwh=0.01,
                    ),
                    "press-1",
                )
            )
            out.append(
                t.message(
                    MessageKind.ENERGY,
                    energy_payload(
                        ts=end,
                        interval_s=60,
                        carrier=Carrier.NATURAL_GAS,
                        energy_kwh=1.081,
                        co2_kg=0.2162,
                        ef_kg_per_kwh=None,
                        quality="interpolated",
                        volume_m3=0.1,
                    ),
                    "boiler",
                )
            )
            out.append(
                t.message(
                    MessageKind.ENERGY,
                    energy_payload(
                        ts=end,
                        interval_s=60,
                        carrier=Carrier.PRODUCTION,
                        energy_kwh=0.0,
                        co2_kg=0.0,
                        ef_kg_per_kwh=None,
                        quality="measured",
                        units=float(m + 3),
                    ),
                    "line-a-count",
                )
            )
            windows = {
                "1m": window_values(0.21, 0.12, float(m + 3), 0.0258),
                "15m": window_values(3.1, 1.77, 0.0, 0.38),
                "today": window_values(0.0, 0.0, 0.0, 0.0),
            }
            out.append(t.message(MessageKind.INTENSITY, intensity_payload(end, windows)))
    return out


#: Energy record keys that are tags in the database, not fields (docs/influxdb.md).
TAG_FIELDS = ("carrier", "quality", "root", "parent")


def expected_points(messages: Iterable[Message]) -> set[Point]:
    """What victoria-metrics must hold: ``{measurement}_{field}`` series, nulls left out."""
    out: set[Point] = set()

    def add(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts: int) -> None:
        key = tuple(sorted(tags.items()))
        for name, value in fields.items():
            if value is not None:
                out.add((f"{measurement}_{name}", key, ts, float(value)))

    for msg in messages:
        parts = msg.topic.split("/")
        site, gw = parts[2], parts[3]
        p = msg.payload
        base = {"site": site, "gateway": gw}
        leaf = parts[-1]
        if len(parts) == 5 and leaf == "status":
            add("status", base, {"up": 1 if p["state"] == "online" else 0}, p["ts"])
        elif len(parts) == 5 and leaf == "intensity":
            for window, values in p["windows"].items():
                # the missing devices' names stay in MQTT (docs/influxdb.md)
                stored = {k: v for k, v in values.items() if k != "missing_devices"}
                add("intensity", {**base, "window": window}, stored, p["ts"])
        else:
            tags = {**base, "device": parts[4]}
            if leaf == "status":
                add("status", tags, {"up": 1 if p["state"] == "ok" else 0}, p["ts"])
            elif leaf == "measurements":
                add("measurements", tags, {"seq": p["seq"], **p["values"]}, p["ts"])
            elif leaf == "energy":
                tags |= {"carrier": p["carrier"], "quality": p["quality"]}
                # the device's place in the meter tree: tags when the gateway says it
                tags |= {k: p[k] for k in ("root", "parent") if p.get(k) is not None}
                fields = {k: v for k, v in p.items() if k not in ("ts", *TAG_FIELDS)}
                add("energy", tags, fields, p["ts"])
            elif leaf == "events":
                tags |= {"event": p["event"], "quantity": p["quantity"]}
                add("events", tags, {"value": p["value"], "limit_per_h": p["limit_per_h"]}, p["ts"])
    return out


def wire(messages: Iterable[Message]) -> list[tuple[str, bytes]]:
    return [(m.topic, encode(m.payload)) for m in messages]


# --- the whole set-up, for one test --------------------------------------------------------------


class Stack:
    """mosquitto + victoria-metrics + any number of bridges, all on fresh loopback ports."""

    def __init__(
        self,
        tmp: Path,
        free_port: Callable[[], int],
        command: Sequence[str],
        vm_flags: Sequence[str] = VM_FLAGS,
    ) -> None:
        from agent.demo.broker import Mosquitto

        self.tmp = tmp
        self.free_port = free_port
        self.command = list(command)
        self.mqtt_port = free_port()
        self.broker = Mosquitto(self.mqtt_port, extra=BROKER_EXTRA)
        self.vm = VictoriaMetrics(free_port(), tmp / "vm-data", vm_flags, ports=free_port)
        self.bridges: list[BridgeProcess] = []
        self.clients: list[Publisher | Recorder] = []

    async def __aenter__(self) -> Stack:
        await self.broker.__aenter__()
        await self.vm.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            c.close()
        for b in self.bridges:
            b.stop()
        await self.vm.stop()
        await self.broker.close()

    def bridge(
        self,
        client_id: str = "bridge-a",
        env: dict[str, str] | None = None,
        influx_url: str | None = None,
        **settings: Any,
    ) -> BridgeProcess:
        metrics_port = self.free_port()
        config = write_bridge_config(
            self.tmp / f"{client_id}.yaml",
            mqtt_port=self.mqtt_port,
            influx_url=influx_url or self.vm.url,
            metrics_port=metrics_port,
            client_id=client_id,
            **settings,
        )
        b = BridgeProcess(self.command, config, metrics_port, env)
        self.bridges.append(b)
        return b

    def publisher(self) -> Publisher:
        p = Publisher(self.mqtt_port, client_id=f"test-publisher-{len(self.clients)}")
        self.clients.append(p)
        return p

    def recorder(self, topic: str = DEAD_LETTER) -> Recorder:
        r = Recorder(self.mqtt_port, topic)
        self.clients.append(r)
        return r


def assert_same_points(got: Iterable[Point], want: set[Point], rel: float = 1e-12) -> None:
    """Equal as sets of (series, time), values equal to ``rel`` (storage keeps ~15 digits)."""
    got_map: dict[tuple[str, tuple[tuple[str, str], ...], int], list[float]] = {}
    for name, labels, ts, value in got:
        got_map.setdefault((name, labels, ts), []).append(value)
    want_map = {(n, lab, ts): v for n, lab, ts, v in want}
    doubled = {k: v for k, v in got_map.items() if len(v) > 1}
    missing = sorted(set(want_map) - set(got_map))
    extra = sorted(set(got_map) - set(want_map))
    assert not doubled, f"{len(doubled)} points stored twice, e.g. {list(doubled.items())[:3]}"
    assert not missing, f"{len(missing)} points missing, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} unexpected points, e.g. {extra[:3]}"
    wrong = [
        (k, got_map[k][0], v)
        for k, v in want_map.items()
        if not abs(got_map[k][0] - v) <= rel * max(1.0, abs(v))
    ]
    assert not wrong, f"{len(wrong)} wrong values (key, got, want), e.g. {wrong[:3]}"


def many_measurements(base_ms: int, n: int, *, start: int = 0, devices: int = 25) -> list[Message]:
    """``n`` distinct measurement records (message i has ts base+i) from ``devices`` meters."""
    out = []
    for i in range(start, start + n):
        t = Topics(PREFIX, f"site-{i % 2}", "gw-01")
        values: dict[str, float | None] = {
            "active_power_kw": i / 10,
            "energy_import_kwh": 1000 + i / 1000,
        }
        poll = measurements_payload(base_ms + i, i, values)
        out.append(t.message(MessageKind.MEASUREMENTS, poll, f"m-{i % devices:02d}"))
    return out
