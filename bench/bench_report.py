"""`energy-agent report` from a gateway's history (issue 16): records per second, and
the time for a month of 200 meters at 60 s intervals.

Run: ``.venv/bin/python -m bench.bench_report [--devices 200] [--days 2]``.

Builds a history with the code `run` uses (History.put: energy records as the core
publishes them, and the site's intensity record of six windows every minute, as
`run` stores it) in a temporary directory on this machine's disk (or ``--keep DIR``,
reused when it holds one already), then times the report as the CLI makes it (read,
figures, tables, HTML, XLSX, CSV) and extrapolates to a month and a year by records.
``--ledger`` seals an hourly ledger and times the report with its verification,
in bulk (agent/ledger/bulk.py) and record by record (``--exact``); ``--days 30``
builds a whole month (about 3 GB and 10 minutes for 200 meters).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from agent.config.load import parse_config
from agent.contract import Carrier, MessageKind, Topics, encode, parse_topic
from agent.contract.build import energy_payload, intensity_payload, window_values
from agent.history.writer import History, new_record
from agent.report.build import make_report
from agent.report.output import write_report
from agent.report.period import parse_period
from agent.report.sources import HistorySource
from bench.machine import describe

MIN = 60_000
TOPICS = Topics("energy/v1", "plant-a", "gw-01")


def config_text(devices: int, state: Path) -> str:
    lines = [
        "site: {id: plant-a, timezone: Asia/Shanghai}",
        "gateway: {id: gw-01}",
        "buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 502}}]",
        "devices:",
    ]
    for d in range(devices):
        parent = "" if d < 10 else f", parent: m{d % 10:03d}"
        lines.append(
            f"  - {{id: m{d:03d}, bus: bus-1, unit: {d % 250 + 1}{parent}, "
            "registers: [{quantity: energy_import_kwh, table: input, address: 0, "
            "type: float64}]}"
        )
    lines.append(f"state_dir: {state}")
    lines.append("report: {tariff: example-cn-tou}")
    return "\n".join(lines) + "\n"


def build(state: Path, devices: int, start_ms: int, minutes: int) -> int:
    history = History(state / "history.db", max_bytes=2**40, retention_months=240)
    n = 0
    batch = []
    try:
        for k in range(1, minutes + 1):
            ts = start_ms + k * MIN
            for d in range(devices):
                kwh = 0.5 + d / 100 + (k % 60) / 600
                p = energy_payload(
                    ts=ts, interval_s=60, carrier=Carrier.ELECTRICITY, energy_kwh=kwh,
                    co2_kg=kwh * 0.5703, ef_kg_per_kwh=0.5703, quality="measured",
                    **({"unmetered_kwh": kwh / 2} if d < 10 else {}),
                )  # fmt: skip
                m = TOPICS.message(MessageKind.ENERGY, p, f"m{d:03d}")
                batch.append(new_record(parse_topic(m.topic), m.topic, p, encode(p)))
            # The site's record of the minute: six windows, as core/site.py writes them.
            kwh = 10 * (0.5 + (k % 60) / 600)
            windows = {
                w: window_values(
                    kwh * n, kwh * n * 0.5703, 0.0, kwh * n * 0.1229, (0.98, 0.01, 0.01),
                    (1, ["m007"]),
                )
                for w, n in (("1m", 1), ("15m", 15), ("1h", 60), ("24h", 1440),
                             ("today", k % 1440 + 1), ("month", k))
            }  # fmt: skip
            p = intensity_payload(ts, windows)
            m = TOPICS.message(MessageKind.INTENSITY, p)
            batch.append(new_record(parse_topic(m.topic), m.topic, p, encode(p)))
            if len(batch) >= 50_000:
                history.put(batch)
                n += len(batch)
                batch = []
        history.put(batch)
        n += len(batch)
    finally:
        history.close()
    return n


def timed_report(
    config, state: Path, period, out: Path, *, use_rollup: bool
) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(verification, read + figures, files) in seconds: the report as the CLI makes it,
    the ledger's verification timed on its own (make_report is then given its result)."""
    source = HistorySource(state, prefix="energy/v1", use_rollup=use_rollup)
    try:
        t = time.perf_counter()
        verdict = source.verification(period.start_ms, period.end_ms)
        verify = time.perf_counter() - t
        source.verification = lambda start_ms, end_ms: verdict  # type: ignore[method-assign]
        t = time.perf_counter()
        report = make_report(config, source, period, config_file=None, now_ms=0)
        figures = time.perf_counter() - t
        t = time.perf_counter()
        write_report(report, out, "en")
        written = time.perf_counter() - t
    finally:
        source.close()
    return verify, figures, written


