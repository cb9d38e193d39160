"""`scan`: which unit ids answer on a bus, and which profiles fit them (reads only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Commands,
    add_endpoint_args,
    endpoint_from_args,
    parse_units,
)
from drivers.decode import decode_value
from drivers.errors import ModbusTimeout, RetryableError, TransportError
from drivers.hints import failure_hint, silent_bus_hint
from drivers.profile import ProfileLibrary
from drivers.registers import READ_CODE, RegisterSpec
from drivers.transport import Endpoint, ModbusTransport, Timing


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "scan",
        help="find responding unit ids on a bus and suggest profiles",
        description="Ask every unit id in --units for each profile's probe register and list "
        "the units that answer, with the profiles whose probe value fits. Reads only.",
    )
    add_endpoint_args(p)
    p.add_argument(
        "--units",
        default="1-247",
        metavar="IDS",
        help="unit ids to try, e.g. 1-10,20 (default 1-247)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0.3,
        metavar="SECONDS",
        help="seconds per request (default 0.3)",
    )
    p.add_argument(
        "--json", action="store_true", help="a JSON list of the units that answered, no table"
    )
    p.set_defaults(handler=run_scan)


@dataclass
class ScanHit:
    unit: int
    profiles: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_scan(args: argparse.Namespace) -> int:
    endpoint = endpoint_from_args(args)
    units = parse_units(args.units)
    library = ProfileLibrary()
    probes = [
        (p.id, p.spec(p.probe.quantity), p.probe.min, p.probe.max)
        for p in library.all()
        if p.probe is not None
    ]
    timing = Timing(
        timeout_s=args.timeout, retries=0, inter_frame_delay_s=0.02 if endpoint.is_serial else 0.0
    )
    progress = Progress(
        TextColumn("scanning {task.fields[where]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("unit {task.fields[unit]}"),
        TextColumn("found {task.fields[found]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.json or not sys.stderr.isatty(),
    )
    try:
        with progress:
            task = progress.add_task(
                "scan", total=len(units), where=endpoint.describe(), unit="-", found=0
            )
            hits = asyncio.run(_scan(endpoint, timing, units, probes, progress, task))
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"hint: {failure_hint(endpoint, exc)}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps([{"unit": h.unit, "profiles": h.profiles, "notes": h.notes} for h in hits])
        )
        return EXIT_OK
    if not hits:
        print(
            f"no unit answered on {endpoint.describe()} (tried {len(units)} ids)\n"
            f"hint: {silent_bus_hint(endpoint)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    table = Table(title=f"Units answering on {endpoint.describe()}")
    table.add_column("unit", justify="right")
    table.add_column("suggested profiles")
    table.add_column("notes")
    for h in hits:
        table.add_row(str(h.unit), ", ".join(h.profiles) or "(none matched)", "; ".join(h.notes))
    Console().print(table)
    return EXIT_OK


Probe = tuple[str, RegisterSpec | None, float, float]


async def _scan(
    endpoint: Endpoint,
    timing: Timing,
    units: list[int],
    probes: list[Probe],
    progress: Progress,
    task: object,
) -> list[ScanHit]:
    hits: list[ScanHit] = []
    # Several profiles share a probe register; ask the wire once per distinct register.
    distinct: dict[tuple[int, int, int], RegisterSpec] = {}
    for _, spec, _, _ in probes:
        if spec is not None:
            distinct.setdefault((int(READ_CODE[spec.table]), spec.address, spec.words), spec)
    async with ModbusTransport(endpoint, timing) as transport:
        for unit in units:
            progress.update(task, unit=unit)  # type: ignore[arg-type]
            answers: dict[tuple[int, int, int], list[int]] = {}
            present = False
            for key, spec in distinct.items():
                try:
                    words = await transport.read(
                        unit, READ_CODE[spec.table], spec.address, spec.words
                    )
                except ModbusTimeout:
                    if not present:
                        break  # nobody home: do not spend a timeout per probe
                    continue
                except RetryableError:
                    present = True
                    continue
                except TransportError:
                    present = True  # an exception response: something is there
                    continue
                present = True
                answers[key] = words
            if present:
                hit = ScanHit(unit)
                for pid, spec, lo, hi in probes:
                    if spec is None:
                        continue
                    got = answers.get((int(READ_CODE[spec.table]), spec.address, spec.words))
                    if got is None:
                        continue
                    v = decode_value(spec, got, _unit_ratios(spec))
                    if v is not None and math.isfinite(v) and lo <= v <= hi:
                        hit.profiles.append(pid)
                if not answers:
                    hit.notes.append("answers, but refuses every probe register")
                hits.append(hit)
            progress.update(task, advance=1, found=len(hits))  # type: ignore[arg-type]
    return hits


def _unit_ratios(spec: RegisterSpec) -> dict[str, float]:
    # Probes compare a frequency or a voltage; transformer ratios are not read during a scan,
    # so a ratio-scaled probe is judged at ratio 1 (frequency never has a ratio).
    return {name: 1.0 for name in spec.ratios}
