"""The bridge never wedges: floods of rejects among valid traffic, alone and in a group.

Issue 11's deadlock: a dead-letter publish (writer thread, holding the consumer's
lock) waited for paho's ``_out_message_mutex`` while paho's thread, holding that
mutex, waited in ``on_publish`` for the consumer's lock. A few hundred unparsable
messages, or one gateway whose clock is 40 days off, stopped every site's data,
and SIGTERM was ignored. Here thousands of both kinds, mixed with valid records
at QoS 1, must all be accounted for: every valid point in victoria-metrics once,
every reject dead-lettered once, ``messages_received`` rising all along, the
systemd watchdog fed, and SIGTERM ending each bridge promptly with exit code 0.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.contract import Message, MessageKind, Topics, encode, measurements_payload
from tests.support.bridge import (
    PREFIX,
    BridgeProcess,
    Recorder,
    Stack,
    assert_same_points,
    expected_points,
    have_victoria_metrics,
    many_measurements,
    wire,
)
from tests.support.cli import Cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_victoria_metrics(), reason="apt-get install victoria-metrics"),
]

DAY_MS = 86_400_000
#: What a SIGTERM may take on a healthy bridge (the unit allows 60 s).
PROMPT_STOP_S = 15.0
#: received must rise at least this often while traffic is pending: a wedge fails fast.
STALL_LIMIT_S = 10.0


@pytest.fixture
async def stack(tmp_path: Path, ports: Callable[[], int], cli: Cli) -> AsyncIterator[Stack]:
    async with Stack(tmp_path, ports, cli.command) as s:
        yield s


Reject = tuple[str, bytes, str]  # topic, payload, the reason the bridge must give


def mixed_traffic(now_ms: int, valid: int, rejects: int) -> tuple[list[Message], list[Reject]]:
    """``valid`` records and ``rejects`` bad messages, half unparsable and half from a
    gateway whose clock is 40 days behind (``ts_out_of_window``), each unique."""
    good = many_measurements(now_ms - 600_000, valid)
    bad: list[Reject] = []
    skewed = Topics(PREFIX, "plant-skew", "gw-40d")
    garbage = Topics(PREFIX, "plant-junk", "gw-01")
    for i in range(rejects):
        if i % 2:
            payload = measurements_payload(now_ms - 40 * DAY_MS + i, i, {"active_power_kw": 1.5})
            bad.append(
                (
                    skewed.topic(MessageKind.MEASUREMENTS, f"m-{i % 7}"),
                    encode(payload),
                    "ts_out_of_window",
                )
            )
        else:
            bad.append(
                (
                    garbage.topic(MessageKind.MEASUREMENTS, f"m-{i % 5}"),
                    f"garbage #{i}".encode(),
                    "not_json",
                )
            )
    return good, bad


def interleave(good: list[Message], bad: list[Reject]) -> list[tuple[str, bytes]]:
    """Bad messages spread evenly through the valid ones, as a broken gateway among many."""
    g, b = wire(good), [(t, p) for t, p, _ in bad]
    out: list[tuple[str, bytes]] = []
    total = len(g) + len(b)
    gi = bi = 0
    for n in range(total):
        # Keep the share of bad ones among the first n + 1 at len(b) / total.
        if bi < len(b) and (gi >= len(g) or bi * total < (n + 1) * len(b)):
            out.append(b[bi])
            bi += 1
        else:
            out.append(g[gi])
            gi += 1
    return out


class Notifications:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self) -> None:
        self.name = f"energy-bridge-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())
        self.sock.setblocking(False)
        self.received: list[tuple[float, list[str]]] = []
        self._task: asyncio.Task[None] | None = None

    def env(self, watchdog_s: float) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name, "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.received.append((time.monotonic(), data.decode().splitlines()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._collect())

    def states(self) -> list[str]:
        return [x for _, lines in self.received for x in lines if not x.startswith("STATUS=")]

    def pings(self) -> list[float]:
        return [t for t, lines in self.received if "WATCHDOG=1" in lines]

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sock.close()


@contextmanager
def notifications() -> Iterator[Notifications]:
    n = Notifications()
    try:
        yield n
    finally:
        n.close()


async def drain(
    bridges: list[BridgeProcess], dead: Recorder, valid: int, rejects: int, limit_s: float = 60.0
) -> None:
    """Until every valid record is written and every reject dead-lettered.

    Fails as soon as nothing new was received for STALL_LIMIT_S while messages are
    still outstanding: the wedge, reported with each bridge's last output.
    """
    deadline = time.monotonic() + limit_s
    last_received, last_change = -1.0, time.monotonic()
    while True:
        got = [await asyncio.to_thread(b.metrics) for b in bridges]
        written = sum(m.get("energy_bridge_messages_written_total", 0.0) for m in got)
        received = sum(m.get("energy_bridge_messages_received_total", 0.0) for m in got)
        if written >= valid and len(dead.messages) >= rejects:
            return
        now = time.monotonic()
        if received != last_received:
            last_received, last_change = received, now
        state = f"{written:.0f}/{valid} written, {len(dead.messages)}/{rejects} dead letters"
        tail = "\n".join(b.output()[-1500:] for b in bridges)
        assert now - last_change < STALL_LIMIT_S, (
            f"wedged: received stuck at {received:.0f} for {STALL_LIMIT_S} s; {state}\n{tail}"
        )
        assert now < deadline, f"not drained in {limit_s} s: {state}\n{tail}"
        await asyncio.sleep(0.25)


def assert_dead_lettered_once(dead: Recorder, bad: list[Reject]) -> None:
    letters = Counter((d["topic"], d["payload_head"], d["reason"]) for d in dead.payloads())
    want = Counter((t, p.decode(), reason) for t, p, reason in bad)
    assert letters == want, (
        f"missing {list((want - letters).items())[:3]}, extra {list((letters - want).items())[:3]}"
    )


async def stop_promptly(bridge: BridgeProcess) -> None:
    started = time.monotonic()
    code = await asyncio.to_thread(bridge.stop, PROMPT_STOP_S)
    took = time.monotonic() - started
    assert code == 0, f"exit {code} after {took:.1f} s:\n{bridge.output()[-3000:]}"
    assert took < PROMPT_STOP_S


async def test_thousands_of_rejects_among_valid_traffic_never_wedge_the_bridge(
    stack: Stack,
) -> None:
    with notifications() as notify:
        notify.start()
        bridge = stack.bridge(batch_size=200, flush_interval_ms=100, env=notify.env(2.0))
        bridge.start()
        await bridge.wait_ready()
        dead = stack.recorder()
        await dead.ready()
        started = time.time()
        good, bad = mixed_traffic(time.time_ns() // 1_000_000, 3000, 3000)
        await stack.publisher().publish_all(interleave(good, bad))

        await drain([bridge], dead, len(good), len(bad))
        assert_same_points(await stack.vm.points(), expected_points(good))
        assert_dead_lettered_once(dead, bad)
        metrics = await asyncio.to_thread(bridge.metrics)
        assert metrics["energy_bridge_messages_received_total"] == len(good) + len(bad)
        assert metrics["energy_bridge_acks_total"] == len(good) + len(bad)
        assert metrics['energy_bridge_rejects_total{reason="not_json"}'] == len(bad) // 2
        assert metrics['energy_bridge_rejects_total{reason="ts_out_of_window"}'] == len(bad) // 2
        assert metrics["energy_bridge_pending_messages"] == 0
        # The liveness gauge moved with the work, and the watchdog was fed throughout.
        assert metrics["energy_bridge_last_progress_timestamp_seconds"] >= started
        assert notify.states()[0] == "READY=1", notify.received[:3]
        # A fast drain can end before the second ping; an idle bridge must keep feeding it.
        deadline = time.monotonic() + 10.0
        while len(notify.pings()) < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        pings = notify.pings()
        assert len(pings) >= 2, notify.received
        assert max(b - a for a, b in itertools.pairwise(pings)) < 5.0, pings

        await stop_promptly(bridge)
        assert notify.states()[-1] == "STOPPING=1", notify.received[-3:]


async def test_rejects_among_valid_traffic_with_three_bridges_in_one_group(stack: Stack) -> None:
    bridges = [stack.bridge(client_id=f"bridge-{i}", batch_size=200) for i in range(3)]
    for b in bridges:
        b.start()
    for b in bridges:
        await b.wait_ready()
    dead = stack.recorder()
    await dead.ready()
    good, bad = mixed_traffic(time.time_ns() // 1_000_000, 3000, 3000)
    await stack.publisher().publish_all(interleave(good, bad))

    await drain(bridges, dead, len(good), len(bad))
    assert_same_points(await stack.vm.points(), expected_points(good))
    assert_dead_lettered_once(dead, bad)
    received = [await b.metric("energy_bridge_messages_received_total") for b in bridges]
    assert sum(received) == len(good) + len(bad), received
    assert min(received) > 0, received  # each bridge took its share of the rejects too
    for b in bridges:
        await stop_promptly(b)


async def test_restart_drains_a_backlog_of_rejects_left_at_the_broker(stack: Stack) -> None:
    bridge = stack.bridge(batch_size=200)
    bridge.start()
    await bridge.wait_ready()  # the persistent session exists from here on
    await stop_promptly(bridge)

    dead = stack.recorder()
    await dead.ready()
    good, bad = mixed_traffic(time.time_ns() // 1_000_000, 1000, 3000)
    await stack.publisher().publish_all(interleave(good, bad))  # queued for the session

    restarted = stack.bridge(batch_size=200)  # the same client id: the same session
    restarted.start()
    await drain([restarted], dead, len(good), len(bad))
    assert_same_points(await stack.vm.points(), expected_points(good))
    assert_dead_lettered_once(dead, bad)
    await stop_promptly(restarted)
