"""What every command shares: exit codes, the usage error, small argument parsers.

Kept apart from :mod:`agent.cli.main` (which imports the commands to build its
parser) so that a command never imports ``main`` back. Light on purpose: every
command imports it, ``bridge`` included, so nothing here may load Modbus, the
core or a network client at import time.

Exit codes: 0 success, 1 the job ran but failed (a meter did not answer),
2 the input is wrong (bad config, bad arguments, unknown profile), 3 the job ran
and produced nothing (``replay``: no record came out of the readings).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from drivers.endpoint import Endpoint
    from drivers.profile import SerialDefaults

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3

#: What ``set_defaults(handler=...)`` names: the parsed arguments in, the exit code out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]
#: What a command's ``register`` receives: ``energy-agent``'s sub-parsers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """A wrong argument; the message says which and how to fix it."""


def parse_units(text: str) -> list[int]:
    """``1-4,7`` -> [1, 2, 3, 4, 7]; every id 0..255."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise UsageError(f"--units: '{part}' is not a unit id or range like 1-5") from None
        if not (0 <= a <= b <= 255):
            raise UsageError(f"--units: '{part}' must lie within 0..255, low to high")
        units.extend(range(a, b + 1))
    return sorted(set(units))


def add_config_arg(p: argparse.ArgumentParser, help: str, *, required: bool = True) -> None:
    """``-c FILE``: the same spelling in every command, each saying which file it wants."""
    p.add_argument("-c", "--config", required=required, metavar="FILE", help=help)


def add_endpoint_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Where the meters are: one of --tcp, --rtu, --rtu-over-tcp, and the serial settings."""
    where = p.add_mutually_exclusive_group(required=required)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP device or gateway")
    where.add_argument("--rtu", metavar="DEVICE", help="serial device, e.g. /dev/ttyUSB0")
    where.add_argument(
        "--rtu-over-tcp", metavar="HOST:PORT", help="RTU frames through a serial device server"
    )
    p.add_argument(
        "--baudrate",
        type=int,
        metavar="BAUD",
        help="serial speed (default: the profile's, or 9600)",
    )
    p.add_argument("--parity", choices=["N", "E", "O"], help="serial parity (default: profile's)")
    p.add_argument(
        "--stopbits",
        type=int,
        choices=[1, 2],
        help="serial stop bits (default: the profile's, or 1)",
    )


def endpoint_from_args(args: argparse.Namespace, serial: SerialDefaults | None = None) -> Endpoint:
    """The endpoint :func:`add_endpoint_args` describes; serial settings default to ``serial``.

    drivers is imported here, not at the top: see the module's note.
    """
    from drivers.endpoint import Endpoint, Framing
    from drivers.profile import SerialDefaults

    serial = serial or SerialDefaults()
    if args.rtu:
        return Endpoint(
            Framing.RTU,
            device=args.rtu,
            baudrate=args.baudrate or serial.baudrate,
            parity=args.parity or serial.parity,
            stopbits=args.stopbits or serial.stopbits,
            bytesize=serial.bytesize,
        )
    text = args.tcp or args.rtu_over_tcp
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        flag = "--tcp" if args.tcp else "--rtu-over-tcp"
        raise UsageError(f"{flag}: '{text}' is not HOST:PORT (e.g. 192.168.1.20:502)")
    return Endpoint(Framing.TCP if args.tcp else Framing.RTU_OVER_TCP, host=host, port=int(port))
