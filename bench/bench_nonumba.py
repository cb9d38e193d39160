"""The core without numba: what a gateway's fleet costs when the kernels run as Python.

Run: ``.venv/bin/python -m bench.bench_nonumba [--meters 50] [--minutes 10]``

numba has no 32-bit ARM wheels, so there the core runs its kernels as plain Python
(:mod:`agent.core.jit`). This measures the core's share of the agent's work the way
the agent does it, once with numba and once with ``ENERGY_AGENT_NUMBA=off``, each in
a fresh process (the choice is made when the kernel is imported):

* ``--meters`` simulated Eastron SDM630 meters (22 values each) polled every second,
  fed to ``SiteCore.feed`` **one poll per call**, as the agent feeds them, with the
  measurements messages built; 60 s energy intervals, so every simulated minute closes
  50 energy records and one intensity record (six windows recomputed);
* once per simulated second the live page's demand figure (``range_sums`` over the
  last 15 slots), as ``/api/state`` does.

Before the clock starts, each run's core is given a day of history (polls a minute
apart), so the 24 h and ``today`` windows are full, as on a gateway that has been up
for a day; the readings are generated beforehand too. Both runs must produce the same
messages, byte for byte (a hash of every payload is compared). Reported: CPU time per
simulated second (= share of one core at that fleet), polls per CPU second (the
fleet at 1 s that one core could keep up with), best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe

PROFILE = "eastron-sdm630"
#: 2025-01-02T23:30:00Z plus a little: polls are not on the minute, and the measured
#: minutes follow a day of history (the day's window is full).
T0 = 1_735_860_600_000 + 137
HISTORY_S = 86_400


def child(meters: int, minutes: int, repeat: int) -> dict[str, object]:
    """In a fresh process: the core's work for ``minutes`` of a fleet at 1 s."""
    import hashlib

    import numpy as np

    from agent.config import parse_config
    from agent.contract import MessageKind, encode
    from agent.core.site import Reading, SiteCore
    from drivers.profile import ProfileLibrary
    from drivers.simulator.meter import MeterModel

    library = ProfileLibrary()
    devices = "\n".join(
        f"  - {{id: m{i:03d}, bus: b, unit: {i % 247 + 1}, profile: {PROFILE}, "
        f"interval_s: 1, max_power_kw: 500}}"
        for i in range(meters)
    )
    regmap = library.get(PROFILE)
    seconds = minutes * 60
    models = [MeterModel(regmap, seed=i + 1, load_kw=20 + i % 10) for i in range(meters)]

    def poll_all(ts: int) -> list[Reading]:
        row = []
        for i, model in enumerate(models):
            model.advance(ts / 1000)
            row.append(Reading(f"m{i:03d}", ts, model.values()))
        return row

    history = [r for s in range(-HISTORY_S, 0, 60) for r in poll_all(T0 + s * 1000)]
    polls = [poll_all(T0 + s * 1000) for s in range(seconds)]

    best = None
    records = 0
    digest = ""
    with tempfile.TemporaryDirectory(prefix="bench-nonumba-") as state:
        text = (
            "site: {id: bench, timezone: UTC}\ngateway: {id: gw}\n"
            "buses: [{id: b, tcp: {host: 127.0.0.1, port: 502}}]\n"
            f"publish: {{energy_interval_s: 60}}\nstate_dir: {state}\ndevices:\n{devices}\n"
        )
        config = parse_config(text, "bench.yaml", profiles=library)
        # The day of history once (it compiles or loads numba's cache too), then every
        # run continues from its snapshot, as the agent does after a restart.
        # numba compiles into a fresh cache here: not part of any figure
        SiteCore(config, library).feed(history[: meters * 62], measurements=False)
        site = SiteCore(config, library)
        started = time.process_time()
        site.feed(history, measurements=False)
        history_cpu = time.process_time() - started
        snap = Path(state) / "history.npz"
        site.save_snapshot(snap)
        for _ in range(repeat):
            site = SiteCore(config, library)
            engine = site.engine
            assert site.load_snapshot(snap)
            out = []
            started = time.process_time()
            for row in polls:
                for reading in row:
                    out += site.feed([reading])
                end = int(engine.closed_slot_end().max())
                engine.range_sums(np.full(1, end - 15), np.full(1, end))
            cpu = time.process_time() - started
            best = cpu if best is None else min(best, cpu)
            records = sum(m.kind is MessageKind.ENERGY for m in out)
            h = hashlib.sha256()
            for m in out:
                h.update(m.topic.encode() + b" " + encode(m.payload) + b"\n")
            digest = h.hexdigest()
    assert best is not None
    return {
        "backend": str(engine.jit.backend),
        "reason": engine.jit.reason,
        "meters": meters,
        "seconds": seconds,
        "polls": meters * seconds,
        "energy_records": records,
        "digest": digest,
        "cpu_s": best,
        "history_readings": len(history),
        "history_intervals": HISTORY_S // 60,
        "history_cpu_s": history_cpu,
    }


