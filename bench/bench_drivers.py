"""Drivers benchmark: requests per device read and decoding throughput.

Run: ``.venv/bin/python -m bench.bench_drivers [--markdown]``

1. Requests per full device read, for every built-in profile: the planner's
   ``merge`` strategy against one request per quantity (what a naive poller
   does), counted, and timed over Modbus TCP on loopback against the simulator
   in the same run.
2. Decoding throughput in values per second: the precompiled block decoder
   against pymodbus' ``convert_from_registers`` per value and a plain per-value
   ``struct`` decoder, on the same registers.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time
from collections.abc import Callable

from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient

from bench.machine import describe
from drivers.decode import BlockDecoder
from drivers.image import RegisterImage
from drivers.planner import Strategy, plan
from drivers.profile import Profile, ProfileLibrary
from drivers.reader import DeviceReader
from drivers.registers import RegisterSpec, WordOrder
from drivers.simulator.meter import MeterModel
from drivers.simulator.server import SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _best(fn: Callable[[], object], repeat: int, number: int) -> float:
    """Best-of-``repeat`` seconds per call (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _ratios(p: Profile) -> dict[str, float]:
    return {name: 10.0 for name in p.ratios}


# --- 1. requests per read ------------------------------------------------------------------


async def _naive_read(client: AsyncModbusTcpClient, p: Profile, unit: int) -> int:
    """One request per quantity, decoded with pymodbus' helper: a typical hand-written poller."""
    n = 0
    for spec in p.registers:
        fn = (
            client.read_input_registers
            if spec.table.value == "input"
            else client.read_holding_registers
        )
        rr = await fn(spec.address, count=spec.words, device_id=unit)
        dtype = getattr(client.DATATYPE, spec.type.name)
        client.convert_from_registers(rr.registers, dtype, word_order=spec.word_order.value)  # type: ignore[arg-type]
        n += 1
    return n


async def requests_bench(library: ProfileLibrary, polls: int) -> list[dict[str, object]]:
    rows = []
    t_frozen = time.time()
    for p in library.all():
        planned = len(
            plan(
                p.registers,
                max_registers=p.limits.max_registers,
                max_gap=p.limits.max_gap,
                holes=p.limits.unreadable,
            )
        )
        single = len(
            plan(p.registers, max_registers=p.limits.max_registers, strategy=Strategy.SINGLE)
        )
        port = _free_port()
        model = MeterModel(p, seed=3, ratios=_ratios(p))
        ep = Endpoint(Framing.TCP, host="127.0.0.1", port=port)
        async with SimulatorServer(ep, [SimulatedDevice(1, model)], clock=lambda: t_frozen):
            reader = DeviceReader(p, 1)
            async with ModbusTransport(ep, Timing(timeout_s=2, retries=0)) as tr:
                await reader.read(tr)  # ratio registers are read once, then cached
                t0 = time.perf_counter()
                for _ in range(polls):
                    await reader.read(tr)
                ours = (time.perf_counter() - t0) / polls
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            await client.connect()
            try:
                await _naive_read(client, p, 1)
                t0 = time.perf_counter()
                for _ in range(polls):
                    await _naive_read(client, p, 1)
                naive = (time.perf_counter() - t0) / polls
            finally:
                client.close()
        rows.append(
            {
                "profile": p.id,
                "quantities": len(p.registers),
                "requests": planned,
                "naive_requests": single,
                "ratio": single / planned,
                "read_ms": ours * 1e3,
                "naive_ms": naive * 1e3,
                "speedup": naive / ours,
            }
        )
    return rows


# --- 2. decoding ---------------------------------------------------------------------------


Block = tuple[BlockDecoder, list[int], list[RegisterSpec], int]


def decode_bench(library: ProfileLibrary) -> list[dict[str, object]]:
    rows = []
    conv = ModbusTcpClient.convert_from_registers
    dt = ModbusTcpClient.DATATYPE
    for p in library.all():
        model = MeterModel(p, seed=5, ratios=_ratios(p))
        model.advance(0.0)
        image = RegisterImage.of(p, model.values(), model.ratios)
        reads = plan(
            p.registers,
            max_registers=p.limits.max_registers,
            max_gap=p.limits.max_gap,
            holes=p.limits.unreadable,
        )
        blocks: list[Block] = []
        for r in reads:
            specs = [p.registers[i] for i in r.items]
            words = image.read(r.table, r.address, r.count)
            blocks.append((BlockDecoder(r.address, r.count, specs), words, specs, r.address))
        ratios = _ratios(p)
        n_values = len(p.registers)

        def ours(blocks: list[Block] = blocks, ratios: dict[str, float] = ratios) -> None:
            for dec, words, _, _ in blocks:
                dec.decode(words, ratios)

        def pymodbus_helper(blocks: list[Block] = blocks) -> None:
            for _, words, specs, start in blocks:
                for s in specs:
                    regs = words[s.address - start : s.end - start]
                    v = conv(regs, getattr(dt, s.type.name), word_order=s.word_order.value)
                    v = v * s.scale  # type: ignore[operator]

        def per_value_struct(blocks: list[Block] = blocks) -> None:
            for _, words, specs, start in blocks:
                for s in specs:
                    regs = words[s.address - start : s.end - start]
                    if s.word_order is WordOrder.LITTLE:
                        regs = regs[::-1]
                    data = struct.pack(f">{len(regs)}H", *regs)
                    v = struct.unpack(">" + s.type.struct_code, data)[0] * s.scale
                    del v

        t_ours = _best(ours, 5, 2000)
        t_helper = _best(pymodbus_helper, 5, 200)
        t_struct = _best(per_value_struct, 5, 2000)
        rows.append(
            {
                "profile": p.id,
                "values": n_values,
                "ours_mvps": n_values / t_ours / 1e6,
                "helper_mvps": n_values / t_helper / 1e6,
                "struct_mvps": n_values / t_struct / 1e6,
                "vs_helper": t_helper / t_ours,
                "vs_struct": t_struct / t_ours,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=200)
    args = ap.parse_args()
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    library = ProfileLibrary()
    print(f"Machine: {describe()}\n")
    req = asyncio.run(requests_bench(library, args.polls))
    print("### Requests per full device read (Modbus TCP, loopback, simulator)\n")
    print(
        "| profile | quantities | requests (planned) | requests (one per quantity) | ratio "
        "| read ms (planned) | read ms (naive poller) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in req:
        print(
            f"| {r['profile']} | {r['quantities']} | {r['requests']} | {r['naive_requests']} "
            f"| {r['ratio']:.1f}× | {r['read_ms']:.2f} | {r['naive_ms']:.2f} "
            f"| {r['speedup']:.1f}× |"
        )
    dec = decode_bench(library)
    print("\n### Decoding throughput (million values per second, one core)\n")
    print(
        "| profile | values | block decoder | per-value struct | pymodbus "
        "convert_from_registers | vs struct | vs pymodbus |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in dec:
        print(
            f"| {r['profile']} | {r['values']} | {r['ours_mvps']:.2f} | "
            f"{r['struct_mvps']:.2f} | {r['helper_mvps']:.3f} | {r['vs_struct']:.1f}× | "
            f"{r['vs_helper']:.0f}× |"
        )


if __name__ == "__main__":
    main()
