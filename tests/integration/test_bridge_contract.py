"""What the bridge acknowledges is in the database: real mosquitto, bridge and victoria-metrics.

VictoriaMetrics answers 204 to a write even when it drops a line (an integer
beyond int64, a timestamp two days ahead, one older than its retention), so a
bridge that trusts the status can acknowledge a point that was never stored.
These tests publish the contract's edges and a sample of the fuzz test's
payloads through the real bridge, then read back every point: each message is
either in the database, exactly, or in the dead-letter topic with a reason.
They also run victoria-metrics with the flags deploy/ ships, and show what
deduplication is for.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shlex
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bridge.consumer import max_packet_size
from agent.bridge.validate import Reason
from agent.config.bridge import BridgeSettings
from agent.contract import (
    WINDOW_RANGES,
    Carrier,
    Message,
    encode,
    energy_payload,
    energy_ranges,
    measurements_payload,
)
from agent.contract.plausible import SEQ_MAX, VALUE_RANGES
from tests.support import payload_fuzz as fuzz
from tests.support.bridge import (
    PREFIX,
    Stack,
    VictoriaMetrics,
    assert_same_points,
    expected_points,
    have_victoria_metrics,
    wait_until,
)
from tests.support.cli import ROOT, Cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_victoria_metrics(), reason="apt-get install victoria-metrics"),
]

DEFAULTS_FILE = ROOT / "deploy" / "victoria-metrics" / "victoria-metrics.default"
#: The bridge's payload limit in these tests (its default).
LIMIT = BridgeSettings.model_fields["max_payload_bytes"].default


def shipped_vm_flags() -> list[str]:
    """The flags deploy/ ships, less the data path (each test has its own)."""
    text = DEFAULTS_FILE.read_text()
    (args,) = re.findall(r'^ARGS="([^"]*)"$', text, re.MULTILINE)
    flags = [f for f in shlex.split(args) if not f.startswith("-storageDataPath=")]
    return [*flags, "-search.latencyOffset=0s"]  # read back at once, not after 30 s


@pytest.fixture
async def stack(tmp_path: Path, ports: Callable[[], int], cli: Cli) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, ports, cli.command, vm_flags=shipped_vm_flags()) as s:
        yield s


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the contract's edges ------------------------------------------------------------------------

Case = tuple[str, str, bytes, str]  # (what, leaf topic, payload, "accepted" or the reason)


def at_every_bound(now: int, pick: int) -> bytes:
    """Every canonical quantity at its lower (pick 0) or upper (pick 1) bound."""
    values = {k: bounds[pick] for k, bounds in VALUE_RANGES.items()}
    return encode(measurements_payload(now, SEQ_MAX, values))


def edge_cases(now: int) -> list[Case]:
    """Each case gets a device (or gateway) of its own, so no two share a series."""
    ceiling = energy_ranges(60)
    kwh = ceiling["energy_kwh"][1] * (1 - 1e-12)
    month = WINDOW_RANGES["month"]
    window = {k: bounds[1] for k, bounds in month.items()}
    meas = {"ts": now, "seq": 1, "values": {"active_power_kw": 1.5}}

    def m(**changes: object) -> bytes:
        return json.dumps({**meas, **changes}).encode()

    def e(**changes: object) -> bytes:
        doc = energy_payload(
            ts=now,
            interval_s=60,
            carrier=Carrier.ELECTRICITY,
            energy_kwh=1.0,
            co2_kg=0.57,
            ef_kg_per_kwh=0.57,
            quality="measured",
            unmetered_kwh=0.1,
        )
        return json.dumps({**doc, **changes}).encode()

    return [
        (
            "every quantity at its upper bound, seq 2^53",
            "measurements",
            at_every_bound(now, 1),
            "accepted",
        ),
        ("every quantity at its lower bound", "measurements", at_every_bound(now, 0), "accepted"),
        (
            "1e-300 kW and 1e+18 units",
            "measurements",
            m(values={"active_power_kw": 1e-300, "output_units": 1e18}),
            "accepted",
        ),
        ("seq 0", "measurements", m(seq=0), "accepted"),
        ("ts 299 s ahead", "measurements", m(ts=now + 299_000), "accepted"),
        ("ts 30 days old", "measurements", m(ts=now - 30 * 86_400_000), "accepted"),
        (
            "energy at the 100 GW ceiling",
            "energy",
            e(
                energy_kwh=kwh,
                avg_power_kw=1e8,
                co2_kg=kwh * 100,
                ef_kg_per_kwh=100.0,
                unmetered_kwh=-kwh,
            ),
            "accepted",
        ),
        (
            "a month window at every ceiling",
            "intensity",
            json.dumps({"ts": now, "windows": {"month": window}}).encode(),
            "accepted",
        ),
        ("seq 2^53 + 1", "measurements", m(seq=SEQ_MAX + 1), Reason.INVALID.value),
        ("seq 2^63", "measurements", m(seq=2**63), Reason.INVALID.value),
        ("seq 2^64", "measurements", m(seq=2**64), Reason.INVALID.value),
        ("-1e6 kWh", "energy", e(energy_kwh=-1e6), Reason.IMPLAUSIBLE.value),
        ("1e300 kWh", "energy", e(energy_kwh=1e300), Reason.IMPLAUSIBLE.value),
        ("3.4e38 V", "measurements", m(values={"voltage_l1_v": 3.4e38}), Reason.IMPLAUSIBLE.value),
        (
            "10,000 value keys",
            "measurements",
            m(values={f"q{i}": 1.0 for i in range(10_000)}),
            Reason.INVALID.value,
        ),
        ("ts 0", "measurements", m(ts=0), Reason.TS_OUT_OF_WINDOW.value),
        (
            "ts two days ahead",
            "measurements",
            m(ts=now + 2 * 86_400_000 + 60_000),
            Reason.TS_OUT_OF_WINDOW.value,
        ),
    ]


def fuzz_sample(now: int) -> list[tuple[str, bytes]]:
    """400 (leaf, payload) pairs from the fuzz test's generators, moved to now."""
    out: list[tuple[str, bytes]] = []
    leaves = ["measurements", "energy", "intensity", "status", "device-status"]

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.tuples(fuzz.valid_bytes, fuzz.payloads))
    def collect(bodies: tuple[bytes, bytes]) -> None:
        """A valid payload (most are written) and one of any shape (most are not)."""
        for body in bodies:
            shifted = re.sub(
                rb'("ts": ?)(\d{13})\b',
                lambda g: g[1] + b"%d" % (int(g[2]) - fuzz.NOW + now),
                body,
            )
            out.append((natural_leaf(shifted) or leaves[len(out) % len(leaves)], shifted))

    collect()
    return out


