"""`simulate`: serve simulated meters until Ctrl-C (or --duration)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from agent.cli.common import (
    EXIT_OK,
    Commands,
    UsageError,
    add_config_arg,
    add_endpoint_args,
    parse_units,
)
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


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "simulate",
        help="serve simulated meters over Modbus TCP or RTU",
        description="Serve simulated meters of the built-in profiles until Ctrl-C (or "
        "--duration): one endpoint from the options, or every endpoint of a plant file.",
    )
    add_config_arg(p, "plant file: endpoints and meters", required=False)
    add_endpoint_args(p, required=False)
    p.add_argument("--profile", metavar="ID", help="profile of the simulated meters")
    p.add_argument(
        "--units",
        metavar="IDS",
        help="unit ids, e.g. 1 or 1-4 or 1,3,7 (default: the profile's unit id)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=1,
        help="random seed: the same seed, the same readings and faults (the next units "
        "count up from it; default 1)",
    )
    p.add_argument(
        "--load-kw",
        type=float,
        default=20.0,
        metavar="KW",
        help="typical active power in kW (default 20)",
    )
    p.add_argument(
        "--near-wrap",
        type=float,
        metavar="UNITS",
        help="start integer counters this far below their wrap point",
    )
    p.add_argument(
        "--freeze",
        action="store_true",
        help="freeze time: values stay constant (for exact comparisons)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="UNIT:KIND[=VALUE]",
        help="inject a fault: timeout, exception=CODE, garbage, reset=SECONDS, "
        "delay=SECONDS (probabilities as timeout=0.3)",
    )
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    p.set_defaults(handler=run_simulate)


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
