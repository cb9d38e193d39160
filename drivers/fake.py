"""An in-process transport for unit tests: real planning and decoding, no sockets.

It answers from :class:`drivers.image.RegisterImage` exactly as the simulator
does, records every request, and can be told to fail the next requests with
any driver error, so error paths are tested without patching.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from drivers.errors import ModbusExceptionResponse, TransportError
from drivers.image import IllegalRead, RegisterImage
from drivers.registers import FunctionCode, Table


@dataclass
class FakeTransport:
    images: dict[int, RegisterImage] = field(default_factory=dict)
    name: str = "fake"
    requests: list[tuple[int, int, int, int]] = field(default_factory=list)
    failures: deque[TransportError] = field(default_factory=deque)

    async def read(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        fc = FunctionCode(fc)
        self.requests.append((unit, int(fc), address, count))
        if self.failures:
            raise self.failures.popleft()
        if unit not in self.images:
            from drivers.errors import ModbusTimeout

            raise ModbusTimeout(
                "no response",
                bus=self.name,
                unit=unit,
                function_code=int(fc),
                address=address,
                count=count,
            )
        table = Table.HOLDING if fc is FunctionCode.READ_HOLDING_REGISTERS else Table.INPUT
        try:
            return self.images[unit].read(table, address, count)
        except IllegalRead as exc:
            raise ModbusExceptionResponse(
                int(exc.code),
                bus=self.name,
                unit=unit,
                function_code=int(fc),
                address=address,
                count=count,
            ) from exc

    async def close(self) -> None:
        return None
