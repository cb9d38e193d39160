"""Backfill benchmark: `replay` at a week, a month and a year of 1 Hz readings.

Run: ``.venv/bin/python -m bench.bench_backfill [--quick] [--profile]`` (needs the
``bench`` extra: pandas and pyarrow). Inputs are generated under a temporary
directory and deleted afterwards (a year of 1 Hz long CSV is 1.4 GB).

Each run is a fresh process (its peak RSS is read with ``wait4``), best of
``--repeat``. Side by side, on the same files:

* ``new``: ``energy-agent replay FILE --topics energy,intensity --out FILE`` (pyarrow),
  with the core compiled ahead of time when ``python -m agent.core.aot`` has built it
  (as deploy/install.sh does; the benchmark says which backend ran);
* ``new/jit``: the same with numba compiling the core at start (``ENERGY_AGENT_NUMBA=jit``:
  numba and LLVM in the process);
* ``new/python``: the same with the plain-Python reader (gateways without pyarrow);
* ``old``: the replay before streaming (``git show main:agent/replay.py`` as it was
  when this benchmark was written, kept in ``bench/old_replay.py``): reads and sorts
  everything, then feeds the core (week and month only: a year needs ~12 GB);
* ``pandas``: ``read_csv`` of the whole file, then the same core, fed the same way;
* ``core``: the core alone on arrays already in memory (the per-slot SiteCore loop
  plus JSON encoding): the floor for the pipeline around it.

Plus 50 meters x 1 month at 10 s as a wide CSV (13 M values). ``--profile`` prints
where a week's time goes in the new path (cProfile), to tell the pipeline's share
from the core's per-interval Python.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
CONFIG = """\
site: {{id: plant-a, timezone: Asia/Shanghai}}
gateway: {{id: gw-01}}
carbon:
  electricity: {{kg_per_kwh: 0.5703}}
buses:
  - {{id: bus-1, tcp: {{host: 127.0.0.1, port: 502}}}}
devices:
{devices}
state_dir: {state}
"""
DEVICE = (
    "  - {{id: {id}, bus: bus-1, unit: {unit}, interval_s: {interval}, profile: eastron-sdm630}}"
)


def config(tmp: Path, n: int, interval: int) -> Path:
    devices = "\n".join(
        DEVICE.format(id=f"m{i + 1}", unit=i % 247 + 1, interval=interval) for i in range(n)
    )
    path = tmp / f"config-{n}.yaml"
    (tmp / "state").mkdir(exist_ok=True)
    path.write_text(CONFIG.format(devices=devices, state=tmp / "state"))
    return path


def long_csv(path: Path, days: float) -> int:
    """One meter at 1 Hz, 0.005 kWh a second (18 kW)."""
    n = int(days * 86400)
    with path.open("w") as f:
        f.write("ts,device,quantity,value\n")
        for a in range(0, n, 86400):
            k = np.arange(a, min(n, a + 86400))
            ts = (T0 + k * 1000).tolist()
            v = (1000 + k * 0.005).tolist()
            f.write(
                "".join(f"{t},m1,energy_import_kwh,{x:.3f}\n" for t, x in zip(ts, v, strict=True))
            )
    return n


def wide_csv(path: Path, meters: int, days: int, step_s: int) -> int:
    n = days * 86400 // step_s
    with path.open("w") as f:
        f.write("ts," + ",".join(f"m{i + 1}.energy_import_kwh" for i in range(meters)) + "\n")
        rate = 0.001 * (1 + np.arange(meters) % 7)
        for a in range(0, n, 10_000):
            k = np.arange(a, min(n, a + 10_000))
            vals = 1000 + np.outer(k * step_s, rate)
            ts = T0 + k * step_s * 1000
            f.write(
                "".join(
                    f"{t}," + ",".join(f"{x:.3f}" for x in row) + "\n"
                    for t, row in zip(ts.tolist(), vals.tolist(), strict=True)
                )
            )
    return n * meters


def run(cmd: list[str], **extra: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one fresh process (``extra``: its environment)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed: {proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return seconds, usage.ru_maxrss // 1024


def best(cmd: list[str], repeat: int, **extra: str) -> tuple[float, int]:
    runs = [run(cmd, **extra) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def backend() -> str:
    """The core's backend a replay here runs with (aot when the module is built)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "from agent.core import kernel; print(kernel.JIT.backend.value)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-200:]


