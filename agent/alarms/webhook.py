"""Each alarm change POSTed as JSON to the config's URL, never in the way of polling.

:meth:`WebhookSender.put` only appends to a bounded queue (the oldest waiting
change is dropped, and counted, when it is full); :meth:`WebhookSender.run`, a
task of the agent's task group, sends them one by one in order. The POST runs
in a worker thread (``urllib``, no new dependency) with the config's timeout,
so a receiver that hangs holds up only this task. A failure (no connection, a
status other than 2xx) is retried after 1, 2, 4 ... seconds, capped at
``backoff_max_s``, up to ``attempts`` times; then the change is given up,
counted and logged. The body is the alarm message's payload itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from typing import Any

from agent import __version__
from agent.config.alarms import Webhook

log = logging.getLogger(__name__)


class WebhookError(Exception):
    """One POST that did not get a 2xx answer; the message says why."""


class WebhookSender:
    def __init__(self, config: Webhook) -> None:
        self.config = config
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def put(self, payload: Mapping[str, Any]) -> None:
        """Queue one change; never waits. The oldest waiting one goes when the queue is full."""
        if len(self._queue) >= self.config.queue:
            self._queue.popleft()
            self.dropped += 1
            log.warning(
                "alarm webhook: queue full (%d); the oldest change dropped", self.config.queue
            )
        self._queue.append(json.dumps(payload, separators=(",", ":")).encode())
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send what is queued until ``stop``; what waits then is dropped (it is in MQTT)."""
        while not stop.is_set():
            if not self._queue:
                self._wake.clear()
                waiters = {
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                }
                _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for p in pending:
                    p.cancel()
                continue
            # Taken off first: the one in flight is not the oldest a full queue drops.
            await self._deliver(self._queue.popleft(), stop)

    async def _deliver(self, body: bytes, stop: asyncio.Event) -> None:
        delay = 1.0
        for attempt in range(1, self.config.attempts + 1):
            try:
                await asyncio.to_thread(self._post, body)
            except WebhookError as exc:
                self.last_error = str(exc)
                if attempt == self.config.attempts:
                    break
                log.info("alarm webhook: %s; trying again in %.0f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
                delay = min(delay * 2, self.config.backoff_max_s)
            else:
                self.sent += 1
                self.last_error = None
                return
        self.failed += 1
        log.error(
            "alarm webhook: given up after %d attempts: %s", self.config.attempts, self.last_error
        )

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.config.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"energy-agent/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"{self.config.url} answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # (HTTPException: a receiver that answers garbage, e.g. BadStatusLine.)
            raise WebhookError(f"{self.config.url}: {exc!r}") from None
        if not 200 <= status < 300:
            raise WebhookError(f"{self.config.url} answered {status}")
