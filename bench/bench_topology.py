"""Topology benchmark (issue 18): one Modbus TCP port carrying 50 or 200 power-only meters.

Run: ``.venv/bin/python -m bench.bench_topology [--units 50 200] [--rounds 3] [--window 60]``

The common gateway topology: every meter behind **one** TCP port (unit ids 1..N
behind one TCP-to-RS485 gateway), each a power-only meter with 30 float32 input
registers at 0x0000-0x003B of which 14 map to canonical quantities (no energy
counter: the agent integrates power), polled every second with one 60-register
read (``limits: {max_registers: 60, max_gap: 30}`` in the agent's inline
registers). Contenders, interleaved round by round against the same simulator
process and mosquitto:

* ``bare``: ``bench/minimal_poller.py --meter power-only --spread fleet``
  (pymodbus + paho, one read, ``struct``, one JSON message at QoS 1 per poll,
  nothing else; its polls one every interval/N, as a script with a task per
  device makes them);
* ``agent``: ``energy-agent run`` with numba's JIT (``ENERGY_AGENT_NUMBA=jit``, warm cache);
* ``agent-aot``: the same with the core compiled ahead of time (``ENERGY_AGENT_NUMBA=aot``;
  the module is built first if it is missing or stale: ``python -m agent.core.aot``);
* ``agent-nonumba``: the same with ``ENERGY_AGENT_NUMBA=off`` (the 32-bit ARM path).
* ``agent:max_inflight=8`` (any bus key): several requests in flight on the port.

``--latency-ms 20`` puts ``bench/latency_gateway.py`` between the contenders and the
simulator: every request is forwarded 20 ms late, as behind a gateway that takes that
long per answer (``--lines N``: at most N at once, N RS-485 lines). That is where
``max_inflight`` matters: one request at a time, 50 meters take 50 x 20 ms a round.

Headline: CPU per device-poll = utime+stime of the process tree over the window
divided by the polls that reached the broker in it (values per poll are the
same for every contender here, but not across the repository's benchmarks).
Also CPU % of one core, RSS (median while running / peak; anonymous and file-backed),
polls delivered, latency (payload ``ts`` to broker delivery). LLVM's pages are only
dropped while no other process maps libllvmlite.so (agent/runtime/lowmem.py): each
sample also counts the other processes on the machine that map it (``llvm others``),
and whether the contender maps it itself. Load averages are printed: the
machine is shared, so each round is short and the contenders alternate.
For the agent also the mean duration of a poll and its failed polls (its /metrics,
scraped at both ends of the window).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.bench_runtime import (
    ENERGY_AGENT,
    LOOPBACK,
    TICK,
    Proc,
    Subscriber,
    free_port,
    load,
    start_broker,
    status_mb,
    wait_for,
)
from bench.machine import describe
from bench.minimal_poller import POWER_ONLY_BLOCKS

MINIMAL = str(Path(__file__).with_name("minimal_poller.py"))
(_START, COUNT, POWER_ONLY) = POWER_ONLY_BLOCKS[0]


def _register(name: str, offset: int, scale: float) -> dict[str, Any]:
    reg: dict[str, Any] = {"quantity": name, "table": "input", "address": offset}
    reg["type"] = "float32"
    if scale != 1.0:
        reg["scale"] = scale
    return reg


POWER_REGISTERS = [_register(*r) for r in POWER_ONLY]
LIMITS = {"max_registers": COUNT, "max_gap": 30}


class _NoAliases(yaml.SafeDumper):
    """Every meter's registers written out: the loaders refuse 10,000 aliased values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False)


def tree_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants (all threads), in seconds."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        todo += children.get(p, [])
    return total


def start_plant(tmp: Path, units: int) -> tuple[Proc, int]:
    port = free_port()
    plant = {
        "endpoints": [
            {
                "tcp": f"{LOOPBACK}:{port}",
                "meters": [
                    {
                        "unit": u,
                        "registers": POWER_REGISTERS,
                        "limits": LIMITS,
                        "seed": u,
                        "load_kw": 20 + u % 50,
                    }
                    for u in range(1, units + 1)
                ],
            }
        ]
    }
    path = tmp / f"plant-{units}.yaml"
    path.write_text(dump(plant), encoding="utf-8")
    proc = Proc([ENERGY_AGENT, "simulate", "-c", str(path)], tmp / f"plant-{units}.log")
    wait_for(lambda: "ready" in proc.text() or not proc.alive(), 60, "the simulator", 0.05)
    if not proc.alive():
        raise RuntimeError(f"simulator failed:\n{proc.text()}")
    return proc, port


