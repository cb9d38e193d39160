"""Where a bus is and how it is timed: plain types, no pymodbus.

Apart from :mod:`drivers.transport` so that the config models (and through them
the core, the page and the CLI's light commands) can name a bus without
importing the Modbus client library; :mod:`drivers.transport` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from drivers.registers import FunctionCode


class Transport(Protocol):
    """Reads registers; the interface the reader, scanner and agent depend on."""

    name: str

    async def read(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]: ...

    async def close(self) -> None: ...


class Framing(StrEnum):
    TCP = "tcp"  # Modbus TCP (MBAP header)
    RTU = "rtu"  # RTU on a local serial device
    RTU_OVER_TCP = "rtu_over_tcp"  # RTU frames through a TCP socket (serial device server)


@dataclass(frozen=True)
class Endpoint:
    """Where a bus is. ``host``/``port`` for the TCP framings, ``device`` for RTU."""

    framing: Framing
    host: str = ""
    port: int = 502
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def describe(self) -> str:
        if self.framing is Framing.RTU:
            return f"{self.device} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"
        prefix = "rtu+tcp://" if self.framing is Framing.RTU_OVER_TCP else "tcp://"
        return f"{prefix}{self.host}:{self.port}"

    @property
    def is_serial(self) -> bool:
        return self.framing is not Framing.TCP


@dataclass(frozen=True)
class Timing:
    timeout_s: float = 1.0
    retries: int = 1
    #: Pause between the end of one exchange and the next request on a serial line.
    inter_frame_delay_s: float = 0.0
    #: Modbus TCP: requests sent on the connection before the first is answered
    #: (transaction ids tell the answers apart). 1 is one at a time, through pymodbus.
    max_inflight: int = 1
