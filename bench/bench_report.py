"""`energy-agent report` from a gateway's history (issue 16): records per second, and
the time for a month of 200 meters at 60 s intervals.

Run: ``.venv/bin/python -m bench.bench_report [--devices 200] [--days 2]``.

Builds a history with the code `run` uses (History.put, energy records as the
core publishes them) in a temporary directory on this machine's disk, then times
the report as the CLI makes it (read, figures, tables, HTML, XLSX, CSV; the
ledger's verification is left out: this history has no ledger) and extrapolates
to a month and a year by records (the work is linear in them; the disk would need
about 3 GB for a month of 200 meters, so the benchmark does not build one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agent.config.load import parse_config
from agent.contract import Carrier, MessageKind, Topics, encode, parse_topic
from agent.contract.build import energy_payload
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
            if len(batch) >= 50_000:
                history.put(batch)
                n += len(batch)
                batch = []
        history.put(batch)
        n += len(batch)
    finally:
        history.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--days", type=int, default=2)
    args = ap.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        config = parse_config(config_text(args.devices, state), "bench.yaml")
        days = args.days
        text = f"2026-11-01..2026-11-{days:02d}"
        period = parse_period(text, "Asia/Shanghai")
        t = time.perf_counter()
        n = build(state, args.devices, period.start_ms, days * 1440)
        built = time.perf_counter() - t
        size = (state / "history.db").stat().st_size
        print(f"history: {n:,} records in {built:.1f} s, {size / 1e6:.0f} MB")
        source = HistorySource(state, prefix="energy/v1")
        t = time.perf_counter()
        report = make_report(config, source, period, config_file=None, now_ms=0)
        figures = time.perf_counter() - t
        t = time.perf_counter()
        write_report(report, Path(tmp) / "out", "en")
        written = time.perf_counter() - t
        source.close()
        per = (figures + written) / n
        print(
            f"report of {text}: read + figures {figures:.2f} s, files {written:.2f} s; "
            f"{n / (figures + written):,.0f} records/s"
        )
        month = 30 * 1440 * args.devices
        print(
            f"extrapolated: a month of {args.devices} meters at 60 s ({month:,} records) "
            f"{per * month:.1f} s; a year {per * month * 365 / 30:.0f} s"
        )


if __name__ == "__main__":
    main()
