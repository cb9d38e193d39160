"""`read` and `scan`: talk to real devices from the command line, reads only."""

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

from agent.cli.common import EXIT_FAILED, EXIT_OK, UsageError, parse_units
from drivers.decode import decode_value
from drivers.errors import ModbusTimeout, RetryableError, TransportError
from drivers.profile import Profile, ProfileLibrary, SerialDefaults
from drivers.quantities import Quantity
from drivers.reader import DeviceReader, Sample
from drivers.registers import READ_CODE, RegisterSpec
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing


def endpoint_from_args(args: argparse.Namespace, serial: SerialDefaults | None = None) -> Endpoint:
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


# --- scan ----------------------------------------------------------------------------------


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
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps([{"unit": h.unit, "profiles": h.profiles, "notes": h.notes} for h in hits])
        )
        return EXIT_OK
    if not hits:
        print(
            f"no unit answered on {endpoint.describe()} (tried {len(units)} ids); check "
            "wiring, baud rate and parity",
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