#: A payload's telltale key and the topic it belongs on.
_TELLTALE = {
    "values": "measurements",
    "interval_s": "energy",
    "windows": "intensity",
    "version": "status",
    "error": "device-status",
}


def natural_leaf(body: bytes) -> str | None:
    """The topic a payload was made for, when it still says so."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    return next((leaf for key, leaf in _TELLTALE.items() if key in doc), None)


def topic_for(i: int, leaf: str) -> str:
    """A gateway and device of its own for message i."""
    base = f"{PREFIX}/plant-x/g{i:04d}"
    return {
        "measurements": f"{base}/d/measurements",
        "energy": f"{base}/d/energy",
        "intensity": f"{base}/intensity",
        "status": f"{base}/status",
        "device-status": f"{base}/d/status",
    }[leaf]


async def test_every_acknowledged_point_reads_back_and_every_other_is_dead_lettered(
    stack: Stack,
) -> None:
    bridge = stack.bridge(batch_size=100, flush_interval_ms=100)
    bridge.start()
    await bridge.wait_ready()
    dead = stack.recorder()
    await dead.ready()
    now = now_ms()
    cases = edge_cases(now)
    sample = fuzz_sample(now)
    published = [(topic_for(i, leaf), body) for i, (_, leaf, body, _) in enumerate(cases)]
    published += [(topic_for(len(cases) + i, leaf), body) for i, (leaf, body) in enumerate(sample)]
    assert len(published) >= 300
    await stack.publisher().publish_all(published)
    # Over twice the payload limit a message is never sent to the bridge (the maximum
    # packet size it announces): no dead letter, nothing written. Nothing in between.
    limit = LIMIT * 2
    assert not [b for _, b in published if limit < len(b) <= max_packet_size(LIMIT)]
    never_sent = {t for t, b in published if len(b) > limit}
    published = [(t, b) for t, b in published if t not in never_sent]

    def settled() -> bool:
        m = bridge.metrics()
        rejects = sum(v for k, v in m.items() if k.startswith("energy_bridge_rejects_total"))
        done = m.get("energy_bridge_messages_written_total", 0) + rejects
        return done >= len(published) and len(dead.messages) >= rejects

    try:
        await wait_until(settled, 120, "every message written or dead-lettered")
    except AssertionError:
        print(bridge.metrics(), len(dead.messages), bridge.output()[-5000:])
        raise
    assert bridge.alive(), bridge.output()[-3000:]

    letters = {d["topic"]: d for d in dead.payloads()}
    reasons = {r.value for r in Reason}
    for d in letters.values():
        assert d["reason"] in reasons and d["detail"], d
    for i, (what, leaf, _, verdict) in enumerate(cases):
        letter = letters.get(topic_for(i, leaf))
        assert (letter["reason"] if letter else "accepted") == verdict, (what, letter)

    # Everything not dead-lettered was acknowledged as written: it must all be there.
    accepted = [
        Message.from_json_line({"topic": topic, "payload": json.loads(body)}, PREFIX)
        for topic, body in published
        if topic not in letters
    ]
    assert len(accepted) >= 100, f"only {len(accepted)} accepted: the sample is too hostile"
    metrics = bridge.metrics()
    assert metrics["energy_bridge_messages_written_total"] == len(accepted)
    assert metrics["energy_bridge_acks_total"] == len(published)
    assert metrics["energy_bridge_messages_received_total"] == len(published)
    assert not never_sent & set(letters)
    assert_same_points(await stack.vm.points(), expected_points(accepted))


async def test_a_record_delivered_twice_is_one_sample_with_the_shipped_flags(
    stack: Stack, ports: Callable[[], int], tmp_path: Path
) -> None:
    """A redelivery (a crash before the ack, a broker reconnect) writes a record again.
    With deploy/'s flags victoria-metrics keeps one sample, as InfluxDB does; without
    -dedup.minScrapeInterval it keeps both and a month's sum counts the record twice."""
    flags = shipped_vm_flags()
    assert "-dedup.minScrapeInterval=1ms" in flags
    plain = VictoriaMetrics(
        ports(), tmp_path / "vm-plain", [f for f in flags if "dedup" not in f], ports=ports
    )
    await plain.start()
    try:
        shipped = stack.bridge("bridge-shipped", group="shipped")
        undeduped = stack.bridge("bridge-plain", influx_url=plain.url, group="plain")
        for b in (shipped, undeduped):
            b.start()
            await b.wait_ready()
        now = now_ms()
        record = energy_payload(
            ts=now - now % 60_000,
            interval_s=60,
            carrier=Carrier.ELECTRICITY,
            energy_kwh=2.5,
            co2_kg=1.425,
            ef_kg_per_kwh=0.57,
            quality="measured",
        )
        body = encode(record)
        topic = f"{PREFIX}/plant-a/gw-01/press-1/energy"
        pub = stack.publisher()
        for _ in range(2):  # two deliveries, each written in its own batch
            n = await asyncio.to_thread(shipped.metrics)
            await pub.publish_all([(topic, body)])
            await shipped.wait_metric(
                "energy_bridge_messages_written_total",
                n.get("energy_bridge_messages_written_total", 0) + 1,
            )
        await undeduped.wait_metric("energy_bridge_messages_written_total", 2)

        def kwh(points: list[Any]) -> list[float]:
            return [p[3] for p in points if p[0] == "energy_energy_kwh"]

        assert kwh(await stack.vm.points()) == [2.5]
        assert kwh(await plain.points()) == [2.5, 2.5]
    finally:
        await plain.stop()


