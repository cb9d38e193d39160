"""Site benchmark: what the site's series (issue 13) costs on top of the engine.

Run: ``.venv/bin/python -m bench.bench_site [--quick]``.

1. Live: 50 meters polled every second, each poll fed to ``SiteCore.feed`` on its own,
   the hold flushed every second: CPU per poll (the agent's path).
2. Replay: a week of 10-s readings of 1 and 5 meters at 60-s intervals, fed in 6-hour
   arrays (``SiteCore.feed_arrays``, replay's path): CPU per interval closed (energy and
   intensity records built, not encoded).
3. Outage: 5 meters at 900-s intervals, one of them down for 40 days (readings a minute),
   fed a quarter hour at a time with the hold: the series' peak and final size, and the
   revisions the returning meter causes.

Times are process CPU, the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import numpy as np

from agent.config.models import AgentConfig
from agent.core.engine import load_kernel
from agent.core.site import Reading, SiteCore
from bench.machine import describe
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

T0 = 1_704_038_400_000  # 2024-01-01 00:00 Asia/Shanghai
MIN, DAY = 60_000, 86_400_000


def site(n: int, interval_s: int, poll_s: int, zone: str = "Asia/Shanghai") -> SiteCore:
    reg = {"quantity": "energy_import_kwh", "table": "input", "address": 0, "type": "float64"}
    devices = [
        {"id": f"m{k}", "bus": "bus-1", "unit": k + 1, "interval_s": poll_s, "registers": [reg]}
        for k in range(n)
    ]
    config = AgentConfig.model_validate(
        {
            "site": {"id": "plant-a", "timezone": zone},
            "gateway": {"id": "gw-01"},
            "carbon": {"electricity": {"kg_per_kwh": 0.5}},
            "buses": [{"id": "bus-1", "tcp": {"host": "127.0.0.1"}}],
            "devices": devices,
            "publish": {"energy_interval_s": interval_s},
            "state_dir": tempfile.mkdtemp(),
        }
    )
    return SiteCore(config, ProfileLibrary())


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def live(seconds: int) -> float:
    """CPU µs per poll, 50 meters at 1 s, each poll fed alone."""
    core = site(50, 60, 1)
    c = time.process_time()
    for s in range(seconds):
        t = T0 + s * 1000
        for k in range(50):
            value = {Quantity.ENERGY_IMPORT_KWH: 1000 + k + s * 0.01}
            core.feed([Reading(f"m{k}", t, value)], measurements=False)
        core.flush(now_ms=t)
    return (time.process_time() - c) / (seconds * 50) * 1e6


def replay(n: int, days: int) -> float:
    """CPU µs per 60-s interval, a week of 10-s readings of ``n`` meters in 6-h arrays."""
    core = site(n, 60, 10)
    ts = np.arange(T0, T0 + days * DAY, 10_000, dtype=np.int64)
    chans = np.tile(np.arange(n), ts.size)
    tts = np.repeat(ts, n)
    vals = (tts - T0) / 1000 * 0.01 + chans
    step = 6 * 360 * n
    c = time.process_time()
    for a in range(0, tts.size, step):
        core.feed_arrays(chans[a : a + step], tts[a : a + step], vals[a : a + step])
    core.flush()
    return (time.process_time() - c) / (days * 1440) * 1e6


def outage(days: int) -> tuple[float, float, int, float]:
    """(peak MB, final MB, intensity records published, CPU s) of the series over an outage
    of one meter in five lasting ``days``."""
    core = site(5, 900, 60, "Europe/Berlin")
    ts = np.arange(T0, T0 + (days + 2) * DAY, MIN, dtype=np.int64)
    peak, records = 0, 0
    c = time.process_time()
    for a in range(0, ts.size, 15):
        t = ts[a : a + 15]
        down = (t > T0 + DAY) & (t < T0 + (days + 1) * DAY)
        rows = [(k, t[~down] if k == 0 else t) for k in range(5)]
        chans = np.concatenate([np.full(tk.size, k) for k, tk in rows])
        tts = np.concatenate([tk for _, tk in rows])
        vals = (tts - T0) / MIN + chans
        order = np.lexsort((chans, tts))
        out = core.feed_arrays(chans[order], tts[order], vals[order])
        out += core.flush(now_ms=int(t[-1]))
        records += sum(m.topic.endswith("/intensity") for m in out)
        peak = max(peak, core.windows.series.data.nbytes)
    cpu = time.process_time() - c
    return peak / 1e6, core.windows.series.data.nbytes / 1e6, records, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    load_kernel()
    print(f"Machine: {describe()}")
    seconds, days = (600, 2) if args.quick else (3600, 7)
    print(f"live, 50 meters at 1 s: {best(args.repeat, lambda: live(seconds)):.1f} us CPU per poll")
    for n in (1, 5):
        us = best(args.repeat, lambda n=n: replay(n, days))  # type: ignore[misc]
        print(f"replay, {n} meter(s), {days} d at 60 s: {us:.0f} us CPU per interval")
    peak, final, records, cpu = outage(10 if args.quick else 40)
    print(
        f"outage of {10 if args.quick else 40} d, 1 of 5 meters: series peak {peak:.2f} MB, "
        f"final {final:.3f} MB, {records} intensity records (revisions included), {cpu:.1f} s"
    )


if __name__ == "__main__":
    main()
