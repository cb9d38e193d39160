"""One exception tree for the drivers package.

Foreign exceptions (pymodbus, pyserial, OSError) are mapped into these once, at
the transport boundary, with ``raise ... from``. Every transport error carries
the unit id and the address it was about, because "timeout" alone tells a
commissioning engineer nothing. Retryable and permanent failures are different
types so the scheduler can decide by ``except`` clause, not by parsing text.
A broken profile is also a document error (:mod:`confdoc.errors`), listed with
its lines like a broken config.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import TypeVar

from confdoc.errors import DocumentError


class DriverError(Exception):
    """Base of everything the drivers raise on purpose."""


# --- transport -----------------------------------------------------------------------------


class ExceptionCode(IntEnum):
    """Modbus exception codes (Modbus Application Protocol V1.1b3, section 7)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    MEMORY_PARITY_ERROR = 0x08
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B

    @classmethod
    def describe(cls, code: int) -> str:
        try:
            return cls(code).name.lower().replace("_", " ")
        except ValueError:
            return f"unknown exception code {code}"


#: Exception codes after which the same request may succeed later.
RETRYABLE_CODES = frozenset(
    {
        ExceptionCode.ACKNOWLEDGE,
        ExceptionCode.SERVER_DEVICE_BUSY,
        ExceptionCode.GATEWAY_PATH_UNAVAILABLE,
        ExceptionCode.GATEWAY_TARGET_FAILED,
    }
)


class TransportError(DriverError):
    """A request to one unit failed. Carries where, so the message says where."""

    def __init__(
        self,
        detail: str,
        *,
        bus: str = "",
        unit: int | None = None,
        function_code: int | None = None,
        address: int | None = None,
        count: int | None = None,
    ) -> None:
        self.detail = detail
        self.bus = bus
        self.unit = unit
        self.function_code = function_code
        self.address = address
        self.count = count
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.bus:
            where.append(f"bus {self.bus}")
        if self.unit is not None:
            where.append(f"unit {self.unit}")
        if self.function_code is not None and self.address is not None:
            where.append(
                f"FC{self.function_code:02d} address {self.address}"
                + (f" count {self.count}" if self.count is not None else "")
            )
        return f"{self.detail} ({', '.join(where)})" if where else self.detail

    #: Short machine-readable reason for status payloads and metrics labels.
    reason = "transport"


class RetryableError(TransportError):
    """The same request may succeed later: back off and try again."""


T = TypeVar("T")


async def retrying(attempts: int, exchange: Callable[[], Awaitable[T]]) -> T:
    """``exchange()``, again after a retryable failure, ``attempts`` times at most; the
    last failure is raised. Every transport retries the same way (``timing.retries``)."""
    for attempt in range(attempts):
        try:
            return await exchange()
        except RetryableError:
            if attempt + 1 >= attempts:
                raise
    raise ValueError(f"attempts must be at least 1, not {attempts}")


class PermanentError(TransportError):
    """Retrying the same request will not help: configuration or profile is wrong."""


class ModbusTimeout(RetryableError):
    reason = "timeout"


class ConnectionLost(RetryableError):
    reason = "connection"


class MalformedResponse(RetryableError):
    """Garbage on the line: wrong length, wrong unit, bad CRC surfaced as nonsense."""

    reason = "malformed"


class DeviceBusy(RetryableError):
    """An exception response whose code says "try later" (busy, gateway paths)."""

    reason = "busy"

    def __init__(self, code: int, **where: object) -> None:
        self.code = code
        super().__init__(
            f"exception response {code:#04x} ({ExceptionCode.describe(code)})",
            **where,  # type: ignore[arg-type]
        )


class ModbusExceptionResponse(PermanentError):
    """The device understood the request and refused it (illegal address, function...)."""

    reason = "exception"

    def __init__(self, code: int, **where: object) -> None:
        self.code = code
        super().__init__(
            f"exception response {code:#04x} ({ExceptionCode.describe(code)})",
            **where,  # type: ignore[arg-type]
        )


class TransportConfigError(PermanentError):
    """The transport itself cannot be set up (serial port missing, bad host)."""

    reason = "config"


# --- profiles ------------------------------------------------------------------------------


class ProfileError(DocumentError, DriverError):
    """A meter profile is invalid or unknown: a document error that is also the drivers'."""
