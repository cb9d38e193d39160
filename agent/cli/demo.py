"""`demo`: a simulated plant, read live, nothing to configure.

Until `run` exists this is the whole demo: simulated meters on a TCP bus and on
an RS-485 line (through a pty pair), read by the same drivers the agent uses,
shown as a live table. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from importlib import resources

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.cli.main import EXIT_OK
from agent.config import parse_config
from agent.config.models import AgentConfig, Device
from agent.demo.plant import plant_for
from drivers.errors import TransportError
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from drivers.reader import DeviceReader
from drivers.simulator.ptypair import PtyPair
from drivers.transport import ModbusTransport


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_config_text() -> str:
    return (resources.files("agent.demo") / "demo.yaml").read_text(encoding="utf-8")


@dataclass
class DeviceState:
    device: Device
    reader: DeviceReader
    values: dict[Quantity, float | None] = field(default_factory=dict)
    ok_at: float | None = None
    error: str = ""
    polls: int = 0
    failures: int = 0


def run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args.duration, use_socat=not args.no_rtu))


async def _demo(duration: float | None, *, use_socat: bool) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=140)
    library = ProfileLibrary()
    async with PtyPair(prefer_socat=use_socat) as pty:
        env = dict(os.environ)
        env.setdefault("DEMO_LINE_A_PORT", str(free_port()))
        env["DEMO_RS485_PORT"] = pty.a
        config = parse_config(demo_config_text(), "demo.yaml", env=env, profiles=library)
        plant = plant_for(config, library, {"rs485-1": pty.b})
        servers = plant.servers(library)
        async with contextlib.AsyncExitStack() as stack:
            for server in servers:
                await stack.enter_async_context(server)
            console.print(
                f"[bold]energy-agent demo[/bold]: {len(config.devices)} simulated "
                f"meters at site '{config.site.id}'"
            )
            for bus in config.buses:
                console.print(f"  bus {bus.id}: {bus.endpoint().describe()}")
            console.print(f"  RS-485 line through a {pty.kind} pty pair: {pty.a} <-> {pty.b}")
            console.print(
                "  The agent's `run` (MQTT publishing) is not built yet: this demo "
                "reads the meters live with the agent's drivers. Ctrl-C stops.\n"
            )
            await _poll_live(config, library, console, duration)
    return EXIT_OK


async def _poll_live(
    config: AgentConfig, library: ProfileLibrary, console: Console, duration: float | None
) -> None:
    states: list[DeviceState] = []
    for dev in config.devices:
        regmap = library.get(dev.profile) if dev.profile is not None else dev.inline_map()
        assert regmap is not None  # the config model guarantees a profile or registers
        states.append(DeviceState(dev, DeviceReader(regmap, dev.unit)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    deadline = None if duration is None else time.monotonic() + duration
    async with contextlib.AsyncExitStack() as stack:
        transports = {}
        for bus in config.buses:
            transports[bus.id] = await stack.enter_async_context(
                ModbusTransport(bus.endpoint(), bus.timing(), name=bus.id)
            )
        live = Live(
            _render(states),
            console=console,
            refresh_per_second=2,
            auto_refresh=sys.stdout.isatty(),
            transient=False,
        )
        with live:
            while not stop.is_set():
                started = time.monotonic()
                async with asyncio.TaskGroup() as tg:
                    for bus in config.buses:
                        members = [s for s in states if s.device.bus == bus.id]
                        tg.create_task(
                            _poll_bus(transports[bus.id], members), name=f"poll-{bus.id}"
                        )
                live.update(_render(states))
                if deadline is not None and time.monotonic() >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), max(0.0, 1.0 - (time.monotonic() - started))
                    )
        if not sys.stdout.isatty():
            console.print(_render(states))


async def _poll_bus(transport: ModbusTransport, states: list[DeviceState]) -> None:
    # The transport serialises a serial line itself; on TCP the devices run concurrently.
    async def one(s: DeviceState) -> None:
        s.polls += 1
        try:
            s.values = await s.reader.read(transport)
            s.ok_at, s.error = time.monotonic(), ""
        except TransportError as exc:
            s.failures += 1
            s.error = f"{exc.reason}: {exc.detail}"

    async with asyncio.TaskGroup() as tg:
        for s in states:
            tg.create_task(one(s), name=f"read-{s.device.id}")


_MAIN = {
    "gas": (Quantity.GAS_VOLUME_M3, "m³"),
    "production": (Quantity.OUTPUT_UNITS, "units"),
}


def _render(states: list[DeviceState]) -> Group:
    table = Table(expand=False)
    for col, just in (
        ("device", "left"),
        ("bus", "left"),
        ("unit", "right"),
        ("meter", "left"),
        ("status", "left"),
        ("power kW", "right"),
        ("counter", "right"),
        ("last good poll", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    now = time.monotonic()
    total_kw = 0.0
    for s in states:
        d = s.device
        kind = d.kind.value if d.kind else "electricity"
        q, unit = _MAIN.get(kind, (Quantity.ENERGY_IMPORT_KWH, "kWh"))
        power = s.values.get(Quantity.ACTIVE_POWER_KW)
        if power is not None and d.parent is None:
            total_kw += power
        counter = s.values.get(q)
        status = (
            Text("OK", style="green") if not s.error else Text(f"ERROR {s.error}", style="bold red")
        )
        age = "never" if s.ok_at is None else f"{now - s.ok_at:.1f} s ago"
        table.add_row(
            d.id,
            d.bus,
            str(d.unit),
            d.profile or "inline registers",
            status,
            "" if power is None else f"{power:,.2f}",
            "" if counter is None else f"{counter:,.2f} {unit}",
            age,
        )
    header = Text(f"site power (root meters): {total_kw:,.1f} kW", style="bold")
    return Group(header, table)