def run_child(meters: int, minutes: int, repeat: int, env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench.bench_nonumba", "--child"),
            *("--meters", str(meters), "--minutes", str(minutes), "--repeat", str(repeat)),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"the benchmark's child failed:\n{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description="the core without numba")
    ap.add_argument("--meters", type=int, default=50)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.meters, args.minutes, args.repeat)))
        return
    print(f"Machine: {describe()}")
    print(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    base = {k: v for k, v in os.environ.items() if k not in ("ENERGY_AGENT_NUMBA",)}
    runs = [
        run_child(args.meters, args.minutes, args.repeat, base),
        run_child(args.meters, args.minutes, args.repeat, dict(base, ENERGY_AGENT_NUMBA="off")),
    ]
    assert runs[0]["backend"] == "numba" and runs[1]["backend"] == "python", runs
    assert runs[0]["energy_records"] and runs[0]["digest"] == runs[1]["digest"], runs
    print(
        f"{args.meters} SDM630 meters at 1 s, {args.minutes} simulated minutes "
        f"({runs[0]['polls']:,} polls, {runs[0]['energy_records']:,} energy records) after "
        f"a day of history, best of {args.repeat}; both runs published the same bytes:\n"
    )
    print("| core | CPU s | CPU ms per simulated second | % of one core | polls per CPU second |")
    print("|---|---:|---:|---:|---:|")
    for r in runs:
        cpu = float(r["cpu_s"])  # type: ignore[arg-type]
        per_s = cpu / int(r["seconds"])  # type: ignore[call-overload]
        print(
            f"| {r['backend']} | {cpu:.2f} | {per_s * 1000:.1f} | {per_s * 100:.1f} "
            f"| {int(r['polls']) / cpu:,.0f} |"  # type: ignore[call-overload]
        )
    slow = float(runs[1]["cpu_s"]) / float(runs[0]["cpu_s"])  # type: ignore[arg-type]
    print(f"\nThe core without numba: {slow:.1f}× the CPU of the compiled core.")
    print(
        f"\nThe day of history in one `SiteCore.feed` call, as `replay` feeds a file "
        f"({runs[0]['history_readings']:,} readings, {runs[0]['history_intervals']:,} "
        "intervals of 60 s closed, each with its site windows):\n"
    )
    print("| core | CPU s | readings per CPU second | intervals closed per CPU second |")
    print("|---|---:|---:|---:|")
    for r in runs:
        cpu = float(r["history_cpu_s"])  # type: ignore[arg-type]
        print(
            f"| {r['backend']} | {cpu:.2f} | {int(r['history_readings']) / cpu:,.0f} "  # type: ignore[call-overload]
            f"| {int(r['history_intervals']) / cpu:,.0f} |"  # type: ignore[call-overload]
        )
    print(f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
