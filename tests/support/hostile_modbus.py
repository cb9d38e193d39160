"""A hand-written hostile Modbus server: plain asyncio sockets, no pymodbus.

It speaks Modbus TCP (MBAP header) or RTU frames over TCP (what a serial device
server forwards) and answers read requests (function codes 1-4) from one
:class:`~drivers.image.RegisterImage` per unit id: correctly, or in one of the
ways a broken or malicious meter does (:class:`Answer`). Tests use it to prove
that nothing a meter sends becomes data unless it answers the question asked.

Nothing here comes from pymodbus or from the agent's transport, so the server
cannot share a framing bug with the client under test. The bad frames are
built byte by byte below; each :class:`Answer` says what is wrong with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from drivers.errors import ExceptionCode
from drivers.image import IllegalRead, RegisterImage
from drivers.registers import Table

LOOPBACK = "127.0.0.1"
_TABLE = {3: Table.HOLDING, 4: Table.INPUT}


class Answer(StrEnum):
    """How a unit answers a read request."""

    CORRECT = "correct"
    #: The right data under the other register function code (FC03 for FC04 and back).
    OTHER_FUNCTION = "other_function"
    #: A transaction id one above the request's (Modbus TCP only).
    OTHER_TRANSACTION = "other_transaction"
    #: Transaction id 0 whatever the request said (Modbus TCP only).
    ZERO_TRANSACTION = "zero_transaction"
    #: The answer of the next unit id.
    OTHER_UNIT = "other_unit"
    #: A complete frame whose data stop halfway through the byte count.
    TRUNCATED = "truncated"
    #: Byte count 0xFF in front of the requested data.
    OVERSIZED_COUNT = "oversized_count"
    #: A well-formed answer with twice the registers asked for.
    EXTRA_REGISTERS = "extra_registers"
    #: Random bytes, no framing at all.
    GARBAGE = "garbage"
    #: A function code no standard defines (0x41, user-defined range).
    UNKNOWN_FUNCTION = "unknown_function"


@dataclass
class HostileUnit:
    """One unit id behind the server: its registers and how it answers."""

    image: RegisterImage
    answer: Answer = Answer.CORRECT


@dataclass
class HostileServer:
    """``async with HostileServer(units) as server:`` listens on 127.0.0.1:``server.port``.

    ``rtu=True`` serves RTU frames (with CRC) over the TCP socket instead of MBAP.
    ``units`` may be changed while it runs (a unit turning hostile mid-test).
    """

    units: dict[int, HostileUnit]
    rtu: bool = False
    port: int = 0
    seed: int = 1
    #: Every request received: (unit, function code, address, count).
    requests: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: How many answers of each kind were sent.
    sent: Counter[Answer] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._rng = random.Random(self.seed)
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        # Let each connection's handler see its EOF and end; a handler cancelled by the
        # loop's shutdown instead is logged by asyncio as an error.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def bad_answers(self) -> int:
        return sum(n for a, n in self.sent.items() if a is not Answer.CORRECT)

    # --- the wire ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                if self.rtu:
                    frame = await reader.readexactly(8)
                    if crc16(frame[:6]) != frame[6:]:
                        continue  # a real slave ignores a frame with a bad CRC
                    tid, unit, pdu = 0, frame[0], frame[1:6]
                else:
                    head = await reader.readexactly(7)
                    tid, _pid, length, unit = struct.unpack(">HHHB", head)
                    pdu = await reader.readexactly(length - 1)
                out = self._answer(tid, unit, pdu)
                if out:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes:
        fc = pdu[0]
        address, count = struct.unpack(">HH", pdu[1:5])
        self.requests.append((unit, fc, address, count))
        target = self.units.get(unit)
        if target is None:
            return b""  # nobody at this unit id: silence, as on a real bus
        answer = target.answer
        self.sent[answer] += 1
        body = self._data(target.image, fc, address, count)
        if body[0] & 0x80:  # an exception response is sent as it is
            return self._frame(tid, unit, body)
        if answer is Answer.CORRECT:
            return self._frame(tid, unit, body)
        if answer is Answer.OTHER_FUNCTION:
            other = {1: 2, 2: 1, 3: 4, 4: 3}[fc]
            return self._frame(tid, unit, bytes([other]) + body[1:])
        if answer is Answer.OTHER_TRANSACTION:
            return self._frame((tid + 1) & 0xFFFF, unit, body)
        if answer is Answer.ZERO_TRANSACTION:
            return self._frame(0, unit, body)
        if answer is Answer.OTHER_UNIT:
            return self._frame(tid, unit % 247 + 1, body)
        if answer is Answer.TRUNCATED:
            return self._frame(tid, unit, body[: 2 + (len(body) - 2) // 2])
        if answer is Answer.OVERSIZED_COUNT:
            return self._frame(tid, unit, body[:1] + b"\xff" + body[2:])
        if answer is Answer.EXTRA_REGISTERS:
            data = body[2:] * 2
            return self._frame(tid, unit, bytes([fc, len(data)]) + data)
        if answer is Answer.GARBAGE:
            return self._rng.randbytes(16)
        return self._frame(tid, unit, b"\x41\x04\xde\xad\xbe\xef")  # UNKNOWN_FUNCTION

    @staticmethod
    def _data(image: RegisterImage, fc: int, address: int, count: int) -> bytes:
        """The correct response PDU, or the exception response the image asks for."""
        try:
            if fc in _TABLE:
                words = image.read(_TABLE[fc], address, count)
                return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
            if fc in (1, 2):
                bits = bytearray((count + 7) // 8)
                return bytes([fc, len(bits)]) + bytes(bits)  # no coils: all off
        except IllegalRead as exc:
            return bytes([fc | 0x80, int(exc.code)])
        return bytes([fc | 0x80, int(ExceptionCode.ILLEGAL_FUNCTION)])

    def _frame(self, tid: int, unit: int, pdu: bytes) -> bytes:
        if self.rtu:
            adu = bytes([unit]) + pdu
            return adu + crc16(adu)
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC (polynomial 0xA001, initial 0xFFFF), low byte first on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)