def cli_report(
    config_file: Path, state: Path, period_text: str, out: Path, *, exact: bool
) -> tuple[float, float]:
    """(wall, CPU) seconds of `energy-agent report --history` in a fresh process, as an
    admin or the scheduled run starts it: imports, numba's cached kernels, the ledger's
    verification, the figures and the files. ``exact``: the ledger verified record by
    record (ENERGY_AGENT_NUMBA=off keeps the bulk kernels out)."""
    import os
    import resource
    import subprocess
    import sys

    env = dict(os.environ)
    if exact:
        env["ENERGY_AGENT_NUMBA"] = "off"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "report", "-c", str(config_file), "--history",
         str(state), "--period", period_text, "--out", str(out)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def backfill(state: Path) -> float:
    """Seconds to back-fill the rollup of a history written before it (the agent's open)."""
    import sqlite3

    from agent.history import rollup

    db = sqlite3.connect(state / "history.db")
    with db:
        db.execute("DELETE FROM rollup")
        db.execute("DELETE FROM meta WHERE name = ?", (rollup.ROLLUP_VERSION,))
    db.close()
    history = History(state / "history.db", max_bytes=2**40, retention_months=240)
    t = time.perf_counter()
    history.reader  # noqa: B018  (opens the file: the back-fill)
    took = time.perf_counter() - t
    history.close()
    return took


def seal(state: Path, start_ms: int, end_ms: int) -> float:
    """An hourly ledger over the history, as the agent seals it; seconds taken."""
    from agent.ledger import keys
    from agent.ledger.sealer import Sealer

    keys.init(state)
    history = History(state / "history.db", max_bytes=2**40, retention_months=240)
    t = time.perf_counter()
    try:
        sealer = Sealer(history, state, site="plant-a", gateway="gw-01", period_s=3600, delay_s=0)
        sealer.start(start_ms)
        while sealer.seal(end_ms + 1):
            pass
    finally:
        history.close()
    return time.perf_counter() - t


def _verify_span(args: tuple[str, int, int]) -> tuple[int, int]:
    """One worker's share: its hours verified on their own (a process of its own)."""
    state, start_ms, end_ms = args
    source = HistorySource(Path(state), prefix="energy/v1", use_rollup=False)
    try:
        v = source.verification(start_ms, end_ms)
    finally:
        source.close()
    return v.count("verified"), len(v.problems)


