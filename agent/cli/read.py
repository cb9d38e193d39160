"""`read`: one reading of a device with a profile, from the command line (reads only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from rich.console import Console
from rich.table import Table

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Commands,
    UsageError,
    add_endpoint_args,
    endpoint_from_args,
)
from drivers.errors import ModbusTimeout, TransportError
from drivers.profile import Profile, ProfileLibrary
from drivers.quantities import Quantity
from drivers.reader import DeviceReader, Sample
from drivers.transport import Endpoint, ModbusTransport, Timing


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "read",
        help="one-shot read of a device with a profile",
        description="Read every quantity of a profile once from one device and print them "
        "(a table, or JSON). Reads only: nothing is written to the device.",
    )
    add_endpoint_args(p)
    p.add_argument("--unit", type=int, metavar="ID", help="unit id (default: the profile's)")
    p.add_argument(
        "--profile", required=True, metavar="ID", help="profile id, see `energy-agent profiles`"
    )
    p.add_argument("--json", action="store_true", help="one JSON object keyed by quantity")
    p.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds per request (default 1)",
    )
    p.add_argument(
        "--retries",
        type=int,
        metavar="N",
        default=1,
        help="further tries of a request that timed out or got no valid answer (default 1)",
    )
    p.set_defaults(handler=run_read)


def _unit_label(q: Quantity) -> str:
    suffix = q.value.rsplit("_", 1)[-1]
    return {
        "v": "V",
        "a": "A",
        "kw": "kW",
        "kvar": "kvar",
        "kva": "kVA",
        "hz": "Hz",
        "kwh": "kWh",
        "kvarh": "kvarh",
        "m3": "m³",
        "units": "units",
    }.get(suffix, "")


def run_read(args: argparse.Namespace) -> int:
    profile = ProfileLibrary().get(args.profile)
    endpoint = endpoint_from_args(args, profile.serial)
    unit = args.unit if args.unit is not None else profile.default_unit
    if not 0 <= unit <= 255:
        raise UsageError(f"--unit {unit}: unit ids are 0..255 (1..247 on a serial line)")
    timing = Timing(timeout_s=args.timeout, retries=args.retries)
    try:
        sample, ratios = asyncio.run(_read_once(endpoint, timing, profile, unit))
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, ModbusTimeout):
            print(
                "hint: check wiring, unit id, baud rate and parity; `energy-agent scan` "
                "lists the unit ids that answer",
                file=sys.stderr,
            )
        return EXIT_FAILED
    values = sample.values
    for q, raw in sample.implausible.items():
        lo, hi = profile.plausible_range(q)
        print(
            f"note: {q.value} reads {raw:.6g}, outside its plausible range "
            f"[{lo:g}, {hi:g}]; the agent publishes it as null",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({q.value: v for q, v in values.items()}))
        return EXIT_OK
    table = Table(
        title=f"{profile.manufacturer} {profile.model} — unit {unit} at {endpoint.describe()}"
    )
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for q, v in values.items():
        shown = "n/a" if v is None else f"{v:.6g}"
        if q in sample.implausible:
            shown = f"implausible: {sample.implausible[q]:.6g}"
        table.add_row(q.value, shown, _unit_label(q))
    if ratios:
        # Values are scaled by these; a commissioning engineer compares them with the
        # meter's own PT/CT set-up screen.
        table.caption = "transformer ratios read from the meter: " + ", ".join(
            f"{name} = {value:g}" for name, value in sorted(ratios.items())
        )
    Console().print(table)
    return EXIT_OK


async def _read_once(
    endpoint: Endpoint, timing: Timing, profile: Profile, unit: int
) -> tuple[Sample, dict[str, float]]:
    reader = DeviceReader(profile, unit)
    async with ModbusTransport(endpoint, timing) as transport:
        sample = await reader.read(transport)
    return sample, reader.ratios
