"""Modbus TCP with several requests in flight on one connection (``max_inflight``).

pymodbus' client sends one request per connection and waits for its answer
before the next (a lock in its transaction manager), so 50 meters behind one
TCP gateway are read one after another: at 20 ms per answer, a second for the
bus. Modbus TCP allows more: every request carries a transaction id and the
answer repeats it, so a gateway that forwards to several lines, or answers from
a cache, can work on several requests at once and answer in any order. This
client sends up to ``max_inflight`` requests before the first answer and hands
each answer to its request by transaction id.

It speaks only what the drivers send: read requests, function codes 1-4
(:mod:`drivers.mbap` encodes and judges them). Errors are the drivers' own
(:mod:`drivers.errors`), made here and nowhere else:

* a request that gets no answer in ``timeout_s`` (counted from when it was
  sent, not from when it queued for a slot) is a :class:`ModbusTimeout`; its
  transaction id is remembered for a while, so its late answer is skipped;
* a wrong but well-framed answer fails only the request it answers
  (:class:`MalformedResponse`, the texts of :mod:`drivers.frames`);
* a broken stream (not Modbus TCP, an impossible length) or an answer to a
  transaction nobody asked resets the connection: every request in flight on
  it fails with :class:`MalformedResponse` saying why, and the next request
  connects again;
* a connection closed by the gateway fails what is in flight with
  :class:`ConnectionLost`; reconnecting is tried on the next request, and after
  a failed attempt not again before a capped, jittered delay, so 50 meters
  behind a dead gateway cost one connection attempt per delay, not 50.

Nothing limits the write buffer: at most ``max_inflight`` requests of 12 bytes
are ever unanswered, so the kernel's socket buffer always takes them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from drivers.endpoint import Endpoint, Framing, Timing
from drivers.errors import (
    RETRYABLE_CODES,
    ConnectionLost,
    DeviceBusy,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    TransportConfigError,
    TransportError,
    retrying,
)
from drivers.frames import Request
from drivers.mbap import StreamError, bits, encode_read, judge, registers, split
from drivers.registers import FunctionCode

#: How many timed-out transaction ids a connection remembers, per request in flight.
_STALE_PER_SLOT = 4
#: Reconnect delays after a failed attempt: doubling from the first to the cap, with
#: jitter in [d/2, d] so the agents behind one gateway do not knock in step.
RECONNECT_FIRST_S = 0.5
RECONNECT_CAP_S = 10.0

#: A gateway that cannot take several requests at once loses some and tags answers with
#: another request's transaction id: say what to try, where the operator reads it.
_CROSSED = (
    "connection reset (if the gateway takes one request at a time, set the bus's max_inflight to 1)"
)

#: What a request's future receives: data, an exception code, a refusal, or a failure.
_Outcome = bytes | int | str | TransportError


@dataclass(slots=True)
class _Waiter:
    req: Request
    future: asyncio.Future[_Outcome]


class _Link(asyncio.Protocol):
    """One TCP connection: answers go to the request waiting for their transaction id."""

    def __init__(self, stale: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, _Waiter] = {}
        #: Transaction ids of requests that timed out: their answers are skipped.
        self.stale: deque[int] = deque(maxlen=stale)
        self.closed = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            frames = split(self._buffer)
        except StreamError as exc:
            self.reset(f"{exc}; connection reset")
            return
        for tid, frame in frames:
            waiter = self.pending.pop(tid, None)
            if waiter is None:
                if tid in self.stale:
                    continue  # the late answer of a request that timed out
                self.reset(f"answer to transaction {tid}, which is not in flight; {_CROSSED}")
                return
            if not waiter.future.done():
                waiter.future.set_result(judge(waiter.req, frame))

    def connection_lost(self, exc: Exception | None) -> None:
        cut = f" ({len(self._buffer)} bytes of a frame unread)" if self._buffer else ""
        why = f": {exc}" if exc is not None else ""
        self._fail_all(ConnectionLost(f"connection closed by the other end{cut}{why}"))

    def reset(self, why: str) -> None:
        """The stream is unusable: fail everything in flight, drop the connection."""
        self._fail_all(MalformedResponse(why))
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, error: TransportError) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            if not waiter.future.done():
                waiter.future.set_result(error)


class PipelinedTransport:
    """A Modbus TCP bus with up to ``timing.max_inflight`` requests in flight.

    The same interface and errors as :class:`drivers.transport.ModbusTransport`;
    the agent uses it for a Modbus TCP bus whose ``max_inflight`` is above 1.
    """

    def __init__(self, endpoint: Endpoint, timing: Timing, name: str = "") -> None:
        if endpoint.framing is not Framing.TCP:
            raise TransportConfigError(
                f"{endpoint.describe()}: several requests in flight need Modbus TCP "
                "(a serial line carries one at a time)"
            )
        self.endpoint = endpoint
        self.timing = timing
        self.name = name or endpoint.describe()
        #: Function codes this transport has sent, for audits and tests.
        self.sent_function_codes: set[int] = set()
        self._slots = asyncio.Semaphore(max(1, timing.max_inflight))
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()
        self._tid = 0
        self._retry_at = 0.0
        self._connect_failures = 0
        self._last_connect_error = ""
        self._rng = random.Random()

    async def __aenter__(self) -> Self:
        return self  # connected by the first request, like ModbusTransport

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link._fail_all(ConnectionLost("transport closed"))
            if link.transport is not None:
                link.transport.close()

    async def connect(self) -> None:
        """Open the connection now (``check`` does, to say whether the bus opens)."""
        try:
            await self._connected()
        except ConnectionLost as exc:
            raise ConnectionLost(exc.detail, bus=self.name) from exc

    async def read(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        """Read ``count`` registers; retry retryable failures up to ``timing.retries`` times."""
        fc = FunctionCode(fc)  # anything but a read code fails here, before the wire
        return await retrying(
            self.timing.retries + 1, lambda: self._exchange(unit, fc, address, count)
        )

    async def _exchange(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        async with self._slots:
            try:
                link = await self._connected()
            except ConnectionLost as exc:
                where = _where(self.name, unit, fc, address, count)
                raise ConnectionLost(exc.detail, **where) from exc
            tid = self._next_tid(link)
            future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
            link.pending[tid] = _Waiter(Request(unit, int(fc), count, tid), future)
            assert link.transport is not None
            link.transport.write(encode_read(tid, unit, int(fc), address, count))
            self.sent_function_codes.add(int(fc))
            try:
                async with asyncio.timeout(self.timing.timeout_s):
                    outcome = await future
            except TimeoutError:
                where = _where(self.name, unit, fc, address, count)
                raise ModbusTimeout("no response", **where) from None
            finally:
                if link.pending.pop(tid, None) is not None:
                    # Unanswered (timed out, or the poll was cancelled): its answer may
                    # still come, and must be skipped, not taken for a stranger's.
                    link.stale.append(tid)
        if isinstance(outcome, bytes):
            return registers(outcome) if fc in _REGISTER_CODES else bits(outcome, count)
        raise _failure(outcome, _where(self.name, unit, fc, address, count))

    def _next_tid(self, link: _Link) -> int:
        """1..65535, never one in flight or remembered as timed out (0 is left out: a
        device that answers every request with transaction id 0 is then caught)."""
        while True:
            self._tid = self._tid % 0xFFFF + 1
            if self._tid not in link.pending and self._tid not in link.stale:
                return self._tid

    async def _connected(self) -> _Link:
        link = self._link
        if link is not None and not link.closed:
            return link
        async with self._connecting:  # one attempt at a time, whoever asks
            link = self._link
            if link is not None and not link.closed:
                return link
            ep = self.endpoint
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise ConnectionLost(
                    f"cannot connect to {ep.describe()}: {self._last_connect_error} "
                    f"(next attempt in {wait:.1f} s)"
                )
            stale = _STALE_PER_SLOT * max(1, self.timing.max_inflight)
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.timing.timeout_s):
                    _, link = await loop.create_connection(lambda: _Link(stale), ep.host, ep.port)
            except (OSError, TimeoutError) as exc:
                self._last_connect_error = str(exc) or "timed out"
                self._connect_failures += 1
                delay = min(
                    RECONNECT_CAP_S, RECONNECT_FIRST_S * 2.0 ** (self._connect_failures - 1)
                )
                self._retry_at = time.monotonic() + delay * (0.5 + 0.5 * self._rng.random())
                raise ConnectionLost(
                    f"cannot connect to {ep.describe()}: {self._last_connect_error}"
                ) from exc
            self._connect_failures = 0
            self._link = link
            return link


_REGISTER_CODES = (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS)


def _where(bus: str, unit: int, fc: FunctionCode, address: int, count: int) -> dict[str, Any]:
    return {"bus": bus, "unit": unit, "function_code": int(fc), "address": address, "count": count}


def _failure(outcome: int | str | TransportError, where: dict[str, Any]) -> TransportError:
    """The drivers' error for an outcome that is not data, with where it happened."""
    if isinstance(outcome, TransportError):
        return type(outcome)(outcome.detail, **where)
    if isinstance(outcome, str):
        return MalformedResponse(outcome, **where)
    if outcome in RETRYABLE_CODES:
        return DeviceBusy(outcome, **where)
    if outcome:
        return ModbusExceptionResponse(outcome, **where)
    return MalformedResponse("error response without exception code", **where)
