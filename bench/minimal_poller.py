"""The baseline of the runtime benchmark: a poller that only polls and publishes.

What a careful hand-written script does, and nothing more: pymodbus' async TCP
client (one connection per endpoint), paho-mqtt, every SDM630 (Eastron, float32
input registers) read in its contiguous register blocks, ``struct`` decoding,
one compact JSON ``{"ts", "seq", "values"}`` per device per poll published at
QoS 1. No computation, no buffer, no status, no reconnect logic.

Both pollers of the benchmark send the same Modbus requests at the same
instants: the SDM630 answers at most 50 registers per request and its 22
quantities span 0x0000-0x00E1, so a full read is the same 4 block reads the
agent's planner makes (checked by ``bench.bench_runtime``), and by default the
first polls are spread per port as the agent spreads them per bus. Stdlib +
pymodbus + paho only, so its memory is the floor of any Python poller built on
these two libraries.

    python bench/minimal_poller.py --mqtt 127.0.0.1:1883 --tcp 127.0.0.1:5020 \
        --units 10 --prefix energy/v1/bench/gw-min

``--meter power-only`` is the bare baseline of ``bench.bench_topology``: a
power-only meter whose 30 float32 input registers lie at 0x0000-0x003B (14 of
them mapped), read with the fewest requests a hand-written script would make:
one 60-register read per poll.
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

# (start address, register count, [(quantity, offset in registers, scale)]): float32, big-endian.
SDM630_BLOCKS: list[tuple[int, int, list[tuple[str, int, float]]]] = [
    (
        0x0000,
        18,
        [
            ("voltage_l1_v", 0, 1.0),
            ("voltage_l2_v", 2, 1.0),
            ("voltage_l3_v", 4, 1.0),
            ("current_l1_a", 6, 1.0),
            ("current_l2_a", 8, 1.0),
            ("current_l3_a", 10, 1.0),
            ("active_power_l1_kw", 12, 0.001),
            ("active_power_l2_kw", 14, 0.001),
            ("active_power_l3_kw", 16, 0.001),
        ],
    ),
    (
        0x0034,
        28,
        [
            ("active_power_kw", 0, 0.001),
            ("apparent_power_kva", 4, 0.001),
            ("reactive_power_kvar", 8, 0.001),
            ("power_factor", 10, 1.0),
            ("frequency_hz", 18, 1.0),
            ("energy_import_kwh", 20, 1.0),
            ("energy_export_kwh", 22, 1.0),
            ("reactive_energy_import_kvarh", 24, 1.0),
            ("reactive_energy_export_kvarh", 26, 1.0),
        ],
    ),
    (
        0x00C8,
        6,
        [("voltage_l1_l2_v", 0, 1.0), ("voltage_l2_l3_v", 2, 1.0), ("voltage_l3_l1_v", 4, 1.0)],
    ),
    (0x00E0, 2, [("current_n_a", 0, 1.0)]),
]


#: The power-only meter of bench.bench_topology: one block, one read per poll.
POWER_ONLY_BLOCKS: list[tuple[int, int, list[tuple[str, int, float]]]] = [
    (
        0x0000,
        60,
        [
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
        ],
    )
]
METERS = {"sdm630": SDM630_BLOCKS, "power-only": POWER_ONLY_BLOCKS}


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def poll_device(
    client: AsyncModbusTcpClient,
    mqtt: paho.Client,
    topic: str,
    unit: int,
    blocks: list[tuple[int, int, list[tuple[str, int, float]]]],
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
        values: dict[str, float] = {}
        try:
            for start, count, items in blocks:
                rr = await client.read_input_registers(start, count=count, device_id=unit)
                if rr.isError():
                    raise OSError(str(rr))
                raw = struct.pack(f">{count}H", *rr.registers)
                for name, off, scale in items:
                    values[name] = struct.unpack_from(">f", raw, 2 * off)[0] * scale
        except Exception as exc:  # noqa: BLE001 - a baseline: log and go on
            logging.warning("unit %d: %s", unit, exc)
        else:
            # Stamped when the values arrived, as the agent stamps its readings.
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
    ap.add_argument("--units", type=int, default=10, help="units 1..N on every endpoint")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--prefix", default="energy/v1/bench/gw-min")
    ap.add_argument("--meter", choices=sorted(METERS), default="sdm630")
    ap.add_argument(
        "--spread",
        choices=("fleet", "port"),
        default="port",
        help="first polls spread over one interval per port, as the agent's scheduler does "
        "per bus (every port's k-th unit starts at the same instant: same request timing "
        "as the agent), or across the whole fleet (one poll every interval/N)",
    )
    args = ap.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    host, port = _host_port(args.mqtt)
    mqtt = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-minimal-poller",
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
            topic = f"{args.prefix}/m{k:02d}-{unit:02d}/measurements"
            share = i / n if args.spread == "fleet" else (unit - 1) / args.units
            first = start + share * min(args.interval, 1.0)
            tasks.append(
                asyncio.create_task(
                    poll_device(
                        client, mqtt, topic, unit, METERS[args.meter], first, args.interval, stop
                    )
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
