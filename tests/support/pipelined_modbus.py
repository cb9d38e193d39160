"""A hand-written Modbus TCP server that works on several requests at once and answers
in whatever order they finish: plain asyncio, no pymodbus, nothing of drivers.mbap.

Every request is answered by its own task after the unit's ``delay_s`` (plus a
seeded jitter, so a later request often overtakes an earlier one), the way a
gateway forwarding to several lines, or answering from its cache, does. Register
``a`` of unit ``u`` holds :func:`word` (u, a) in both register tables, so a test
knows what every read must return without a meter model. A unit can instead
misbehave (:class:`Fault`): the frames are built byte by byte here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from tests.support.cli import LOOPBACK


def word(unit: int, address: int) -> int:
    """What register ``address`` of ``unit`` holds: unit in the high byte, address low."""
    return (unit << 8 | address) & 0xFFFF


class Fault(StrEnum):
    #: A correct answer.
    NONE = "none"
    #: No answer at all.
    SILENT = "silent"
    #: Exception response 0x02 (illegal data address).
    EXCEPTION = "exception"
    #: The answer under a transaction id 1000 above the request's.
    UNKNOWN_TID = "unknown_tid"
    #: Bytes that are no MBAP frame (protocol id not 0).
    GARBAGE = "garbage"
    #: Half of the answer frame, then the connection is closed.
    CLOSE_MID_FRAME = "close_mid_frame"
    #: A well-framed answer from the next unit id.
    OTHER_UNIT = "other_unit"


@dataclass
class Unit:
    delay_s: float = 0.0
    fault: Fault = Fault.NONE


@dataclass
class OutOfOrderServer:
    """``async with OutOfOrderServer(units) as s:`` listens on 127.0.0.1:``s.port``."""

    units: dict[int, Unit]
    #: Up to this much is added to every answer's delay, at random (seeded).
    jitter_s: float = 0.0
    seed: int = 1
    port: int = 0
    #: The most requests that were being worked on at the same time.
    peak_inflight: int = 0
    #: Transaction ids in the order the answers were sent.
    answered: list[int] = field(default_factory=list)
    #: Transaction ids in the order the requests arrived.
    received: list[int] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._rng = random.Random(self.seed)
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for w in list(self._writers):
            w.close()
        # Let each connection's handler see its EOF and end; a handler cancelled by the
        # loop's shutdown instead is logged by asyncio as an error.
        await asyncio.gather(*self._tasks, *self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                self.received.append(tid)
                self._spawn(self._answer(writer, tid, unit, pdu))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, tid: int, unit: int, pdu: bytes) -> None:
        target = self.units.get(unit)
        if target is None or target.fault is Fault.SILENT:
            return
        self._inflight += 1
        self.peak_inflight = max(self.peak_inflight, self._inflight)
        try:
            await asyncio.sleep(target.delay_s + self.jitter_s * self._rng.random())
        finally:
            self._inflight -= 1
        if writer.is_closing():
            return
        fc = pdu[0]
        address, count = struct.unpack(">HH", pdu[1:5])
        words = [word(unit, address + i) for i in range(count)]
        body = bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
        fault = target.fault
        if fault is Fault.EXCEPTION:
            body = bytes([fc | 0x80, 0x02])
        if fault is Fault.OTHER_UNIT:
            unit = unit % 247 + 1
        if fault is Fault.UNKNOWN_TID:
            tid = (tid + 1000) & 0xFFFF
        frame = struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
        if fault is Fault.GARBAGE:
            frame = b"\x12\x34\xde\xad\x00\x05garbage"
        if fault is Fault.CLOSE_MID_FRAME:
            writer.write(frame[: len(frame) // 2])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self.answered.append(tid)
        writer.write(frame)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