def start_gateway(tmp: Path, upstream: int, latency_ms: float, lines: int) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.latency_gateway", "--listen", str(port)]
    argv += ["--upstream", f"{LOOPBACK}:{upstream}", "--latency-ms", str(latency_ms)]
    argv += ["--lines", str(lines)]
    proc = Proc(argv, tmp / f"gateway-{port}.log")
    wait_for(lambda: "ready" in proc.text() or not proc.alive(), 30, "the gateway", 0.05)
    if not proc.alive():
        raise RuntimeError(f"gateway failed:\n{proc.text()}")
    return proc, port


def poll_metrics(http_port: int | None) -> tuple[float, float, float]:
    """(seconds in polls, polls, failed polls) so far, from the agent's /metrics."""
    if http_port is None:
        return (float("nan"),) * 3
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return (float("nan"),) * 3
    total = {"energy_agent_poll_seconds_sum": 0.0, "energy_agent_poll_seconds_count": 0.0}
    errors = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in total:
            total[name] += float(line.rsplit(" ", 1)[1])
        elif name == "energy_agent_poll_errors_total":
            errors += float(line.rsplit(" ", 1)[1])
    return total["energy_agent_poll_seconds_sum"], total["energy_agent_poll_seconds_count"], errors


def agent_config(
    tmp: Path,
    gw: str,
    port: int,
    units: int,
    mqtt_port: int,
    extra: dict[str, Any],
    http_port: int | None = None,
) -> Path:
    """The agent's config; ``extra``: bus keys (``poll_slots``) or ``section.key`` ones."""
    extra_bus = {k: v for k, v in extra.items() if "." not in k}
    cfg: dict[str, Any] = {
        "site": {"id": "bench", "timezone": "UTC"},
        "gateway": {"id": gw},
        "buses": [{"id": "bus-1", "tcp": {"host": LOOPBACK, "port": port}, **extra_bus}],
        "devices": [
            {
                "id": f"m01-{u:03d}",
                "bus": "bus-1",
                "unit": u,
                "registers": POWER_REGISTERS,
                "limits": LIMITS,
                "interval_s": 1,
                "max_power_kw": 500,
            }
            for u in range(1, units + 1)
        ],
        "mqtt": {"host": LOOPBACK, "port": mqtt_port, "client_id": f"bench-{gw}"},
        "publish": {"energy_interval_s": 60},
        "state_dir": str(tmp / f"state-{gw}"),
        "http": {"listen": f"{LOOPBACK}:{http_port or free_port()}"},
    }
    for key, value in extra.items():
        if "." in key:
            section, name = key.split(".", 1)
            cfg.setdefault(section, {})[name] = value
    path = tmp / f"{gw}.yaml"
    path.write_text(dump(cfg), encoding="utf-8")
    return path


LLVM_LIB = "libllvmlite"


def maps_llvm(pid: int) -> bool:
    with (
        contextlib.suppress(OSError),
        open(f"/proc/{pid}/maps", encoding="ascii", errors="replace") as f,
    ):
        return LLVM_LIB in f.read()
    return False


def llvm_mappers() -> set[int]:
    """Every process on the machine that maps numba's LLVM library (this user can read)."""
    return {int(e) for e in os.listdir("/proc") if e.isdigit() and maps_llvm(int(e))}


def ensure_compiled_core(env: dict[str, str]) -> None:
    """Build the compiled core (agent.core.aot) unless the one in place is current."""
    check = "from agent.core import kernel; print(kernel.JIT.backend)"
    e = dict(env, ENERGY_AGENT_NUMBA="aot")
    probe = subprocess.run([sys.executable, "-c", check], env=e, capture_output=True, text=True)
    if probe.stdout.strip() != "aot":
        subprocess.run([sys.executable, "-m", "agent.core.aot"], env=env, check=True)