def pooled(state: Path, start_ms: int, end_ms: int, workers: int) -> tuple[float, int]:
    """Seconds to verify the span's hours split over ``workers`` processes (start-up
    included), and the hours verified."""
    from concurrent.futures import ProcessPoolExecutor

    hour = 3_600_000
    hours = (end_ms - start_ms) // hour
    cuts = [start_ms + hours * k // workers * hour for k in range(workers)] + [end_ms]
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        got = list(ex.map(_verify_span, [(str(state), a, b) for a, b in pairwise(cuts)]))
    return time.perf_counter() - t, sum(v for v, _ in got)


#: One verification of the span, timed in a fresh process of a given checkout.
_TIMED_VERIFY = """
import sys, time
from pathlib import Path
from agent.report.sources import HistorySource
state, start, end = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
source = HistorySource(state, prefix="energy/v1", use_rollup=True)
t, c = time.perf_counter(), time.process_time()
v = source.verification(start, end)
print(time.perf_counter() - t, time.process_time() - c, v.count("verified"), len(v.problems))
"""


def against(state: Path, start_ms: int, end_ms: int, other: Path, repeat: int, n: int) -> None:
    """The verification of this checkout and of ``other`` (another checkout of the
    project: the code before a change), each in its own process, alternating on the
    same history, so that both see the same load."""
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent.parent
    for k in range(repeat):
        for name, root in (("this checkout", here), (str(other), other)):
            env = {**os.environ, "PYTHONPATH": str(root)}
            out = subprocess.run(
                [sys.executable, "-c", _TIMED_VERIFY, str(state), str(start_ms), str(end_ms)],
                env=env, cwd=root, check=True, capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            wall, cpu = float(out[0]), float(out[1])
            print(
                f"  [{k + 1}] verification, {name}: {wall:.2f} s wall, {cpu:.2f} s CPU "
                f"({cpu / n * 1e6:.1f} µs a record; {out[2]} hours verified, {out[3]} problems; "
                f"load {os.getloadavg()[0]:.1f})"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument(
        "--source", choices=("both", "rollup", "records"), default="both",
        help="read the quarter-hour rollup, every record, or both (default)",
    )  # fmt: skip
    ap.add_argument(
        "--ledger", action="store_true",
        help="seal an hourly ledger over the history and time its verification",
    )  # fmt: skip
    ap.add_argument(
        "--workers", type=int, default=0,
        help="with --ledger: also verify the period's hours split over this many processes",
    )  # fmt: skip
    ap.add_argument(
        "--against", type=Path, default=None,
        help="with --ledger: time the verification of this checkout and of this other one "
        "(e.g. main's) alternately on the same history",
    )  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="--against, --cli: rounds")
    ap.add_argument(
        "--keep", type=Path, default=None,
        help="build the history in this directory and keep it (reused if it holds one)",
    )  # fmt: skip
    ap.add_argument(
        "--cli", action="store_true",
        help="time `energy-agent report` in fresh processes (with --ledger: in bulk, and "
        "record by record with --exact)",
    )  # fmt: skip
    ap.add_argument("--exact", action="store_true", help="--cli: also record by record")
    ap.add_argument(
        "--backfill", action="store_true",
        help="drop the rollup and time its back-fill when the history is opened again",
    )  # fmt: skip
    args = ap.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        state = (args.keep or Path(tmp)) / "state"
        state.mkdir(parents=True, exist_ok=True)
        config = parse_config(config_text(args.devices, state), "bench.yaml")
        config_file = state.parent / "bench.yaml"
        config_file.write_text(config_text(args.devices, state), encoding="utf-8")
        days = args.days
        if days in (30, 365):
            text = "2026-11" if days == 30 else "2026"  # a month, or a year
        else:
            text = f"2026-11-01..2026-11-{days:02d}"
        period = parse_period(text, "Asia/Shanghai")
        if (state / "history.db").exists():
            n = days * 1440 * (args.devices + 1)
            print(f"history: kept in {state} ({n:,} records)")
        else:
            t = time.perf_counter()
            n = build(state, args.devices, period.start_ms, days * 1440)
            built = time.perf_counter() - t
            size = (state / "history.db").stat().st_size
            print(
                f"history: {n:,} records in {built:.1f} s ({built / n * 1e6:.1f} µs a record, "
                f"rollup included), {size / 1e6:.0f} MB"
            )
            if args.ledger:
                sealed = seal(state, period.start_ms, period.end_ms)
                print(f"ledger: {days * 24} hourly entries sealed in {sealed:.1f} s")
        if args.backfill:
            print(f"back-fill of the rollup (a history from before it): {backfill(state):.1f} s")
        if args.cli:
            import os

            for k in range(args.repeat):
                for exact in (False, True) if args.exact else (False,):
                    wall, cpu = cli_report(
                        config_file, state, text, Path(tmp) / f"cli-{k}-{exact}", exact=exact
                    )
                    how = "record by record" if exact else "in bulk"
                    print(
                        f"  [{k + 1}] `energy-agent report --period {text}`, ledger verified "
                        f"{how}: {wall:.2f} s wall, {cpu:.2f} s CPU (load "
                        f"{os.getloadavg()[0]:.1f})"
                    )
            return
        if args.ledger:
            if args.against is not None:
                against(state, period.start_ms, period.end_ms, args.against, args.repeat, n)
            if args.workers:
                took, hours = pooled(state, period.start_ms, period.end_ms, args.workers)
                print(
                    f"  verification over {args.workers} processes: {took:.2f} s "
                    f"({hours} hours verified), {took / n * 1e6:.1f} µs a record; "
                    f"a month {took / n * 30 * 1440 * args.devices:.0f} s"
                )
        month = 30 * 1440 * args.devices
        for use_rollup in (True, False):
            name = "rollup" if use_rollup else "records"
            if args.source not in ("both", name):
                continue
            verify, figures, written = timed_report(
                config, state, period, Path(tmp) / f"out-{name}", use_rollup=use_rollup
            )
            per = (figures + written) / n
            print(
                f"report of {text} from the {name}: read + figures {figures:.2f} s, files "
                f"{written:.2f} s; extrapolated by records to a month of {args.devices} meters "
                f"at 60 s ({month:,} records) {per * month:.1f} s, a year "
                f"{per * month * 365 / 30:.0f} s"
            )
            if args.ledger:
                print(
                    f"  verification of the ledger ({name}): {verify:.2f} s, "
                    f"{verify / n * 1e6:.1f} µs a record; a month {verify / n * month:.0f} s"
                )


if __name__ == "__main__":
    main()
