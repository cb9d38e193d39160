"""The history and the ledger's cost (issue 15): on the gateway per record and per period,
at the bridge per record verified.

Run: ``.venv/bin/python -m bench.bench_ledger [--quick]`` (about a minute).

Gateway, with the code `run` uses (History, Sealer) in a temporary directory on
this machine's disk:

* **storing**: records put into the history as the agent's commit does, one
  transaction (fsync'd) per interval close holding that interval's records (an
  energy record per meter and the intensity record), per record and per commit;
* **sealing**: one period's entry (read the period's records back, work out
  their canonical lines from the published bytes, two hashes, sign, store),
  for an hour of 12 and of 50 meters at 60 s intervals: per period and per record.

Bridge: one cover's energy hash recomputed from database points (what
:mod:`agent.bridge.ledger` does after reading them back), per record; and, if
victoria-metrics is installed, the read-back from a real VictoriaMetrics too
(``/api/v1/export`` on loopback) for an hour of 50 meters.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from agent.contract import Carrier, MessageKind, TopicRef, Topics, encode
from agent.contract.build import energy_payload, intensity_payload, window_values
from agent.history.writer import History, NewRecord, new_record
from agent.ledger import keys
from agent.ledger.canonical import digest, lines_of_points
from agent.ledger.points import written_points
from agent.ledger.sealer import Sealer
from bench.machine import describe

MIN = 60_000
HOUR = 3_600_000
T0 = 1_750_000_000_000 // HOUR * HOUR
SITE, GW = "plant-a", "gw-01"
TOPICS = Topics("energy/v1", SITE, GW)
WINDOWS = ("1m", "15m", "1h", "24h", "today", "month")


def interval(k: int, meters: int) -> list[tuple[TopicRef, str, dict[str, object]]]:
    """What one interval close publishes: an energy record per meter, one intensity."""
    ts = T0 + (k + 1) * MIN
    out: list[tuple[TopicRef, str, dict[str, object]]] = []
    for m in range(meters):
        dev = f"press-{m:02d}"
        kwh = 0.5 + m / 7 + k / 1000
        p = energy_payload(
            ts=ts, interval_s=60, carrier=Carrier.ELECTRICITY, energy_kwh=kwh,
            co2_kg=kwh * 0.5703, ef_kg_per_kwh=0.5703, quality="measured",
        )  # fmt: skip
        out.append(
            (TopicRef(MessageKind.ENERGY, SITE, GW, dev), TOPICS.topic(MessageKind.ENERGY, dev), p)
        )
    w = {n: window_values(123.4 + k, 70.3 + k, 12.0, 15.2) for n in WINDOWS}
    out.append(
        (
            TopicRef(MessageKind.INTENSITY, SITE, GW),
            TOPICS.topic(MessageKind.INTENSITY),
            intensity_payload(ts, w),
        )
    )
    return out


def records(k: int, meters: int) -> list[NewRecord]:
    return [new_record(ref, topic, p, encode(p)) for ref, topic, p in interval(k, meters)]


def gateway(meters: int, tmp: Path) -> dict[str, float]:
    state = tmp / f"gw-{meters}"
    keys.init(state)
    history = History(state / "history.db", max_bytes=2**34, retention_months=25)
    sealer = Sealer(history, state, site=SITE, gateway=GW, period_s=3600, delay_s=150)
    sealer.start(T0 + 1000)
    per_commit = []
    made = 0.0
    for k in range(60):  # one hour of intervals
        started = time.perf_counter()
        batch = records(k, meters)
        made += time.perf_counter() - started
        started = time.perf_counter()
        history.put(batch)
        per_commit.append(time.perf_counter() - started)
    n = 60 * (meters + 1)
    started = time.perf_counter()
    (entry,) = sealer.seal(T0 + HOUR + 150_000)
    seal = time.perf_counter() - started
    history.close()
    return {
        "records": n,
        "commit_ms": statistics.median(per_commit) * 1000,
        "store_us_per_record": (sum(per_commit) + made) / n * 1e6,
        "seal_ms": seal * 1000,
        "seal_us_per_record": seal / n * 1e6,
        "entry_bytes": len(entry.payload),
    }


def bridge_hash(meters: int) -> dict[str, float]:
    points = [
        p
        for k in range(60)
        for ref, _, payload in interval(k, meters)
        if ref.kind is MessageKind.ENERGY
        for p in written_points(ref, payload)
    ]
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        digest(lines_of_points(points))
        runs.append(time.perf_counter() - started)
    return {"records": len(points), "us_per_record": min(runs) / len(points) * 1e6}


def _write(url: str, body: bytes) -> None:
    req = urllib.request.Request(f"{url}/api/v2/write?precision=ms", data=body, method="POST")
    urllib.request.urlopen(req, timeout=30).read()
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=30).read()


async def vm_read_back(meters: int, tmp: Path) -> dict[str, float] | None:
    from agent.bridge.lineproto import line
    from agent.store.victoria import VictoriaMetricsStore
    from tests.support.bridge import VictoriaMetrics, have_victoria_metrics
    from tests.support.cli import free_port

    if not have_victoria_metrics():
        return None
    vm = VictoriaMetrics(free_port(), tmp / "vm")
    await vm.start()
    try:
        lines = [
            line(p.measurement, p.tags, p.fields, p.ts)
            for k in range(60)
            for ref, _, payload in interval(k, meters)
            if ref.kind is MessageKind.ENERGY
            for p in written_points(ref, payload)
        ]
        await asyncio.to_thread(_write, vm.url, "\n".join(lines).encode())
        store = VictoriaMetricsStore(vm.url)
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            pts = store.points("energy", SITE, GW, T0, T0 + HOUR)
            digest(lines_of_points(pts))
            runs.append(time.perf_counter() - started)
        assert len(pts) == len(lines), (len(pts), len(lines))
        return {
            "records": len(lines),
            "ms": min(runs) * 1000,
            "us_per_record": min(runs) / len(lines) * 1e6,
        }
    finally:
        await vm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="12 meters only")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    fleets = (12,) if args.quick else (12, 50)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for meters in fleets:
            g = gateway(meters, tmp)
            print(
                f"gateway, {meters} meters, 60 s intervals, one hour: {g['records']:.0f} records; "
                f"commit (one interval close, fsync) {g['commit_ms']:.2f} ms median, "
                f"{g['store_us_per_record']:.0f} us per record stored; seal {g['seal_ms']:.1f} ms "
                f"({g['seal_us_per_record']:.0f} us per record), entry {g['entry_bytes']:.0f} bytes"
            )
        for meters in fleets:
            b = bridge_hash(meters)
            print(
                f"bridge, hash of {b['records']:.0f} energy points read back: "
                f"{b['us_per_record']:.1f} us per record"
            )
        vm = asyncio.run(vm_read_back(fleets[-1], tmp))
        if vm is not None:
            print(
                f"bridge, VictoriaMetrics export + hash, {vm['records']:.0f} records: "
                f"{vm['ms']:.0f} ms ({vm['us_per_record']:.1f} us per record)"
            )


if __name__ == "__main__":
    main()
