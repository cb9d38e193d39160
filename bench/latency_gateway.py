"""A Modbus TCP gateway stand-in for the benchmarks: forwards each request after a delay.

Run: ``python -m bench.latency_gateway --listen PORT --upstream HOST:PORT --latency-ms 20
[--lines N]``

Between the agent and ``energy-agent simulate`` (whose Modbus TCP handler answers
several requests at once), every request waits ``--latency-ms`` before it is
forwarded, as behind a gateway that takes that long to get an answer from the
meter. With ``--lines 0`` (the default) requests wait independently, as over a
slow network or behind a gateway with a line per meter group; with ``--lines N``
at most N requests are being forwarded at once (N RS-485 lines, each carrying
one request at a time): with one line, several requests in flight gain nothing
but the network's round trip. Answers are relayed as they come, byte for byte:
the transaction ids are the agent's own. A separate process, so its CPU time is
not counted in the agent's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct


class Gateway:
    def __init__(self, upstream: tuple[str, int], latency_s: float, lines: int) -> None:
        self.upstream = upstream
        self.latency_s = latency_s
        self.lines = asyncio.Semaphore(lines) if lines > 0 else None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        relay = asyncio.create_task(self._relay(up_reader, writer))
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                head = await reader.readexactly(6)
                (length,) = struct.unpack(">H", head[4:6])
                frame = head + await reader.readexactly(length)
                task = asyncio.create_task(self._forward(frame, up_writer))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for t in (*pending, relay):
                t.cancel()
            up_writer.close()
            writer.close()

    async def _forward(self, frame: bytes, up: asyncio.StreamWriter) -> None:
        if self.lines is None:
            await asyncio.sleep(self.latency_s)
        else:
            async with self.lines:
                await asyncio.sleep(self.latency_s)
        up.write(frame)

    @staticmethod
    async def _relay(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the simulator")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--lines", type=int, default=0)
    args = ap.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    gw = Gateway((host, int(port)), args.latency_ms / 1000.0, args.lines)
    server = await asyncio.start_server(gw.serve, "127.0.0.1", args.listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
