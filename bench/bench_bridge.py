"""Bridge benchmark (issue 5): one bridge process vs a bare receive+ack ceiling and the naive path.

Run: ``.venv/bin/python -m bench.bench_bridge [--n 30000] [--rounds 2]``

Everything is real and on loopback: one mosquitto, one victoria-metrics
(Debian's, proxies pointed at a dead port). For every contender and round a
fresh shared-subscription group is registered (persistent session, then
offline), ``--n`` measurement records (six quantities each, like a polled meter)
are published into the broker's queue for it, and then the contender is started
as its own process and drains the queue:

(a) **ceiling**: a bare paho v5 client, manual ack, that only receives and
    acknowledges each message (no parsing, no database);
(b) **naive**: paho with automatic ack feeding influxdb-client's batching writer
    one ``Point`` per message (batch 5,000, flush 1 s) -- it acknowledges before
    the write, so a crash loses what was in its buffer;
(c) **bridge**: :class:`agent.bridge.app.Bridge` (the code behind
    ``energy-agent bridge``), validation + line protocol + synchronous writes,
    acknowledgement after the write.

Measured inside each contender process, from the first message received to the
last one done (acknowledged; for naive: confirmed written by the batching
writer's success callback): records per second, process CPU seconds per 1,000
records (all threads), and the acknowledgement latency p99 (receive to ack).
Best round by throughput is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.machine import describe

LOOPBACK = "127.0.0.1"
PREFIX = "energy/v1"
FILTER = f"{PREFIX}/+/+/+/measurements"
RECEIVE_MAX = 10_000
BATCH = 5000
NO_PROXY_ENV = {
    k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def records(n: int, base_ms: int) -> list[tuple[str, bytes]]:
    from agent.contract import MessageKind, Topics, encode, measurements_payload

    out = []
    for i in range(n):
        t = Topics(PREFIX, f"site-{i % 3}", "gw-01")
        values: dict[str, float | None] = {
            "active_power_kw": 10 + i % 97 / 10,
            "voltage_l1_v": 230.0 + i % 7 / 10,
            "current_l1_a": 15.0 + i % 11 / 10,
            "power_factor": 0.95,
            "frequency_hz": 50.0,
            "energy_import_kwh": 1000 + i / 1000,
        }
        out.append(
            (
                t.topic(MessageKind.MEASUREMENTS, f"m-{i % 200:03d}"),
                encode(measurements_payload(base_ms + i, i, values)),
            )
        )
    return out


def connect_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAX
    return props


def register(port: int, group: str, client_id: str) -> None:
    """Create the persistent session with its shared subscription, then go offline."""
    done = threading.Event()
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    c.on_connect = lambda cl, *a: cl.subscribe(
        f"$share/{group}/{FILTER}", options=SubscribeOptions(qos=1)
    )
    c.on_subscribe = lambda *a: done.set()
    c.connect(LOOPBACK, port, clean_start=False, properties=connect_props())
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("subscription not granted")
    c.disconnect()
    c.loop_stop()


def publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    acked = 0
    lock = threading.Lock()
    all_done = threading.Event()

    def on_publish(*a: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked == len(msgs):
                all_done.set()

    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-pub",
        protocol=paho.MQTTv5,
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(LOOPBACK, port)
    c.loop_start()
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1)
    if not all_done.wait(300):
        raise RuntimeError("publisher did not get every PUBACK")
    c.disconnect()
    c.loop_stop()


# --- contenders (each runs in its own process) -------------------------------------------------


class Clock:
    def __init__(self, n: int) -> None:
        self.n = n
        self.done = 0
        self.first: float | None = None
        self.cpu0 = 0.0
        self.latencies: list[float] = []
        self.finished = threading.Event()
        self.lock = threading.Lock()

    def started(self) -> None:
        if self.first is None:
            self.first = time.monotonic()
            self.cpu0 = time.process_time()

    def finish(self, k: int) -> None:
        with self.lock:
            self.done += k
            if self.done >= self.n:
                self.end = time.monotonic()
                self.cpu1 = time.process_time()
                self.finished.set()

    def result(self) -> dict[str, Any]:
        assert self.first is not None
        wall = self.end - self.first
        lat = sorted(self.latencies)
        p99 = lat[int(len(lat) * 0.99) - 1] if lat else None
        return {
            "records": self.done,
            "seconds": wall,
            "rate": self.done / wall,
            "cpu_per_1000": (self.cpu1 - self.cpu0) / self.done * 1000,
            "ack_p99_ms": None if p99 is None else p99 * 1000,
        }


def role_ceiling(a: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(a.n)
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=a.client_id,
        protocol=paho.MQTTv5,
        manual_ack=True,
    )

    def on_message(cl: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        clock.started()
        t = time.monotonic()
        cl.ack(m.mid, m.qos)
        clock.latencies.append(time.monotonic() - t)
        clock.finish(1)

    c.on_message = on_message
    c.connect(LOOPBACK, a.mqtt_port, clean_start=False, properties=connect_props())
    c.loop_start()
    if not clock.finished.wait(600):
        raise RuntimeError(f"ceiling: {clock.done} of {a.n}")
    c.disconnect()
    c.loop_stop()
    return clock.result()


def role_naive(a: argparse.Namespace) -> dict[str, Any]:
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write.point import Point
    from influxdb_client.client.write_api import WriteOptions
    from influxdb_client.domain.write_precision import WritePrecision

    clock = Clock(a.n)
    influx = InfluxDBClient(url=a.vm_url, token="t", org="energy")

    def on_success(conf: Any, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        clock.finish(text.count("\n") + 1)

    write_api = influx.write_api(
        write_options=WriteOptions(batch_size=BATCH, flush_interval=1000),
        success_callback=on_success,
    )

    def on_message(cl: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        clock.started()
        _, _, site, gw, dev, _ = m.topic.split("/")
        doc = json.loads(m.payload)
        p = Point("measurements").tag("site", site).tag("gateway", gw).tag("device", dev)
        p.field("seq", doc["seq"])
        for k, v in doc["values"].items():
            if v is not None:
                p.field(k, float(v))
        p.time(doc["ts"], WritePrecision.MS)  # type: ignore[arg-type]
        write_api.write(bucket="energy", record=p)

    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=a.client_id,
        protocol=paho.MQTTv5,
    )
    c.on_message = on_message
    c.connect(LOOPBACK, a.mqtt_port, clean_start=False, properties=connect_props())
    c.loop_start()
    if not clock.finished.wait(600):
        raise RuntimeError(f"naive: {clock.done} of {a.n}")
    c.disconnect()
    c.loop_stop()
    write_api.close()
    influx.close()  # type: ignore[no-untyped-call]
    out = clock.result()
    out["ack_p99_ms"] = None  # acknowledged on receipt, before any write
    return out


def role_bridge(a: argparse.Namespace) -> dict[str, Any]:
    from agent.bridge.app import Bridge
    from agent.bridge.consumer import Inbound
    from agent.config.models import BridgeConfig

    config = BridgeConfig.model_validate(
        {
            "mqtt": {"host": LOOPBACK, "port": a.mqtt_port, "client_id": a.client_id},
            "influx": {"url": a.vm_url, "org": "energy", "bucket": "energy", "token": "t"},
            "bridge": {
                "group": a.group,
                "batch_size": BATCH,
                "flush_interval_ms": 1000,
                "receive_maximum": RECEIVE_MAX,
                "session_expiry_s": 3600,
                "metrics_listen": None,
            },
        }
    )
    bridge = Bridge(config)
    clock = Clock(a.n)
    put = bridge.writer.put
    ack = bridge.consumer.ack

    def timed_put(item: Inbound) -> None:
        clock.started()
        put(item)

    def timed_ack(items: list[Inbound]) -> int:
        sent = ack(items)
        now = time.monotonic()
        clock.latencies.extend(now - i.received for i in items)
        clock.finish(len(items))
        return sent

    bridge.consumer.sink = timed_put
    bridge.writer._ack = timed_ack
    runner = threading.Thread(target=bridge.run, daemon=True)
    runner.start()
    if not clock.finished.wait(600):
        raise RuntimeError(f"bridge: {clock.done} of {a.n}")
    bridge.stop_event.set()
    runner.join(30)
    return clock.result()


ROLES = {"ceiling": role_ceiling, "naive": role_naive, "bridge": role_bridge}


# --- the orchestra -----------------------------------------------------------------------------


def start_vm(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "victoria-metrics",
            f"-storageDataPath={tmp / 'vm'}",
            f"-httpListenAddr={LOOPBACK}:{port}",
            "-dedup.minScrapeInterval=1ms",
            "-retentionPeriod=100y",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **NO_PROXY_ENV},
    )
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return proc
        if time.monotonic() > deadline:
            raise RuntimeError("victoria-metrics did not start")
        time.sleep(0.1)


def run_contender(role: str, mqtt_port: int, vm_url: str, n: int, group: str) -> dict[str, Any]:
    client_id = f"bench-{group}"
    register(mqtt_port, group, client_id)
    publish(mqtt_port, records(n, time.time_ns() // 1_000_000 - 3_600_000))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_bridge",
            "--role",
            role,
            "--mqtt-port",
            str(mqtt_port),
            "--vm-url",
            vm_url,
            "--n",
            str(n),
            "--group",
            group,
            "--client-id",
            client_id,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if out.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def orchestrate(n: int, rounds: int) -> dict[str, dict[str, Any]]:
    from agent.demo.broker import Mosquitto

    mqtt_port, vm_port = free_port(), free_port()
    best: dict[str, dict[str, Any]] = {}
    all_runs: dict[str, list[float]] = {r: [] for r in ROLES}
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as d:
        vm = start_vm(Path(d), vm_port)
        try:
            async with Mosquitto(
                mqtt_port, extra="max_queued_messages 0\nmax_inflight_messages 0\n"
            ):
                for r in range(rounds):
                    for role in ROLES:
                        res = await asyncio.to_thread(
                            run_contender,
                            role,
                            mqtt_port,
                            f"http://{LOOPBACK}:{vm_port}",
                            n,
                            f"{role}-{r}",
                        )
                        all_runs[role].append(res["rate"])
                        print(f"round {r + 1} {role:8s} {res}", file=sys.stderr)
                        if role not in best or res["rate"] > best[role]["rate"]:
                            best[role] = res
        finally:
            vm.terminate()
            vm.wait(15)
    for role, rates in all_runs.items():
        best[role]["median_rate"] = statistics.median(rates)
    return best


def verdict(ok: bool) -> str:
    return "pass" if ok else "**fail**"


def report(best: dict[str, dict[str, Any]], n: int, rounds: int) -> str:
    c, nv, b = best["ceiling"], best["naive"], best["bridge"]

    def lat(x: dict[str, Any]) -> str:
        return "acks before writing" if x["ack_p99_ms"] is None else f"{x['ack_p99_ms']:.1f} ms"

    rows = [
        ("(a) ceiling: bare paho receive + ack", c),
        ("(b) naive: paho auto-ack + influxdb-client batching, one Point per message", nv),
        ("**energy-agent bridge** (validate, line protocol, write, then ack)", b),
    ]
    lines = [
        "## Bridge (issue 5)",
        "",
        f"Machine: {describe()}. mosquitto and victoria-metrics (Debian) on loopback, "
        f"{n:,} `measurements` records (six quantities each) queued in the broker for each "
        f"contender, drained by one process; best of {rounds} rounds by throughput "
        "(median in brackets). `.venv/bin/python -m bench.bench_bridge`.",
        "",
        "| contender | records/s | CPU s per 1,000 records | ack latency p99 |",
        "|---|---:|---:|---:|",
    ]
    for name, x in rows:
        lines.append(
            f"| {name} | {x['rate']:,.0f} ({x['median_rate']:,.0f}) | "
            f"{x['cpu_per_1000']:.3f} | {lat(x)} |"
        )
    vs_ceiling = b["rate"] / c["rate"]
    vs_naive = b["rate"] / nv["rate"]
    lines += [
        "",
        "| target | measured | result |",
        "|---|---|---|",
        f"| ≥ 80 % of the ceiling | {vs_ceiling:.0%} | {verdict(vs_ceiling >= 0.8)} |",
        f"| ≥ 2× the naive path | {vs_naive:.2f}× | {verdict(vs_naive >= 2)} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--mqtt-port", type=int)
    ap.add_argument("--vm-url")
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--group")
    ap.add_argument("--client-id")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--write", action="store_true", help="append the section to docs/performance.md"
    )
    a = ap.parse_args()
    if a.role:
        print(json.dumps(ROLES[a.role](a)))
        return
    best = asyncio.run(orchestrate(a.n, a.rounds))
    text = report(best, a.n, a.rounds)
    print(text)
    if a.write:
        perf = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
        with perf.open("a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
