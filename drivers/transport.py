"""Modbus transports: the only place that talks to pymodbus.

A :class:`Transport` reads registers from one bus: Modbus TCP, RTU on a serial
line, or RTU framed over TCP (serial device servers). Every pymodbus, pyserial
and socket exception is mapped here, once, into :mod:`drivers.errors`.

Timing rules that matter on a plant floor:

* a serial line (and RTU over TCP, which is a serial line behind a box) carries
  one request at a time, with a configurable pause between frames: RS-485
  meters need it when the master switches unit ids (mbmd uses 200 ms for SDM);
* each request has its own timeout and a bounded number of retries; retries
  happen here, not inside pymodbus, so a dead meter costs a known time;
* pymodbus only ever receives read requests (function codes 1-4);
* pymodbus only ever decodes answers that :mod:`drivers.frames` has matched to
  the request (unit, function code, byte count, transaction id or CRC): anything
  else a meter sends is a :class:`MalformedResponse`, never data, and never a
  traceback from inside pymodbus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from drivers.endpoint import Endpoint, Framing, Timing, Transport
from drivers.errors import (
    RETRYABLE_CODES,
    ConnectionLost,
    DeviceBusy,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    TransportError,
    retrying,
)
from drivers.frames import FrameGuard
from drivers.pipeline import PipelinedTransport
from drivers.registers import FunctionCode

#: A frozen default: one second per request, one retry, no pause.
DEFAULT_TIMING = Timing()

__all__ = ["Endpoint", "Framing", "ModbusTransport", "Timing", "Transport", "open_bus"]


def open_bus(
    endpoint: Endpoint, timing: Timing = DEFAULT_TIMING, name: str = ""
) -> ModbusTransport | PipelinedTransport:
    """The transport for a bus: pymodbus, or the pipelined client when a Modbus TCP bus
    may have several requests in flight (``max_inflight`` > 1, :mod:`drivers.pipeline`)."""
    if timing.max_inflight > 1 and endpoint.framing is Framing.TCP:
        return PipelinedTransport(endpoint, timing, name)
    return ModbusTransport(endpoint, timing, name)


class ModbusTransport:
    """One pymodbus client per bus, opened on first use, closed by the context manager.

    A TCP bus is one connection: units behind one Modbus TCP gateway share it and
    pymodbus sends their requests one after another; separate TCP buses run in
    parallel. A serial bus is additionally serialised here, with the frame gap.
    """

    def __init__(self, endpoint: Endpoint, timing: Timing = DEFAULT_TIMING, name: str = "") -> None:
        self.endpoint = endpoint
        self.timing = timing
        self.name = name or endpoint.describe()
        self._client: Any = None
        #: Checks every answer against its request before pymodbus sees it (drivers.frames).
        self._guard = FrameGuard(rtu=endpoint.is_serial)
        self._lock = asyncio.Lock()
        self._last_exchange = 0.0
        #: Function codes this transport has sent, for audits and tests.
        self.sent_function_codes: set[int] = set()

    async def __aenter__(self) -> Self:
        # The bus is opened by the first request, not here: a meter line that is down
        # when the agent starts is an error of that poll (with unit and address), to be
        # retried, not a reason to fail start-up.
        self._client = self._make_client()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _make_client(self) -> Any:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        ep, t = self.endpoint, self.timing
        common: dict[str, Any] = {
            "timeout": t.timeout_s,
            "retries": 0,  # retries are ours: each one is counted and bounded
            "reconnect_delay": 0,  # reconnects are ours too, on the next request
            "trace_packet": self._guard.trace,
            "trace_connect": self._guard.connected,
        }
        if ep.framing is Framing.RTU:
            return AsyncModbusSerialClient(
                ep.device,
                framer=FramerType.RTU,
                baudrate=ep.baudrate,
                parity=ep.parity,
                stopbits=ep.stopbits,
                bytesize=ep.bytesize,
                **common,
            )
        framer = FramerType.RTU if ep.framing is Framing.RTU_OVER_TCP else FramerType.SOCKET
        return AsyncModbusTcpClient(ep.host, port=ep.port, framer=framer, **common)

    async def connect(self) -> None:
        """Open the bus. A failure is retryable: the cable may be plugged in later."""
        if self._client is None:
            self._client = self._make_client()
        if self._client.connected:
            return
        try:
            ok = await self._client.connect()
        except (OSError, ValueError) as exc:  # pyserial's SerialException is an OSError
            raise ConnectionLost(
                f"cannot open {self.endpoint.describe()}: {exc}", bus=self.name
            ) from exc
        if not ok:
            raise ConnectionLost(f"cannot connect to {self.endpoint.describe()}", bus=self.name)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        """Read ``count`` registers; retry retryable failures up to ``timing.retries`` times."""
        fc = FunctionCode(fc)  # anything but a read code fails here, before the wire
        return await retrying(
            self.timing.retries + 1, lambda: self._exchange(unit, fc, address, count)
        )

    async def _exchange(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        async with self._lock if self.endpoint.is_serial else _NOLOCK:
            delay = self._last_exchange + self.timing.inter_frame_delay_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if self._client is None or not self._client.connected:
                    await self.connect()
                self.sent_function_codes.add(int(fc))
                # asyncio.timeout, not wait_for: no task per request (a fifth of the
                # transport's own cost at 200 meters).
                async with asyncio.timeout(self.timing.timeout_s + 0.5):
                    response = await self._request(unit, fc, address, count)
                # Read at once, before anything else can send: the guard's verdict on
                # this request's answer (the exception answer it handed pymodbus).
                rejection = self._guard.take_rejection()
            except ConnectionLost as exc:
                where = _where(self.name, unit, fc, address, count)
                raise ConnectionLost(exc.detail, **where) from exc
            except TimeoutError as exc:
                where = _where(self.name, unit, fc, address, count)
                raise ModbusTimeout("no response", **where) from exc
            except Exception as exc:
                raise _map_exception(exc, _where(self.name, unit, fc, address, count)) from exc
            finally:
                self._last_exchange = time.monotonic()
        if rejection is not None:
            raise MalformedResponse(rejection, **_where(self.name, unit, fc, address, count))
        registers = getattr(response, "registers", None)
        if (
            fc in _REGISTER_CODES
            and registers is not None
            and len(registers) == count
            and not response.isError()
        ):
            return list(registers)  # the usual answer; anything else is looked at closely
        return _check_response(response, count, _where(self.name, unit, fc, address, count))

    async def _request(self, unit: int, fc: FunctionCode, address: int, count: int) -> Any:
        c = self._client
        if fc is FunctionCode.READ_HOLDING_REGISTERS:
            return await c.read_holding_registers(address, count=count, device_id=unit)
        if fc is FunctionCode.READ_INPUT_REGISTERS:
            return await c.read_input_registers(address, count=count, device_id=unit)
        if fc is FunctionCode.READ_COILS:
            return await c.read_coils(address, count=count, device_id=unit)
        return await c.read_discrete_inputs(address, count=count, device_id=unit)


class _nolock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NOLOCK = _nolock()
_REGISTER_CODES = (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS)


def _where(bus: str, unit: int, fc: FunctionCode, address: int, count: int) -> dict[str, Any]:
    """Where a failed request went, for the error (built only when one fails)."""
    return {"bus": bus, "unit": unit, "function_code": int(fc), "address": address, "count": count}


def _map_exception(exc: BaseException, where: dict[str, Any]) -> TransportError:
    from pymodbus.exceptions import ConnectionException, ModbusIOException

    if isinstance(exc, ConnectionException):
        return ConnectionLost(f"connection lost: {_short(exc)}", **where)
    if isinstance(exc, ModbusIOException):
        text = str(exc)
        if "No response" in text or "no response" in text:
            return ModbusTimeout("no response", **where)
        return MalformedResponse(f"unusable response: {_short(exc)}", **where)
    if isinstance(exc, OSError):
        return ConnectionLost(f"connection error: {exc}", **where)
    return MalformedResponse(f"unusable response: {type(exc).__name__}: {exc}", **where)


def _short(exc: BaseException) -> str:
    text = str(exc).replace("Modbus Error: ", "").strip("[] ")
    return text[:200]


def _check_response(response: Any, count: int, where: dict[str, Any]) -> list[int]:
    if response is None:
        raise ModbusTimeout("no response", **where)
    if response.isError():
        code = int(getattr(response, "exception_code", 0) or 0)
        if code in RETRYABLE_CODES:
            raise DeviceBusy(code, **where)
        if code:
            raise ModbusExceptionResponse(code, **where)
        raise MalformedResponse("error response without exception code", **where)
    if where["function_code"] in (1, 2):
        bits: Sequence[bool] = getattr(response, "bits", None) or []
        if len(bits) < count:
            raise MalformedResponse(f"expected {count} bits, got {len(bits)}", **where)
        return [int(b) for b in bits[:count]]
    registers: Sequence[int] | None = getattr(response, "registers", None)
    if registers is None or len(registers) != count:
        got = "none" if registers is None else len(registers)
        raise MalformedResponse(f"expected {count} registers, got {got}", **where)
    return list(registers)
