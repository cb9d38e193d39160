"""A full ``state_dir``: SQLite on a small tmpfs filled to the last byte, a real mosquitto.

The agent runs as ``energy-agent run`` with its state directory on a tmpfs of its
own (mounted and unmounted by the ``state_fs`` fixture; root is needed, as it is in
CI's container). Filling the tmpfs with a file makes every outbox write fail as
on a real gateway whose disk filled up. What a user checks:

* with the broker up, live data keeps arriving at the broker, and the page,
  ``/api/state``, ``/metrics``, ``status`` (exit 1) and the log say the disk fails;
* when the disk has room again everything held is stored or sent, and the energy
  records add up to the meter's counter through a ``kill -9`` and a restart; the
  history holds every record once, those sent from memory included;
* SIGTERM on a full disk sends what memory holds and exits 0 without a traceback;
  with the broker down too it says how many messages are lost and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.runtime.outbox import Entry, Item, Kind, OutboxError, SqliteOutbox, StorageGuard
from tests.support.cli import Cli, free_port
from tests.support.mqtt import (
    Received,
    agent_config,
    have_mosquitto,
    next_boundary,
    wait_until,
)
from tests.support.run_rig import (
    Rig,
    by_device,
    check_contract,
    check_energy_stream,
    check_measurements_complete,
    device,
    interpolate,
    record_truth,
    tcp_bus,
)
from tests.support.simulators import Simulators

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

CHROMIUM = "/usr/bin/chromium"


# --- a disk of its own ---------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if done.returncode != 0:  # still open (a failed test's database): detach it anyway
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system has not a byte left; returns it."""
    path = directory / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = 1 << 16
    try:
        while block:
            try:
                os.write(fd, b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                block //= 2
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return path


@pytest.fixture(scope="module")
def numba_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("numba-cache")


@pytest.fixture
def state_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "state", "8m") as path:
        yield path


@pytest_asyncio.fixture
async def rig(state_fs: Path, tmp_path: Path, cli: Cli, numba_cache: Path) -> AsyncIterator[Rig]:
    """After ``state_fs``: the agents it started are gone before the tmpfs is unmounted."""
    r = Rig(tmp_path, list(cli.command), numba_cache)
    try:
        yield r
    finally:
        print(r.report())
        await r.close()


# --- what a user looks at ------------------------------------------------------------------


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


async def state(base: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.to_thread(_get, base + "api/state"))
    return doc


async def wait_state(base: str, predicate: Any, within: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(OSError):
            doc = await state(base)
            if predicate(doc):
                return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.2)


