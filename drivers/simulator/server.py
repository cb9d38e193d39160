"""Serve simulated meters over real Modbus TCP, RTU-over-TCP, or RTU on a serial device.

Built on pymodbus' server with our own datastore: every read first advances the
meter model to the current time, then answers from its register image, so
counters integrate in real time. Faults are injected per device in the
datastore (no answer, exception codes, short garbage frames, delays), and every
function code received is recorded so tests can prove the agent never writes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.transaction import TransactionManager

from drivers.image import IllegalRead, RegisterImage
from drivers.registers import Table
from drivers.simulator.meter import MeterModel
from drivers.transport import Endpoint, Framing

Clock = Callable[[], float]


@dataclass
class SimulatedDevice:
    unit: int
    model: MeterModel
    image: RegisterImage = field(init=False)

    def __post_init__(self) -> None:
        limits = self.model.regmap.limits
        self.image = RegisterImage(limits.unreadable, limits.max_registers)
        self._rng = random.Random(self.model.seed * 7919 + self.unit)

    def refresh(self, now: float) -> None:
        self.model.advance(now)
        self.image.update(self.model.regmap, self.model.values(), self.model.ratios)

    def roll(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability


class _Datastore(ModbusServerContext):
    """pymodbus' server asks this for register values; we answer from the models.

    ModbusServerContext's own constructor is bypassed on purpose: it only knows
    static data blocks. The attributes set here are the ones pymodbus' server reads.
    """

    def __init__(
        self, devices: dict[int, SimulatedDevice], clock: Clock, received: Counter[int]
    ) -> None:
        self.old_simulator = True
        self.simdevices: list[Any] = []
        self._sim = devices
        self._clock = clock
        self._received = received

    def device_ids(self) -> list[int]:
        return list(self._sim)

    def _device(self, unit: int) -> SimulatedDevice:
        dev = self._sim.get(unit)
        if dev is None:
            raise NoSuchIdException(f"no simulated meter at unit {unit}")  # silence on the bus
        return dev

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        dev = self._device(device_id)
        faults = dev.model.faults
        if dev.roll(faults.timeout):
            raise NoSuchIdException("simulated timeout")
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        if faults.exception_code and dev.roll(faults.exception_rate):
            return ExcCodes(faults.exception_code)
        if func_code not in (3, 4):
            return ExcCodes.ILLEGAL_FUNCTION
        table = Table.HOLDING if func_code == 3 else Table.INPUT
        dev.refresh(self._clock())
        try:
            words = dev.image.read(table, address, count)
        except IllegalRead as exc:
            return ExcCodes(int(exc.code))
        if dev.roll(faults.garbage):
            return words[:-1]  # a well-framed answer with the wrong register count
        return words

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        self._device(device_id)
        return ExcCodes.ILLEGAL_FUNCTION  # simulated meters are read-only


class _PipelinedHandler(ServerRequestHandler):
    """One Modbus TCP connection that answers every request it gets, each in its own task.

    pymodbus 3.16's handler takes one frame per receive and leaves the rest in its
    buffer until more bytes come, and answers with the transaction id and unit of
    the *latest* request after the datastore's await (``self.last_pdu``): a client
    with several requests in flight got lost or crossed answers. Here every frame
    of a receive is taken, and each answer is built from its own request, so the
    simulator is a gateway that allows ``max_inflight`` > 1 (answers in the order
    the meters finish: a slow meter's answer comes after a fast one's).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)  # type: ignore[no-untyped-call]
        self._answering: set[asyncio.Task[None]] = set()

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        used = 0
        while used < len(data):
            try:
                n = TransactionManager.callback_data(self, data[used:], addr)
            except ModbusIOException:
                return used + int(super().callback_data(data[used:], addr))
            if not n:
                break
            used += n
            pdu, self.last_pdu = self.last_pdu, None
            if pdu is not None:
                task = asyncio.get_running_loop().create_task(self._answer(pdu, self.last_addr))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
        return used

    async def _answer(self, pdu: Any, addr: Any) -> None:
        try:
            response = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except NoSuchIdException:
            return  # nobody at this unit id: silence, as on a real bus
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _PipelinedTcpServer(ModbusTcpServer):
    def callback_new_connection(self) -> _PipelinedHandler:
        return _PipelinedHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class SimulatorServer:
    """One listening endpoint (a TCP port or a serial device) with one or more meters."""

    def __init__(
        self,
        endpoint: Endpoint,
        devices: Sequence[SimulatedDevice],
        *,
        clock: Clock = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.devices = {d.unit: d for d in devices}
        self.clock = clock
        #: Function code -> number of requests received with it.
        self.function_codes: Counter[int] = Counter()
        self._server: Any = None

    def _trace_pdu(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.function_codes[int(pdu.function_code)] += 1
        return pdu

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        context = _Datastore(self.devices, self.clock, self.function_codes)
        ep = self.endpoint
        now = self.clock()
        for dev in self.devices.values():
            dev.refresh(now)
        if ep.framing is Framing.RTU:
            self._server = ModbusSerialServer(
                context,
                framer=FramerType.RTU,
                port=ep.device,
                baudrate=ep.baudrate,
                parity=ep.parity,
                stopbits=ep.stopbits,
                bytesize=ep.bytesize,
                ignore_missing_devices=True,
                trace_pdu=self._trace_pdu,
            )
        else:
            framer = FramerType.RTU if ep.framing is Framing.RTU_OVER_TCP else FramerType.SOCKET
            # RTU over TCP is a serial line behind a box: one request at a time, pymodbus'.
            server = _PipelinedTcpServer if framer is FramerType.SOCKET else ModbusTcpServer
            self._server = server(
                context,
                framer=framer,
                address=(ep.host, ep.port),
                ignore_missing_devices=True,
                trace_pdu=self._trace_pdu,
            )
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:
            # pymodbus swallows the OSError (address in use, no such serial device) into a
            # warning and raises RuntimeError; callers handle OSError for "cannot listen".
            self._server = None
            raise OSError(f"the port is in use or the device cannot be opened ({exc})") from exc

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
