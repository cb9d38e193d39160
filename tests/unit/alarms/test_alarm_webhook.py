"""The alarm webhook against a real HTTP server on loopback (stdlib ``http.server``).

What is checked: a change arrives as the JSON it was given; a failed POST is
retried after 1, 2, 4 ... s capped at ``backoff_max_s`` and given up after
``attempts``; a full queue drops its oldest change; ``put`` never waits, even
while the receiver hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from agent.alarms.webhook import WebhookSender
from agent.config.alarms import Webhook
from tests.support.webhook import Receiver


@contextlib.asynccontextmanager
async def running(sender: WebhookSender) -> AsyncIterator[WebhookSender]:
    """The sender's task, as the agent's task group runs it, stopped at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield sender
    finally:
        stop.set()
        await task


async def _until(predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_failures_are_retried_with_a_capped_backoff_then_delivered() -> None:
    # Three 500s: waits of 1, then 2, then min(4, 2.5) = 2.5 s; the fourth POST arrives.
    with Receiver([500, 503, 500]).serving() as rx:
        sender = WebhookSender(Webhook(url=rx.url, attempts=5, backoff_max_s=2.5))
        async with running(sender):
            sender.put({"rule": "r", "state": "raised"})
            await _until(lambda: rx.bodies, 15)
    gaps = [b - a for a, b in zip(rx.times, rx.times[1:], strict=False)]
    # Each wait at least its delay, and not much more (a loaded machine adds a little).
    assert len(gaps) == 3
    assert all(
        want - 0.05 <= g <= want + 0.5 for g, want in zip(gaps, [1.0, 2.0, 2.5], strict=True)
    )
    assert rx.bodies == [{"rule": "r", "state": "raised"}]
    assert (sender.sent, sender.failed, sender.last_error) == (1, 0, None)


async def test_a_change_is_given_up_after_its_attempts_and_the_next_one_goes() -> None:
    with Receiver([500, 500]).serving() as rx:
        sender = WebhookSender(Webhook(url=rx.url, attempts=2, backoff_max_s=0.2))
        async with running(sender):
            sender.put({"n": 1})
            sender.put({"n": 2})
            await _until(lambda: rx.bodies, 10)
    assert rx.bodies == [{"n": 2}] and len(rx.times) == 3  # 1 twice, then 2
    assert (sender.sent, sender.failed) == (1, 1)
    assert sender.last_error is None


async def test_put_never_waits_and_a_full_queue_drops_the_oldest() -> None:
    # The receiver hangs 1 s on each POST; five puts return at once, the queue of 2
    # keeps the newest: the first (already being sent) and then 4 and 5.
    with Receiver([], hang_s=1.0).serving() as rx:
        sender = WebhookSender(Webhook(url=rx.url, queue=2, timeout_s=5))
        async with running(sender):
            sender.put({"n": 1})
            await _until(lambda: rx.times, 5)  # 1 is in flight
            started = time.monotonic()
            for n in (2, 3, 4, 5):
                sender.put({"n": n})
            assert time.monotonic() - started < 0.05
            assert sender.dropped == 2 and sender.waiting == 2
            await _until(lambda: len(rx.bodies) == 3, 10)
    assert [b["n"] for b in rx.bodies] == [1, 4, 5]


async def test_no_receiver_is_an_error_retried_not_an_exception() -> None:
    sender = WebhookSender(Webhook(url="http://127.0.0.1:9/x", attempts=2, backoff_max_s=0.1))
    async with running(sender):
        sender.put({"n": 1})
        await _until(lambda: sender.failed == 1, 10)
    assert sender.last_error is not None and "127.0.0.1:9" in sender.last_error


async def test_a_receiver_answering_garbage_is_a_failure_not_a_crash() -> None:
    """Not HTTP at all (BadStatusLine, an http.client.HTTPException): retried, given up."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HELLO THERE\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        sender = WebhookSender(
            Webhook(url=f"http://127.0.0.1:{port}/", attempts=2, backoff_max_s=0.1)
        )
        async with running(sender):
            sender.put({"n": 1})
            await _until(lambda: sender.failed == 1, 10)
    assert sender.last_error is not None and "BadStatusLine" in sender.last_error