def _page_alert(url: str) -> str:
    """The storage banner's text as headless chromium renders the live page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#alert-storage", timeout=30_000)
            text: str = page.inner_text("#alert-storage")
            return text
        finally:
            browser.close()


@dataclass(frozen=True)
class Gateway:
    """One simulated meter polled every second, and the config of the agent that reads it."""

    config: Path
    #: The agent's page, /api/state and /metrics.
    base: str
    #: The meter's counter as it advanced (see test_run.record_truth).
    truth: list[tuple[float, float]]


async def one_meter(rig: Rig, simulators: Simulators, broker_port: int, state_dir: Path) -> Gateway:
    sim = await simulators.start(simulators.tcp_endpoint(), {1: "eastron-sdm630"}, frozen=False)
    truth = record_truth(sim, 1)
    http_port = free_port()
    config = agent_config(
        rig.tmp,
        buses=[tcp_bus("line-a", sim)],
        devices=[device("m1", "line-a", 1, "eastron-sdm630", interval_s=1)],
        mqtt={"host": "127.0.0.1", "port": broker_port},
        state_dir=str(state_dir),
        http={"listen": f"127.0.0.1:{http_port}"},
    )
    return Gateway(config, f"http://127.0.0.1:{http_port}/", truth)


def measured(n: int) -> Callable[[list[Received]], bool]:
    return lambda ms: len(by_device(ms, "measurements").get("m1", [])) >= n


def storage_ok(doc: dict[str, Any]) -> bool:
    """What the page says about the disk; a document without a word on it says "ok"."""
    return bool(doc.get("storage", {}).get("ok", True))


def unstored(doc: dict[str, Any]) -> int:
    return int(doc.get("storage", {}).get("unstored", 0))


def measurements_after(ms: list[Received], ts_ms: float) -> list[Received]:
    return [m for m in ms if m.kind == "measurements" and m.json()["ts"] > ts_ms]


def energy_at(ms: list[Received], end_s: float) -> bool:
    return any(r["ts"] == end_s * 1000 for r in by_device(ms, "energy").get("m1", []))


def complete(ms: list[Received]) -> bool:
    """Every measurement seq from 1 to the last arrived."""
    seqs = {p["seq"] for p in by_device(ms, "measurements").get("m1", [])}
    return bool(seqs) and seqs == set(range(1, max(seqs) + 1))


# --- 1. the broker is up: live data goes on, every view says it, recovery loses nothing ------


async def test_a_full_disk_keeps_publishing_says_so_and_recovers_without_loss(
    rig: Rig, simulators: Simulators, state_fs: Path, cli: Cli
) -> None:
    broker = await rig.broker(persistence=True)
    sub = await rig.subscriber(broker.port, "full-disk", persistent=True)
    gw = await one_meter(rig, simulators, broker.port, state_fs)
    base, config, truth = gw.base, gw.config, gw.truth
    agent = rig.agent(config, "agent-1").start()
    await sub.wait_for(measured(3), 60, "measurements")
    await wait_state(base, storage_ok, 10, "the page")

    filled_ms = time.time() * 1000
    filler = fill(state_fs)
    # Live data still reaches the broker, within seconds of the poll.
    ms = await sub.wait_for(
        lambda ms: len(measurements_after(ms, filled_ms + 2000)) >= 5,
        20,
        "live data while the disk is full",
    )
    late = [m.at - m.json()["ts"] / 1000 for m in measurements_after(ms, filled_ms + 2000)]
    assert max(late) < 3.0, late

    doc = await wait_state(base, lambda d: not storage_ok(d), 15, "a storage fault")
    st = doc["storage"]
    assert st["directory"] == str(state_fs) and st["free_bytes"] == 0
    assert st["error"] == "database or disk is full" and st["failures"] >= 1
    assert doc["health"]["state"] == "degraded"
    assert any(p.startswith("storage failing") for p in doc["health"]["problems"])

    status = await cli.run_async("status", "--url", base, time_limit=60)
    assert status.returncode == 1, status
    assert "STORAGE FAILING" in status.stdout and "storage failing" in status.stdout

    metrics = (await asyncio.to_thread(_get, base + "metrics")).decode()
    assert "energy_agent_storage_ok 0.0" in metrics
    assert "energy_agent_unstored_messages " in metrics
    failures = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("energy_agent_storage_failures_total ")
    )
    assert failures >= 1
    assert "energy_agent_storage_free_bytes 0.0" in metrics

    banner = await asyncio.to_thread(_page_alert, base)
    assert banner.startswith("STORAGE FAILING") and str(state_fs) in banner, banner

    # An interval ends while the disk is full: its energy record reaches the broker.
    b1 = next_boundary(time.time())
    await sub.wait_for(lambda ms: energy_at(ms, b1), b1 - time.time() + 20, "the b1 record")
    assert not storage_ok(await state(base))
    log = agent.output()
    said = [line for line in log.splitlines() if "cannot write the outbox in" in line]
    minutes = (time.time() * 1000 - filled_ms) / 60_000
    assert 1 <= len(said) <= minutes + 2, said  # once a minute, not once a second
    assert str(state_fs) in said[0] and "(0 B free)" in said[0], said[0]

    # Room again: what memory held is stored, the snapshot written.
    filler.unlink()
    freed = time.time()
    await wait_state(base, storage_ok, 15, "the disk writable again")
    assert "writable again" in agent.output()
    snapshot = state_fs / "core-snapshot.npz"
    await wait_until(
        lambda: snapshot.stat().st_mtime > freed, 15, "a core snapshot after the recovery"
    )
    # A crash now must not send the b1 interval again with other numbers.
    agent.kill9()
    agent2 = rig.agent(config, "agent-2").start()
    b2 = next_boundary(time.time() + 5)
    await sub.wait_for(lambda ms: energy_at(ms, b2), b2 - time.time() + 40, "the b2 record")
    assert await agent2.terminate() == 0, rig.report()

    received = sub.received()
    check_contract(received, ["m1"])
    records = check_energy_stream(received, "m1")  # no gap, duplicates identical
    stamps = [r["ts"] for r in records]
    assert b1 * 1000 in stamps and stamps[-1] == b2 * 1000, stamps
    check_measurements_complete(received, "m1")  # no seq missing, none reused
    meas = by_device(received, "measurements")["m1"]
    first_ts = min(p["ts"] for p in meas) / 1000
    start = next(v for t, v in truth if t >= first_ts - 0.05)
    total = sum(r["energy_kwh"] for r in records)
    assert total == pytest.approx(interpolate(truth, b2) - start, abs=2e-3), records
    for a in (agent, agent2):
        assert "Traceback" not in a.output(), a.output()
    # The history holds every energy record the broker got, once and the same, the b1
    # record too: sent from memory while the disk was full, acknowledged, and stored in
    # the history when the disk had room again.
    assert history_energy(state_fs) == {r["ts"]: r for r in records}


def history_energy(state_dir: Path) -> dict[int, dict[str, Any]]:
    from agent.history import HISTORY_FILE, HistoryReader

    reader = HistoryReader.open(state_dir / HISTORY_FILE)
    try:
        page = reader.page(0, 2**62, kind="energy", limit=5000)
    finally:
        reader.close()
    stamps = [r.ts for r in page.records]
    assert len(stamps) == len(set(stamps)), stamps
    return {r.ts: json.loads(r.payload) for r in page.records}


# --- 2. SIGTERM on a full disk -----------------------------------------------------------------


async def test_sigterm_on_a_full_disk_sends_what_memory_holds_and_exits_0(
    rig: Rig, simulators: Simulators, state_fs: Path
) -> None:
    broker = await rig.broker(persistence=True)
    sub = await rig.subscriber(broker.port, "sigterm", persistent=True)
    gw = await one_meter(rig, simulators, broker.port, state_fs)
    base = gw.base
    agent = rig.agent(gw.config).start()
    await sub.wait_for(measured(3), 60, "measurements")
    fill(state_fs)
    await wait_state(base, lambda d: not storage_ok(d), 15, "a storage fault")
    # The broker goes away for a while: memory holds what the disk refuses...
    await broker.stop()
    await wait_state(
        base,
        lambda d: not d["mqtt"]["connected"] and unstored(d) >= 5,
        30,
        "messages held in memory while the broker is down",
    )
    await broker.start()
    # ... and sends it when the broker is back, the disk still full.
    await wait_state(base, lambda d: d["mqtt"]["connected"], 30, "the link back")
    await sub.wait_for(complete, 30, "the held measurements")
    stopped = time.time()
    assert await agent.terminate(within=20) == 0, rig.report()
    out = agent.output()
    assert "Traceback" not in out and "exiting with" not in out, out
    received = sub.received()
    payloads = check_measurements_complete(received, "m1")  # nothing held was lost
    assert payloads[-1]["ts"] / 1000 > stopped - 3  # up to the stop
    gateway = [m.json()["state"] for m in received if m.topic.endswith("gw-t/status")]
    assert gateway[-1] == "offline"


async def test_sigterm_on_a_full_disk_with_the_broker_down_says_what_is_lost(
    rig: Rig, simulators: Simulators, state_fs: Path
) -> None:
    broker = await rig.broker()
    gw = await one_meter(rig, simulators, broker.port, state_fs)
    base = gw.base
    agent = rig.agent(gw.config).start()
    await wait_state(base, lambda d: d["mqtt"]["connected"], 60, "the agent connected")
    await broker.stop()
    fill(state_fs)
    doc = await wait_state(base, lambda d: unstored(d) >= 5, 30, "messages held in memory")
    held = unstored(doc)
    code = await agent.terminate(within=30)
    out = agent.output()
    assert code == 1, out  # documented: messages were lost at the exit
    assert "Traceback" not in out, out
    (line,) = [x for x in out.splitlines() if "exiting with" in x]
    lost = int(line.split("exiting with ")[1].split()[0])
    assert lost >= held, (lost, held)
    assert "neither stored nor acknowledged by the broker" in line and str(state_fs) in line


async def test_a_restart_on_a_full_disk_runs_from_memory_until_there_is_room(
    rig: Rig, simulators: Simulators, state_fs: Path
) -> None:
    """SQLite cannot even open its files on a full disk: the agent still starts,
    publishes from memory, says so, and opens the outbox once there is room."""
    broker = await rig.broker()
    sub = await rig.subscriber(broker.port, "restart")
    gw = await one_meter(rig, simulators, broker.port, state_fs)
    base, config = gw.base, gw.config
    first = rig.agent(config, "agent-1").start()
    await sub.wait_for(measured(3), 60, "measurements")
    assert await first.terminate() == 0, rig.report()
    filler = fill(state_fs)
    restarted_ms = time.time() * 1000
    second = rig.agent(config, "agent-2").start()
    await sub.wait_for(
        lambda ms: len(measurements_after(ms, restarted_ms)) >= 3, 60, "live data after the restart"
    )
    doc = await wait_state(base, lambda d: not storage_ok(d), 15, "a storage fault")
    assert doc["health"]["state"] == "degraded"
    filler.unlink()
    await wait_state(base, storage_ok, 15, "the outbox opened")
    assert await second.terminate() == 0, rig.report()
    check_measurements_complete(sub.received(), "m1")
    for a in (first, second):
        assert "Traceback" not in a.output(), a.output()


# --- 3. the outbox's own error paths on a real full disk --------------------------------------


def test_the_sqlite_outbox_on_a_full_disk_raises_its_own_error_and_closes_cleanly(
    state_fs: Path,
) -> None:
    box = SqliteOutbox(state_fs / "outbox.db", 100_000_000)
    box.put_many([Item(Kind.ENERGY, "t/e", b"e%d" % i, created_ms=i) for i in range(50)])
    filler = fill(state_fs)
    with pytest.raises(OutboxError, match="database or disk is full"):
        box.put_many([Item(Kind.ENERGY, "t/e", b"x" * 5000)])
    box.close()  # never raises: what was committed is in the WAL
    filler.unlink()
    again = SqliteOutbox(state_fs / "outbox.db", 100_000_000)
    assert [e.payload for e in again.take(100)] == [b"e%d" % i for i in range(50)]
    again.close()


def test_the_guard_on_a_full_disk_forgets_acknowledged_messages_and_stores_the_rest(
    state_fs: Path,
) -> None:
    disk = SqliteOutbox(state_fs / "outbox.db", 100_000_000)
    guard = StorageGuard(disk, state_fs, retry_s=3600)
    guard.put_many([Item(Kind.ENERGY, "t/d", b"d%02d" % i) for i in range(20)])
    filler = fill(state_fs)
    guard.put_many([Item(Kind.ENERGY, "t/m", b"m%02d" % i + b"x" * 5000) for i in range(20)])
    h = guard.health()
    assert not h.ok and h.unstored == 20 and h.free_bytes == 0
    sent = guard.take(30)
    assert tags(sent) == [f"d{i:02}" for i in range(20)] + [f"m{i:02}" for i in range(10)]
    guard.accept([e.id for e in sent])  # deletes may fail on a full disk: never sent again
    assert guard.stats().depth == 10
    assert tags(guard.take(30)) == [f"m{i:02}" for i in range(10, 20)]
    filler.unlink()
    guard.close()  # stores the ten unacknowledged ones
    assert sum(guard.lost_at_close.values()) == 0
    again = SqliteOutbox(state_fs / "outbox.db", 100_000_000)
    assert tags(again.take(100)) == [f"m{i:02}" for i in range(10, 20)]
    again.close()


def tags(entries: list[Entry]) -> list[str]:
    return [e.payload[:3].decode() for e in entries]
