"""`simulate`: serve simulated meters until Ctrl-C (or --duration)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from agent.cli.common import EXIT_OK, UsageError, parse_units
from confdoc.errors import DocumentError
from confdoc.yamldoc import read_document
from drivers.profile import ProfileLibrary
from drivers.simulator.plant import FaultSpec, Plant, SimEndpoint, SimMeter, parse_plant
from drivers.simulator.server import SimulatorServer

_FAULT_KEYS = {
    "timeout": "timeout",
    "exception": "exception_code",
    "garbage": "garbage",
    "reset": "reset_after_s",
    "delay": "delay_s",
}


def parse_faults(items: list[str], units: list[int]) -> dict[int, FaultSpec]:
    """``3:timeout`` ``2:exception=4`` ``5:garbage=0.3`` ``1:reset=30`` -> per-unit faults."""
    raw: dict[int, dict[str, float]] = {}
    for item in items:
        unit_text, sep, rest = item.partition(":")
        kind, _, value = rest.partition("=")
        if not sep or not unit_text.isdigit() or kind not in _FAULT_KEYS:
            raise UsageError(
                f"--fault '{item}': use UNIT:KIND[=VALUE] with KIND one of {', '.join(_FAULT_KEYS)}"
            )
        unit = int(unit_text)
        if unit not in units:
            raise UsageError(f"--fault '{item}': unit {unit} is not simulated (units: {units})")
        key = _FAULT_KEYS[kind]
        default = {"timeout": 1.0, "garbage": 1.0, "exception_code": 4}.get(key)
        try:
            number = float(value) if value else default
        except ValueError:
            raise UsageError(f"--fault '{item}': '{value}' is not a number") from None
        if number is None:
            raise UsageError(f"--fault '{item}': {kind} needs a value, e.g. {kind}=30")
        raw.setdefault(unit, {})[key] = number
    return {u: FaultSpec.model_validate(f) for u, f in raw.items()}


def plant_from_args(args: argparse.Namespace, library: ProfileLibrary) -> Plant:
    if args.config:
        if args.tcp or args.rtu or args.rtu_over_tcp or args.profile:
            raise UsageError("give either -c FILE or an endpoint with --profile, not both")
        path = Path(args.config)
        text, problems = read_document(path, "the plant file")
        if text is None:
            raise DocumentError(problems)
        return parse_plant(text, str(path), library)
    if not (args.tcp or args.rtu or args.rtu_over_tcp):
        raise UsageError(
            "give an endpoint (--tcp HOST:PORT, --rtu DEVICE or --rtu-over-tcp "
            "HOST:PORT) and --profile, or a plant file with -c"
        )
    if not args.profile:
        raise UsageError("--profile is required (see `energy-agent profiles`)")
    profile = library.get(args.profile)
    units = parse_units(args.units) if args.units else [profile.default_unit]
    faults = parse_faults(args.fault, units)
    meters = [
        SimMeter(
            unit=u,
            profile=profile.id,
            seed=args.seed + i,
            load_kw=args.load_kw,
            near_wrap=args.near_wrap,
            faults=faults.get(u, FaultSpec()),
        )
        for i, u in enumerate(units)
    ]
    endpoint = SimEndpoint(
        tcp=args.tcp,
        rtu=args.rtu,
        rtu_over_tcp=args.rtu_over_tcp,
        baudrate=args.baudrate or profile.serial.baudrate,
        parity=args.parity or profile.serial.parity,
        stopbits=args.stopbits or profile.serial.stopbits,
        meters=meters,
    )
    return Plant(endpoints=(endpoint,))


def run_simulate(args: argparse.Namespace) -> int:
    library = ProfileLibrary()
    plant = plant_from_args(args, library)
    start = time.time()
    clock = (lambda: start) if args.freeze else time.time
    servers = plant.servers(library, clock=clock)
    asyncio.run(_serve(servers, args.duration))
    return EXIT_OK


async def _serve(servers: list[SimulatorServer], duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            try:
                await stack.enter_async_context(server)
            except OSError as exc:
                raise UsageError(
                    f"cannot listen on {server.endpoint.describe()}: {exc.strerror or exc}"
                ) from None
            units = ", ".join(str(u) for u in server.devices)
            print(f"simulating unit {units} on {server.endpoint.describe()}", flush=True)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
    print("stopped", file=sys.stderr, flush=True)
