"""The bare baseline of the topology benchmark: one read per poll, one message per poll.

The fewest requests a hand-written script would make for a power-only meter
whose 30 float32 input registers lie at 0x0000-0x003B: one 60-register read per
poll, ``struct`` decoding of the 14 mapped quantities, one compact JSON
``{"ts", "seq", "values"}`` per device per poll at QoS 1, and nothing else (no
buffer, no status, no computation, no reconnect logic). pymodbus' async TCP
client (one connection per endpoint) and paho-mqtt on its own thread, as any
Python poller built on these two libraries. The first polls are spread evenly
over one interval across the whole fleet (one poll every interval/N), as a
script with one task per device does.

    python bench/bare_poller.py --mqtt 127.0.0.1:1883 --tcp 127.0.0.1:5020 \
        --units 50 --prefix energy/v1/bench/gw-bare
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import struct
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

#: (quantity, word offset from 0x0000, scale): float32 big-endian, the power-only meter
#: of the benchmark (bench.bench_topology.POWER_REGISTERS has the same map).
POWER_ONLY: list[tuple[str, int, float]] = [
    ("voltage_l1_v", 0x00, 1.0),
    ("voltage_l2_v", 0x02, 1.0),
    ("voltage_l3_v", 0x04, 1.0),
    ("current_l1_a", 0x06, 1.0),
    ("current_l2_a", 0x08, 1.0),
    ("current_l3_a", 0x0A, 1.0),
    ("active_power_l1_kw", 0x0C, 0.001),
    ("active_power_l2_kw", 0x0E, 0.001),
    ("active_power_l3_kw", 0x10, 0.001),
    ("frequency_hz", 0x30, 1.0),
    ("active_power_kw", 0x34, 0.001),
    ("reactive_power_kvar", 0x36, 0.001),
    ("apparent_power_kva", 0x38, 0.001),
    ("power_factor", 0x3A, 1.0),
]
COUNT = 60
_FMT = struct.Struct(">60H")


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def poll_device(
    client: AsyncModbusTcpClient,
    mqtt: paho.Client,
    topic: str,
    unit: int,
    first_due: float,
    interval: float,
    stop: asyncio.Event,
) -> None:
    seq = 0
    due = first_due
    while not stop.is_set():
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
        try:
            rr = await client.read_input_registers(0, count=COUNT, device_id=unit)
            if rr.isError():
                raise OSError(str(rr))
            raw = _FMT.pack(*rr.registers)
            values = {
                name: struct.unpack_from(">f", raw, 2 * off)[0] * scale
                for name, off, scale in POWER_ONLY
            }
        except Exception as exc:  # noqa: BLE001 - a baseline: log and go on
            logging.warning("unit %d: %s", unit, exc)
        else:
            ts = time.time_ns() // 1_000_000
            seq += 1
            payload = json.dumps({"ts": ts, "seq": seq, "values": values}, separators=(",", ":"))
            mqtt.publish(topic, payload, qos=1)
        due += interval
        now = time.monotonic()
        if due <= now:
            due += (int((now - due) // interval) + 1) * interval


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--mqtt", required=True, help="HOST:PORT of the broker")
    ap.add_argument("--tcp", action="append", required=True, help="HOST:PORT, repeatable")
    ap.add_argument("--units", type=int, default=50, help="units 1..N on every endpoint")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--prefix", default="energy/v1/bench/gw-bare")
    args = ap.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    host, port = _host_port(args.mqtt)
    mqtt = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-bare-{args.prefix.rsplit('/', 1)[-1]}",
        protocol=paho.MQTTv5,
    )
    mqtt.max_inflight_messages_set(1000)
    mqtt.connect(host, port)
    mqtt.loop_start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    clients = []
    tasks = []
    n = len(args.tcp) * args.units
    start = time.monotonic()
    i = 0
    for k, ep in enumerate(args.tcp, start=1):
        h, p = _host_port(ep)
        client = AsyncModbusTcpClient(h, port=p, timeout=1, retries=0)
        await client.connect()
        clients.append(client)
        for unit in range(1, args.units + 1):
            topic = f"{args.prefix}/m{k:02d}-{unit:03d}/measurements"
            first = start + i / n * min(args.interval, 1.0)
            tasks.append(
                asyncio.create_task(
                    poll_device(client, mqtt, topic, unit, first, args.interval, stop)
                )
            )
            i += 1
    await asyncio.gather(*tasks)
    for client in clients:
        client.close()
    mqtt.disconnect()
    mqtt.loop_stop()


if __name__ == "__main__":
    asyncio.run(main())
