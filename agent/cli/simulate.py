"""`simulate`: serve simulated meters until Ctrl-C (or --duration)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
import termios
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
from confdoc.yamldoc import parse_yaml, read_document
from drivers.endpoint import Framing
from drivers.profile import ProfileLibrary
from drivers.simulator.plant import FaultSpec, Plant, SimEndpoint, SimMeter, parse_plant
from drivers.simulator.server import SimulatorServer

#: The plant file, for `simulate --help` (README: Simulator says the same).
PLANT_FORMAT = """\
plant file (-c FILE with `endpoints:`):
  endpoints:
    - tcp: 127.0.0.1:5020        # or rtu_over_tcp: HOST:PORT, or rtu: /dev/pts/7
      # rtu only: baudrate: 9600, parity: N|E|O, stopbits: 1|2
      meters:
        - unit: 1                # 0..255, one meter per unit id
          profile: eastron-sdm630  # or registers: [...] (+ limits, ratios, kind)
                                 # as in an agent's config
          seed: 1                # the same seed, the same readings (default: counts up)
          load_kw: 20            # typical load (m3/h for gas, units/h for production)
          export: false          # true: power flows out, export counters run
          ratio_values: {ct: 40} # what the meter's PT/CT ratio registers hold
          start_counters: 1000   # counters at start (canonical units)
          near_wrap: 1000        # or: start integer counters this far below their wrap
          faults: {timeout: 0.3, exception_code: 4, exception_rate: 1.0, garbage: 0.2,
                   reset_after_s: 30, delay_s: 0.5}   # every key optional
  Any other key is an error, with its line.

examples:
  energy-agent simulate --tcp 127.0.0.1:5020 --profile eastron-sdm630 --units 1-3
  energy-agent simulate -c plant.yaml
  energy-agent simulate -c agent.yaml --serial rs485-1=/tmp/ttyB
"""

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
        description="Serve simulated meters until Ctrl-C (or --duration): one endpoint from "
        "the options (--tcp/--rtu/--rtu-over-tcp with --profile), or every device of a file "
        "given with -c: an agent's config (each device on its bus: loopback TCP buses on "
        "their own port, serial buses on the device given with --serial; other buses are "
        "listed as not simulated) or a plant file (endpoints and their meters, below).",
        epilog=PLANT_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(
        p,
        "an agent's config (simulate its devices, see above) or a plant file (format below)",
        required=False,
    )
    p.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="BUS=DEVICE",
        help="with an agent's config: serve serial bus BUS on DEVICE, the other end of the "
        "line the agent opens (a socat pty pair: see the README's Simulator)",
    )
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
        if args.units or args.fault or args.near_wrap is not None:
            raise UsageError(
                "--units, --fault and --near-wrap go with --profile; with -c FILE, a plant "
                "file sets them per meter (units, faults, near_wrap)"
            )
        path = Path(args.config)
        text, problems = read_document(path, "the plant file")
        if text is None:
            raise DocumentError(problems)
        doc, _ = parse_yaml(text, str(path))
        if doc is not None and isinstance(doc.data, dict) and "endpoints" not in doc.data:
            return _agent_plant(path, library, _serial_peers(args.serial))
        if args.serial:
            raise UsageError("--serial goes with an agent's config; a plant file names its rtu:")
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


def _serial_peers(items: list[str]) -> dict[str, str]:
    peers = {}
    for item in items:
        bus, sep, device = item.partition("=")
        if not sep or not bus or not device:
            raise UsageError(f"--serial '{item}': use BUS=DEVICE, e.g. rs485-1=/tmp/ttyB")
        peers[bus] = device
    return peers


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _agent_plant(path: Path, library: ProfileLibrary, peers: dict[str, str]) -> Plant:
    """Every device of an agent's config on its own bus, where this machine can serve it.

    A TCP bus is served on its port when its host is loopback (the agent on this
    machine then reads the simulator as it would the plant); a serial bus on the
    device ``--serial`` gives for it. Any other bus is named as not simulated, with why.
    """
    from agent.config import load_config
    from agent.demo.plant import plant_for

    config = load_config(path, profiles=library, files=False)
    served, skipped = [], []
    for bus in config.buses:
        ep = bus.endpoint()
        if ep.framing is Framing.RTU:
            if bus.id in peers:
                served.append(bus.id)
            else:
                skipped.append(f"bus {bus.id} ({ep.describe()}): serial; give --serial "
                               f"{bus.id}=DEVICE with the other end of its line")  # fmt: skip
        elif _is_loopback(ep.host):
            served.append(bus.id)
        else:
            skipped.append(f"bus {bus.id} ({ep.describe()}): not loopback; the simulator "
                           "serves on this machine only (set its host to 127.0.0.1 in a "
                           "copy of the config)")  # fmt: skip
    unknown = sorted(set(peers) - {b.id for b in config.buses})
    if unknown:
        raise UsageError(f"--serial: no bus {', '.join(unknown)} in {path}")
    for line in skipped:
        print(f"not simulated: {line}", file=sys.stderr, flush=True)
    with_devices = {d.bus for d in config.devices}
    if not [b for b in served if b in with_devices]:
        raise UsageError(f"{path}: no bus of this agent config can be simulated here")
    print(f"simulating the devices of agent config {path}", flush=True)
    return plant_for(config, library, peers, only=served)


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
            except termios.error as exc:  # pyserial's settings on a device that refuses them
                raise UsageError(
                    f"cannot set {server.endpoint.describe()} on its device: {exc.args[-1]} "
                    "(a pty takes no parity: use --parity N on a socat pair)"
                ) from None
            units = ", ".join(str(u) for u in server.devices)
            print(f"simulating unit {units} on {server.endpoint.describe()}", flush=True)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
    print("stopped", file=sys.stderr, flush=True)