async def test_the_bridge_is_never_sent_more_than_it_would_accept(stack: Stack) -> None:
    """paho holds a whole packet in memory before anyone can look at it: a 200 MB message
    took the bridge to 545 MB. The bridge announces a Maximum Packet Size when it
    connects, so a broker without limits of its own (this one) drops a 40 MB message
    for it instead; the bridge's peak memory does not move and the next message is
    written as usual."""
    bridge = stack.bridge(batch_size=10, flush_interval_ms=100)
    bridge.start()
    await bridge.wait_ready()
    pub = stack.publisher()
    now = now_ms()
    topic = f"{PREFIX}/plant-a/gw-01/press-1/measurements"
    first = encode(measurements_payload(now - 1000, 1, {"active_power_kw": 1.0}))
    await pub.publish_all([(topic, first)])
    await bridge.wait_metric("energy_bridge_messages_written_total", 1)
    before = bridge.peak_rss_mb()
    huge = first[:-2] + b" " * 40_000_000 + first[-2:]
    after = encode(measurements_payload(now, 2, {"active_power_kw": 2.0}))
    await pub.publish_all([(topic, huge), (topic, after)])
    await bridge.wait_metric("energy_bridge_messages_written_total", 2)
    received = await bridge.metric("energy_bridge_messages_received_total")
    peak = bridge.peak_rss_mb()
    assert received == 2, "the 40 MB message reached the bridge"
    assert peak - before < 10, f"peak memory {before:.0f} -> {peak:.0f} MB"
    assert math.isclose(
        sum(p[3] for p in await stack.vm.points() if p[0] == "measurements_active_power_kw"), 3.0
    )