def run_one(
    sub: Subscriber,
    proc: Proc,
    gw: str,
    units: int,
    warmup: float,
    window: float,
    http_port: int | None = None,
) -> dict[str, Any]:
    try:
        wait_for(lambda: gw in sub.first or not proc.alive(), 90, f"first publish of {gw}")
        if not proc.alive():
            raise RuntimeError(f"{gw} exited:\n{proc.text()[-3000:]}")
        time.sleep(warmup)
        ld0 = os.getloadavg()[0]
        m0 = poll_metrics(http_port)
        t0, c0 = time.time(), tree_cpu_s(proc.pid)
        rss, anon, file, others = [], [], [], []
        own_llvm = maps_llvm(proc.pid)
        while time.time() < t0 + window:
            time.sleep(min(1.0, max(0.0, t0 + window - time.time())))
            rss.append(status_mb(proc.pid, "VmRSS"))
            anon.append(status_mb(proc.pid, "RssAnon"))
            file.append(status_mb(proc.pid, "RssFile"))
            if len(rss) % 10 == 1:  # reading every process's maps costs CPU: now and then
                others.append(len(llvm_mappers() - {proc.pid}))
        t1, c1 = time.time(), tree_cpu_s(proc.pid)
        m1 = poll_metrics(http_port)
        hwm = status_mb(proc.pid, "VmHWM")
    finally:
        proc.stop()
    time.sleep(0.5)
    # Polls made in the window (by ts) that reached the broker, whenever they arrived.
    meas = [m for m in sub.of(gw) if m.kind == "measurements" and t0 * 1000 <= m.ts < t1 * 1000]
    sub.forget(gw)
    lat = sorted(m.recv * 1000 - m.ts for m in meas)
    cpu = c1 - c0
    return {
        "gw": gw,
        "cpu_s": cpu,
        "window_s": t1 - t0,
        "polls": len(meas),
        "expected": units * (t1 - t0),
        "ms_per_poll": 1000 * cpu / len(meas) if meas else float("nan"),
        "cpu_pct": 100 * cpu / (t1 - t0),
        "rss": statistics.median(rss) if rss else float("nan"),
        # File-backed pages (libllvmlite.so above all) that another process maps too
        # cannot be dropped (agent/runtime/lowmem.py): on a shared machine they stay.
        "anon": statistics.median(anon) if anon else float("nan"),
        "file": statistics.median(file) if file else float("nan"),
        "hwm": hwm,
        "llvm_own": own_llvm,
        "llvm_others": max(others, default=0),
        "p50": lat[len(lat) // 2] if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "load": f"{ld0:.2f}",
        # The agent's own polls: mean duration (all of a device's requests), failures.
        "poll_ms": 1000 * (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else float("nan"),
        "poll_errors": m1[2] - m0[2],
    }


def cold_start(
    tmp: Path, sub: Subscriber, port: int, units: int, mqtt_port: int, env: dict[str, str]
) -> None:
    """Once: numba compiles the kernels into the cache every later run loads."""
    cfg = agent_config(tmp, "gw-cold", port, units, mqtt_port, {})
    cold = Proc([ENERGY_AGENT, "run", "-c", str(cfg)], tmp / "gw-cold.log", env=env)
    wait_for(lambda: "gw-cold" in sub.first or not cold.alive(), 180, "cold start")
    cold.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="topology benchmark (issue 18)")
    ap.add_argument("--units", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument(
        "--contenders",
        nargs="+",
        default=["bare", "agent", "agent-aot", "agent-nonumba"],
        help="bare, agent, agent-aot, agent-nonumba, agent-main (the code in --main-tree), or "
        "agent:KEY=VALUE,... (bus keys, or section.key: settings to try)",
    )
    ap.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="forward every request this late (bench/latency_gateway.py); 0: no gateway",
    )
    ap.add_argument("--lines", type=int, default=0, help="the gateway's lines (0: unlimited)")
    ap.add_argument(
        "--main-tree",
        default=None,
        help="a checkout whose code `agent-main` runs (PYTHONPATH), to compare in one run",
    )
    args = ap.parse_args()
    print(f"Machine: {describe()}")
    print(f"Load average at start: {load()}")
    if args.latency_ms:
        lines = args.lines or "unlimited"
        print(f"Gateway: {args.latency_ms:g} ms per request, lines: {lines}")
    print()
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-topology-", dir="/var/tmp"))
        import shutil

        stack.callback(shutil.rmtree, tmp, True)
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba-cache"))
        if any(c.startswith("agent-aot") for c in args.contenders):
            ensure_compiled_core(env)
        broker, mqtt_port = start_broker(tmp)
        stack.callback(broker.stop)
        sub = Subscriber(mqtt_port)
        stack.callback(sub.close)
        for units in args.units:
            sim, port = start_plant(tmp, units)
            if units == args.units[0]:
                cold_start(tmp, sub, port, units, mqtt_port, dict(env, ENERGY_AGENT_NUMBA="jit"))
            gateway = None
            if args.latency_ms:
                gateway, port = start_gateway(tmp, port, args.latency_ms, args.lines)
            for r in range(1, args.rounds + 1):
                for c in args.contenders:
                    gw = re.sub(r"[^a-z0-9-]+", "-", f"gw-{units}-{c}-{r}")
                    http_port = None
                    if c == "bare":
                        argv = [sys.executable, MINIMAL, "--mqtt", f"{LOOPBACK}:{mqtt_port}"]
                        argv += ["--tcp", f"{LOOPBACK}:{port}", "--units", str(units)]
                        argv += ["--meter", "power-only", "--spread", "fleet"]
                        argv += ["--prefix", f"energy/v1/bench/{gw}"]
                        proc = Proc(argv, tmp / f"{gw}.log", env=env)
                    else:
                        extra: dict[str, Any] = {}
                        if ":" in c:
                            for kv in c.split(":", 1)[1].split(","):
                                k, v = kv.split("=")
                                extra[k] = yaml.safe_load(v)
                        http_port = free_port()
                        cfg = agent_config(tmp, gw, port, units, mqtt_port, extra, http_port)
                        e = dict(env)
                        if c.startswith("agent-nonumba"):
                            e["ENERGY_AGENT_NUMBA"] = "off"
                        elif c.startswith("agent-aot"):
                            e["ENERGY_AGENT_NUMBA"] = "aot"
                        else:
                            e["ENERGY_AGENT_NUMBA"] = "jit"
                        if c.startswith("agent-main"):
                            assert args.main_tree, "agent-main needs --main-tree"
                            e["PYTHONPATH"] = args.main_tree
                        proc = Proc([ENERGY_AGENT, "run", "-c", str(cfg)], tmp / f"{gw}.log", env=e)
                    res = run_one(sub, proc, gw, units, args.warmup, args.window, http_port)
                    results.setdefault((units, c), []).append(res)
                    print(
                        f"  {units} units, {c}, round {r}: {res['ms_per_poll']:.3f} ms/poll, "
                        f"{res['cpu_pct']:.1f} % CPU, {res['polls']}/{res['expected']:.0f} polls, "
                        f"RSS {res['rss']:.0f}/{res['hwm']:.0f} MB (anon {res['anon']:.0f}, "
                        f"file {res['file']:.0f}; LLVM own {res['llvm_own']}, others "
                        f"{res['llvm_others']}), p50/p99 "
                        f"{res['p50']:.0f}/{res['p99']:.0f} ms, poll {res['poll_ms']:.1f} ms "
                        f"({res['poll_errors']:.0f} failed), load {res['load']}",
                        flush=True,
                    )
            if gateway is not None:
                gateway.stop()
            sim.stop()
    print(f"\nLoad average at end: {load()}\n")
    print(
        "| units | contender | CPU ms per device-poll (median; range) | × bare | CPU % of one core "
        "| polls delivered | RSS MB median / peak | of it anon / file | latency p50 / p99 ms "
        "| LLVM mapped by it / by others (max) | poll ms (mean) | failed polls |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for units in args.units:
        bare = results.get((units, "bare"))
        bare_ms = statistics.median(x["ms_per_poll"] for x in bare) if bare else float("nan")
        for c in args.contenders:
            rs = results[(units, c)]
            ms = [x["ms_per_poll"] for x in rs]
            med = statistics.median(ms)
            print(
                f"| {units} | {c} | {med:.3f} ({min(ms):.3f}–{max(ms):.3f}) "
                f"| {med / bare_ms:.2f}× | {statistics.median(x['cpu_pct'] for x in rs):.1f} "
                f"| {100 * sum(x['polls'] for x in rs) / sum(x['expected'] for x in rs):.1f} % "
                f"| {statistics.median(x['rss'] for x in rs):.0f} / "
                f"{max(x['hwm'] for x in rs):.0f} "
                f"| {statistics.median(x['anon'] for x in rs):.0f} / "
                f"{statistics.median(x['file'] for x in rs):.0f} "
                f"| {statistics.median(x['p50'] for x in rs):.0f} / "
                f"{statistics.median(x['p99'] for x in rs):.0f} "
                f"| {'yes' if any(x['llvm_own'] for x in rs) else 'no'} / "
                f"{max(x['llvm_others'] for x in rs)} "
                f"| {statistics.median(x['poll_ms'] for x in rs):.1f} "
                f"| {sum(x['poll_errors'] for x in rs):.0f} |"
            )


if __name__ == "__main__":
    main()
