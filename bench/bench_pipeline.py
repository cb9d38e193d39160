"""The Modbus TCP clients side by side: CPU per request and time per round (issue 18).

Run: ``.venv/bin/python -m bench.bench_pipeline [--units 50] [--rounds 200] [--repeat 3]``

One ``energy-agent simulate`` process (its own CPU is not counted) serves N
power-only meters behind one port, as in bench/bench_topology.py; optionally
``--latency-ms`` puts bench/latency_gateway.py in between. This process reads
every meter once per round (one 60-register FC04 read each, all N issued at
once as the agent's poll tasks do), ``--rounds`` times, with:

* ``pymodbus``: :class:`drivers.transport.ModbusTransport` (what ``max_inflight: 1`` uses);
* ``pipelined@K``: :class:`drivers.pipeline.PipelinedTransport` with K in flight
  (``pipelined@1`` is the new client made to send one at a time, which the config
  never selects: it answers whether the new client could replace pymodbus at 1).

CPU per request = this process's ``time.process_time()`` over the rounds ÷
requests. Contenders alternate within each repetition; load averages are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_runtime import LOOPBACK, load
from bench.bench_topology import COUNT, start_gateway, start_plant
from bench.machine import describe
from drivers.endpoint import Transport
from drivers.pipeline import PipelinedTransport
from drivers.registers import FunctionCode
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing


def _transport(name: str, ep: Endpoint) -> ModbusTransport | PipelinedTransport:
    if name == "pymodbus":
        return ModbusTransport(ep, Timing(timeout_s=5.0, retries=0))
    k = int(name.split("@")[1])
    return PipelinedTransport(ep, Timing(timeout_s=5.0, retries=0, max_inflight=k))


async def _rounds(tr: Transport, units: int, rounds: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, failed reads) for ``rounds`` rounds of every unit."""
    fc = FunctionCode.READ_INPUT_REGISTERS
    await asyncio.gather(*(tr.read(u, fc, 0, COUNT) for u in range(1, units + 1)))  # connect
    failed = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        got = await asyncio.gather(
            *(tr.read(u, fc, 0, COUNT) for u in range(1, units + 1)), return_exceptions=True
        )
        failed += sum(not isinstance(g, list) for g in got)
    return time.process_time() - c0, time.perf_counter() - t0, failed


async def run(port: int, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    ep = Endpoint(Framing.TCP, host=LOOPBACK, port=port)
    out: dict[str, list[tuple[float, float]]] = {}
    for rep in range(1, args.repeat + 1):
        for name in args.contenders:
            async with _transport(name, ep) as tr:
                cpu, wall, failed = await _rounds(tr, args.units, args.rounds)
            n = args.units * args.rounds
            us = 1e6 * cpu / n
            ms = 1e3 * wall / args.rounds
            out.setdefault(name, []).append((us, ms))
            print(
                f"  {name}, repetition {rep}: {us:.1f} µs CPU per request, "
                f"{ms:.1f} ms per round of {args.units}, {failed} failed, load {load()}",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Modbus TCP clients side by side (issue 18)")
    ap.add_argument("--units", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--contenders", nargs="+", default=["pymodbus", "pipelined@1", "pipelined@8"])
    args = ap.parse_args()
    print(f"Machine: {describe()}")
    print(f"Load average at start: {load()}; {args.units} meters, {args.rounds} rounds\n")
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, tmp, True)
        sim, port = start_plant(tmp, args.units)
        stack.callback(sim.stop)
        if args.latency_ms:
            gw, port = start_gateway(tmp, port, args.latency_ms, 0)
            stack.callback(gw.stop)
        results = asyncio.run(run(port, args))
    print(f"\nLoad average at end: {load()}\n")
    print("| client | CPU µs per request (median; range) | ms per round (median) |")
    print("|---|---:|---:|")
    for name, rs in results.items():
        us = [r[0] for r in rs]
        print(
            f"| {name} | {statistics.median(us):.1f} ({min(us):.1f}–{max(us):.1f}) "
            f"| {statistics.median(r[1] for r in rs):.1f} |"
        )


if __name__ == "__main__":
    main()
