"""`read`: one reading of a device with a profile, from the command line (reads only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from decimal import Decimal

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
from drivers.errors import TransportError
from drivers.exact import RecordingTransport, exact_values, format_exact
from drivers.hints import failure_hint
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
        sample, ratios, exact = asyncio.run(_read_once(endpoint, timing, profile, unit))
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"hint: {failure_hint(endpoint, exc, unit)}", file=sys.stderr)
        return EXIT_FAILED
    shown = _shown(sample, exact)
    for q in sample.implausible:
        lo, hi = profile.plausible_range(q)
        print(
            f"note: {q.value} reads {shown[q] or sample.implausible[q]}, outside its plausible "
            f"range [{_plain(lo)}, {_plain(hi)}]; the agent publishes it as null",
            file=sys.stderr,
        )
    if args.json:
        # Exact decimals as JSON numbers: a reader that wants every digit parses them
        # with Decimal (Python: json.loads(text, parse_float=Decimal)).
        fields = (f"{json.dumps(q.value)}: {shown[q] or 'null'}" for q in sample.values)
        print("{" + ", ".join(fields) + "}")
        return EXIT_OK
    table = Table(
        title=f"{profile.manufacturer} {profile.model} — unit {unit} at {endpoint.describe()}"
    )
    table.add_column("quantity")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit")
    table.add_column("register")
    for spec in profile.registers:
        q = spec.quantity
        text = "n/a" if shown[q] is None else _grouped(exact[q])
        if q in sample.implausible:
            text = f"implausible: {text}"
        where = f"{spec.type.value} @ {spec.address} (0x{spec.address:04X})"
        table.add_row(q.value, text, _unit_label(q), where)
    if ratios:
        # Values are scaled by these; a commissioning engineer compares them with the
        # meter's own PT/CT set-up screen.
        table.caption = "transformer ratios read from the meter: " + ", ".join(
            f"{name} = {value:g}" for name, value in sorted(ratios.items())
        )
    Console().print(table)
    return EXIT_OK


def _shown(sample: Sample, exact: dict[Quantity, Decimal | None]) -> dict[Quantity, str | None]:
    """Each value as the register holds it (every digit, no exponent), None where the
    reader found none ("not available" patterns, NaN)."""
    out: dict[Quantity, str | None] = {}
    for q, v in sample.values.items():
        value = exact.get(q)
        if v is None and q not in sample.implausible:
            out[q] = None
        else:
            out[q] = format_exact(value, grouped=False) if value is not None else repr(v)
    return out


def _plain(x: float) -> str:
    """A limit as written (1e12 as 1,000,000,000,000): no exponent beside exact digits."""
    return format_exact(Decimal(repr(x)).normalize(), grouped=True)


def _grouped(value: Decimal | None) -> str:
    return "n/a" if value is None else format_exact(value, grouped=True)


async def _read_once(
    endpoint: Endpoint, timing: Timing, profile: Profile, unit: int
) -> tuple[Sample, dict[str, float], dict[Quantity, Decimal | None]]:
    reader = DeviceReader(profile, unit)
    async with ModbusTransport(endpoint, timing) as transport:
        recorder = RecordingTransport(transport)
        sample = await reader.read(recorder)
    return sample, reader.ratios, exact_values(profile, recorder.blocks, unit)