JIT = {"ENERGY_AGENT_NUMBA": "jit"}


def cli(data: Path, cfg: Path, out: Path, reader: str = "arrow") -> list[str]:
    return [
        sys.executable, "-m", "agent.cli.main", "replay", str(data), "-c", str(cfg),
        "--topics", "energy,intensity", "--out", str(out), "--progress", "off", "--reader", reader,
    ]  # fmt: skip


def helper(kind: str, data: Path, cfg: Path, out: Path, days: float = 0) -> list[str]:
    return [
        sys.executable, "-m", "bench.backfill_baselines", kind, str(data), str(cfg), str(out),
        str(days),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a week and a day only")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"Machine: {describe()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(f"core backend of `new`: {backend()}")
    sizes = (
        [("1 week", 7.0)] if args.quick else [("1 week", 7.0), ("1 month", 30.0), ("1 year", 365.0)]
    )
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as d:
        tmp = Path(d)
        cfg = config(tmp, 1, 1)
        out = tmp / "out.jsonl"
        # numba compiles the kernels into the state directory's cache once, before timing
        warm = tmp / "warm.csv"
        long_csv(warm, 0.01)
        run(cli(warm, cfg, out))
        run(cli(warm, cfg, out), **JIT)  # numba's cache too: no compiling in a timed run
        print("\n| input | rows | path | seconds | rows/s | peak RSS MB | new is |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for label, days in sizes:
            data = tmp / "long.csv"
            rows = long_csv(data, days)
            results: dict[str, tuple[float, int]] = {}
            results["new"] = best(cli(data, cfg, out), args.repeat)
            reference = digest(out)
            results["new/jit"] = best(cli(data, cfg, out), args.repeat, **JIT)
            assert digest(out) == reference, "new replay differs with numba's JIT"
            results["new/python"] = best(cli(data, cfg, out, "python"), 1)
            assert digest(out) == reference, "new replay differs with the Python reader"
            results["core"] = best(helper("core", data, cfg, out, days), 1)
            if days <= 30:
                results["old"] = best(helper("old", data, cfg, out), 1)
                assert digest(out) == reference, "old and new replay differ"
                results["pandas"] = best(helper("pandas", data, cfg, out), 1)
                assert digest(out) == reference, "pandas pipeline and new replay differ"
            new = results["new"][0]
            for name, (s, mb) in results.items():
                ratio = (
                    ""
                    if name == "new"
                    else f"{s / new:.2f}x faster"
                    if s > new
                    else f"{new / s:.2f}x slower"
                )
                cells = [f"{label} 1 Hz long", f"{rows:,}", name, f"{s:.2f}", f"{rows / s:,.0f}"]
                print("| " + " | ".join([*cells, str(mb), ratio]) + " |", flush=True)
            print(f"(load average after {label}: {os.getloadavg()[0]:.1f})", flush=True)
            data.unlink()
        if not args.quick:
            data = tmp / "wide.csv"
            values = wide_csv(data, 50, 30, 10)
            cfg50 = config(tmp, 50, 10)
            for name, extra in (("new", {}), ("new/jit", JIT)):
                s, mb = best(cli(data, cfg50, out), args.repeat, **extra)
                cells = ["50 meters x 1 month 10 s wide", f"{values:,} values", name, f"{s:.2f}"]
                print("| " + " | ".join([*cells, f"{values / s:,.0f}", str(mb), ""]) + " |")
            print(f"(load average after the wide file: {os.getloadavg()[0]:.1f})")
        if args.profile:
            data = tmp / "long.csv"
            long_csv(data, 7.0)
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            subprocess.run(helper("profile", data, cfg, out), env=env, check=True)


if __name__ == "__main__":
    main()
