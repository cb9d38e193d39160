"""An unauthenticated host flooding the gateway's page: run as a separate process.

``python tests/integration/http_flood.py PORT SECONDS MODE SOURCE...`` starts
``WORKERS`` connections spread over the SOURCE addresses (127.0.0.x aliases of
loopback), each looping for SECONDS, then prints one JSON line of counts.
Four behaviours, one per worker in turn, each reconnecting at once when the
server closes its socket:

* ``idle``: connect and send nothing (what took the slots in issue 11);
* ``slow``: a request line, then one header byte every 0.3 s (slowloris);
* ``guess``: complete requests with a wrong password, read the 401, again
  (MODE ``password``); without a password (MODE ``open``) an event stream held
  open and read slowly, as a viewer that never leaves;
* ``churn``: connect, half a request, reset, again.

Standard library only, so it runs under any interpreter; a process of its own,
so the flood does not share an event loop with the server or the viewer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import sys
import time
from collections import Counter

WORKERS = 200
BEHAVIOURS = ("idle", "slow", "guess", "churn")
WRONG = "Authorization: Basic " + base64.b64encode(b"energy:guess").decode()


class Flood:
    def __init__(self, port: int, mode: str, seconds: float) -> None:
        self.port = port
        self.mode = mode
        self.until = time.monotonic() + seconds
        self.counts: Counter[str] = Counter()
        self.open = 0

    async def connect(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        self.counts["connects"] += 1
        self.open += 1
        self.counts["max_open"] = max(self.counts["max_open"], self.open)
        return await asyncio.open_connection(sock=sock)

    async def worker(self, source: str, behaviour: str) -> None:
        while time.monotonic() < self.until:
            try:
                reader, writer = await self.connect(source)
            except OSError:
                self.counts["connect_failed"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                await asyncio.wait_for(
                    getattr(self, behaviour)(reader, writer), self.until - time.monotonic()
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open -= 1
                writer.transport.abort()

    async def idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.until_closed(reader)

    async def slow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /api/state HTTP/1.1\r\nHost: x\r\n")
        while not reader.at_eof():
            writer.write(b"X")
            await writer.drain()
            self.counts["slow_bytes"] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    await self.until_closed(reader)

    async def guess(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "password":
            writer.write(f"GET /api/state HTTP/1.1\r\nHost: x\r\n{WRONG}\r\n\r\n".encode())
        else:
            writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        self.counts[f"status_{head.split(b' ')[1].decode()}"] += 1
        while True:  # a slow reader: 64 bytes at a time
            if not await reader.read(64):
                return
            await asyncio.sleep(0.05)

    async def churn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET / HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)

    async def until_closed(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(4096):
            pass
        self.counts["closed_by_server"] += 1


async def main(port: int, seconds: float, mode: str, sources: list[str]) -> None:
    flood = Flood(port, mode, seconds)
    workers = [
        # every behaviour from every address
        flood.worker(sources[i // len(BEHAVIOURS) % len(sources)], BEHAVIOURS[i % len(BEHAVIOURS)])
        for i in range(WORKERS)
    ]
    print("flooding", flush=True)
    await asyncio.gather(*workers)
    print(json.dumps(dict(flood.counts)), flush=True)


if __name__ == "__main__":
    port, seconds, mode, *sources = sys.argv[1:]
    asyncio.run(main(int(port), float(seconds), mode, sources))
