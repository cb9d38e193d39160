"""What to check when a bus or a meter does not answer, by transport.

A Modbus TCP meter and an RS-485 line fail for different reasons: on TCP it is
the host, the port, a firewall or the unit id behind a gateway; on a serial
line it is the port itself (adapter unplugged, no permission), the wiring and
the line settings. A hint that talks about baud rates to someone debugging a
TCP meter sends them the wrong way, so the hint is chosen by the endpoint and
the error, and a serial port is looked at on disk (exists? readable?) before
anything else is suggested.
"""

from __future__ import annotations

import grp
import os

from drivers.endpoint import Endpoint, Framing
from drivers.errors import (
    ConnectionLost,
    DeviceBusy,
    ExceptionCode,
    MalformedResponse,
    ModbusExceptionResponse,
    TransportError,
)

_SCAN = "`energy-agent scan` lists the unit ids that answer"


def serial_port_problem(device: str) -> str | None:
    """Why ``device`` cannot be opened, from the file system; None if it looks usable."""
    if not os.path.exists(device):
        return (
            f"{device} does not exist: is the USB/RS-485 adapter plugged in? "
            "`ls -l /dev/serial/by-id/` lists the serial ports; a by-id path survives "
            "reboots and re-plugging, /dev/ttyUSB0 does not"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        try:
            group = grp.getgrgid(os.stat(device).st_gid).gr_name
        except (KeyError, OSError):
            group = "dialout"
        return (
            f"no permission to open {device}: add the user to its group "
            f"(`sudo usermod -aG {group} $USER`, then log in again), or run the service "
            f"with SupplementaryGroups={group}"
        )
    return None


def failure_hint(endpoint: Endpoint, exc: TransportError, unit: int | None = None) -> str:
    """One sentence on what to check, for ``exc`` on ``endpoint``."""
    unit_text = f"unit {unit}" if unit is not None else "the unit"
    if endpoint.framing is Framing.RTU:
        problem = serial_port_problem(endpoint.device)
        if problem is not None:
            return problem
    if isinstance(exc, ModbusExceptionResponse):
        if exc.code == ExceptionCode.ILLEGAL_DATA_ADDRESS:
            return (
                f"{unit_text} answered but has no such register: is the profile the right "
                "one for this model and firmware? (`energy-agent profiles`)"
            )
        return f"{unit_text} answered and refused the request: is the profile right for it?"
    if isinstance(exc, DeviceBusy) and exc.code in (
        ExceptionCode.GATEWAY_PATH_UNAVAILABLE,
        ExceptionCode.GATEWAY_TARGET_FAILED,
    ):
        return (
            f"the Modbus TCP gateway answered, {unit_text} behind it did not: check the unit "
            "id, and the gateway's serial side (wiring A/B, baud rate, parity) against the "
            "meter's settings; " + _SCAN
        )
    if endpoint.framing is Framing.RTU:
        return _serial_hint(endpoint, exc, unit_text)
    return _tcp_hint(endpoint, exc, unit_text)


def _serial_hint(endpoint: Endpoint, exc: TransportError, unit_text: str) -> str:
    line = f"{endpoint.baudrate} baud, {endpoint.bytesize}{endpoint.parity}{endpoint.stopbits}"
    if isinstance(exc, ConnectionLost):
        return (
            f"{endpoint.device} cannot be opened: is another program (a second agent, "
            "mbpoll, a terminal) holding it? `fuser -v " + endpoint.device + "` shows who"
        )
    if isinstance(exc, MalformedResponse):
        return (
            f"answers arrive garbled: check that the meter is set to {line} (parity and baud "
            "rate must match exactly), the termination resistors at both ends of the line, "
            "and that no two units share an id"
        )
    return (
        f"no answer from {unit_text} on {endpoint.device}: check the wiring (A/B swapped?), "
        f"that the meter is set to {line} and to this unit id; " + _SCAN
    )


def _tcp_hint(endpoint: Endpoint, exc: TransportError, unit_text: str) -> str:
    where = f"{endpoint.host}:{endpoint.port}"
    if isinstance(exc, ConnectionLost):
        return (
            f"nothing accepted a connection at {where}: check the host and the port "
            "(Modbus TCP is usually 502), that the device is powered and reachable "
            f"(`ping {endpoint.host}`), and that no firewall blocks port {endpoint.port}"
        )
    if endpoint.framing is Framing.RTU_OVER_TCP:
        return (
            f"the serial device server at {where} accepted the connection but {unit_text} did "
            "not answer: check the unit id, the server's serial settings (baud rate, parity) "
            "against the meter's, and that it is set to raw TCP (not Modbus TCP); " + _SCAN
        )
    return (
        f"{where} accepted the connection but {unit_text} did not answer: check the unit id "
        "(a Modbus TCP gateway passes it to its serial side; meters on their own often "
        "want 1 or 255), and that the gateway's serial side matches the meters; " + _SCAN
    )


def silent_bus_hint(endpoint: Endpoint) -> str:
    """What to check when no unit id of a scan answered at all."""
    if endpoint.framing is Framing.RTU:
        problem = serial_port_problem(endpoint.device)
        if problem is not None:
            return problem
        return (
            f"check the wiring (A/B swapped? common ground?), the termination, and that the "
            f"meters are set to {endpoint.baudrate} baud, {endpoint.bytesize}{endpoint.parity}"
            f"{endpoint.stopbits} (--baudrate, --parity, --stopbits)"
        )
    if endpoint.framing is Framing.RTU_OVER_TCP:
        return (
            "the serial device server is reachable but passes no answer back: check its serial "
            "settings (baud rate, parity) against the meters', that it is in raw TCP mode, and "
            "the RS-485 wiring behind it"
        )
    return (
        "the host accepts connections but no unit id answered: a meter on its own may use a "
        "unit id outside the range (try --units 0-255); behind a Modbus TCP gateway, check "
        "the gateway's serial side (wiring, baud rate, parity)"
    )
