"""`demo`: a simulated plant, a broker and the agent, nothing to configure.

Twelve simulated meters of several profiles on a Modbus TCP bus and on an
RS-485 line (through a socat pty pair, or a Python one without socat), a gas
meter and a production counter; a broker on a free loopback port (mosquitto
when installed, else the in-memory demo broker of agent.demo.minibroker); and the
agent itself (`run`'s code, with the embedded demo config) publishing to it.
A live table shows what the agent sees (its status snapshot, as the page), and
the agent's own live page is on a free loopback port (printed at start). Ctrl-C
stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from enum import StrEnum
from importlib import resources

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.cli.common import EXIT_OK, Commands, UsageError
from agent.cli.serving import serve
from agent.cli.words import add_lang_arg, language, site_time, zone_label
from agent.config import parse_config
from agent.demo.broker import Mosquitto, find_mosquitto
from agent.demo.minibroker import EmbeddedBroker
from agent.demo.plant import plant_for
from agent.i18n import Translator
from agent.runtime.agent import Agent
from agent.status import ERROR, OK, AgentStatus, WindowFigures
from drivers.profile import ProfileLibrary
from drivers.simulator.ptypair import PtyPair


class BrokerChoice(StrEnum):
    """``--broker``: auto is mosquitto when installed, else the embedded demo broker."""

    AUTO = "auto"
    MOSQUITTO = "mosquitto"
    EMBEDDED = "embedded"


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "demo",
        help="simulated plant read live, nothing to configure",
        description="Start simulated meters, a broker and the agent itself on loopback, and "
        "show what the agent sees. Ctrl-C stops everything it started.",
    )
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument(
        "--no-rtu", action="store_true", help="do not use a socat serial pair (a Python one)"
    )
    p.add_argument(
        "--broker",
        choices=[b.value for b in BrokerChoice],
        default=BrokerChoice.AUTO.value,
        help="MQTT broker to start: mosquitto when installed, else a built-in demo broker "
        "(default auto)",
    )
    add_lang_arg(p)
    p.set_defaults(handler=run_demo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_config_text() -> str:
    return (resources.files("agent.demo") / "demo.yaml").read_text(encoding="utf-8")


def run_demo(args: argparse.Namespace) -> int:
    broker = BrokerChoice(args.broker)
    if broker is BrokerChoice.MOSQUITTO and find_mosquitto() is None:
        raise UsageError(
            "--broker mosquitto: mosquitto is not installed (apt-get install mosquitto), "
            "or use --broker embedded"
        )
    lang = language(args.lang)
    return asyncio.run(_demo(args.duration, use_socat=not args.no_rtu, broker=broker, lang=lang))


async def _demo(
    duration: float | None,
    *,
    use_socat: bool,
    broker: BrokerChoice = BrokerChoice.AUTO,
    lang: str | None = None,
) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=140)
    library = ProfileLibrary()
    mqtt_port = int(os.environ.get("DEMO_MQTT_PORT") or free_port())
    with tempfile.TemporaryDirectory(prefix="energy-agent-demo-") as state:
        async with contextlib.AsyncExitStack() as stack:
            pty = await stack.enter_async_context(PtyPair(prefer_socat=use_socat))
            env = dict(os.environ)
            env.setdefault("DEMO_LINE_A_PORT", str(free_port()))
            # A free port unless the caller chose one: a second demo, or a gateway's own
            # agent on 8080, must not stop the demo from starting.
            env.setdefault("DEMO_HTTP_PORT", str(free_port()))
            env["DEMO_RS485_PORT"] = pty.a
            env["DEMO_MQTT_PORT"] = str(mqtt_port)
            env["DEMO_STATE_DIR"] = state
            config = parse_config(demo_config_text(), "demo.yaml", env=env, profiles=library)
            for server in plant_for(config, library, {"rs485-1": pty.b}).servers(library):
                await stack.enter_async_context(server)
            # mosquitto when installed; otherwise (or asked to) the built-in demo broker.
            if broker is not BrokerChoice.EMBEDDED and find_mosquitto() is not None:
                await stack.enter_async_context(Mosquitto(mqtt_port))
                where = f"mosquitto on mqtt://127.0.0.1:{mqtt_port}"
            else:
                await stack.enter_async_context(EmbeddedBroker(mqtt_port))
                where = (
                    f"embedded demo broker on mqtt://127.0.0.1:{mqtt_port} "
                    "(in memory, not for production; install mosquitto for real use)"
                )
            agent = Agent(config, library)
            about = agent.status().agent
            console.print(
                f"[bold]energy-agent demo[/bold]: site '{config.site.id}', "
                f"{len(config.devices)} simulated meters"
            )
            for bus in config.buses:
                console.print(f"  bus {bus.id}: {bus.endpoint().describe()}")
            console.print(f"  RS-485 line through a {pty.kind} pty pair: {pty.a} <-> {pty.b}")
            console.print(f"  broker: {where}")
            why = f" ({about.core_reason})" if about.core_reason else ""
            console.print(f"  core: {about.core}{why}", markup=False)
            console.print(
                f"  topics: {about.topic_base}/#  (e.g. mosquitto_sub -h 127.0.0.1 "
                f"-p {mqtt_port} -t '{about.topic_base}/#' -v)"
            )
            page = f"http://127.0.0.1:{config.http.port}/"
            console.print(f"  live page: [bold]{page}[/bold]  (JSON: {page}api/state)")
            console.print(f"  in a terminal: energy-agent status --url {page}")
            console.print(
                "  energy and intensity records close at each full minute. "
                "Ctrl-C stops everything.\n"
            )
            await _run_with_view(agent, console, duration, lang)
    return EXIT_OK


async def _run_with_view(
    agent: Agent, console: Console, duration: float | None, lang: str | None = None
) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, agent.stop.set)

    async def view() -> None:
        deadline = None if duration is None else time.monotonic() + duration
        live = Live(
            _render(agent.status(), lang),
            console=console,
            refresh_per_second=2,
            auto_refresh=sys.stdout.isatty(),
            transient=False,
        )
        with live:
            while not agent.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(agent.stop.wait(), 1.0)
                live.update(_render(agent.status(), lang))
                if deadline is not None and time.monotonic() >= deadline:
                    agent.stop.set()

    await serve(agent, view)


def _n(t: Translator, v: float | None, spec: str) -> str:
    return t("demo.na") if v is None else format(v, spec)


def _site_line(t: Translator, w: WindowFigures, today: WindowFigures | None) -> Text:
    energy, tce = (None, None) if today is None else (today.energy_kwh, today.tce)
    return Text(
        t(
            "demo.site_line",
            kwh=_n(t, w.energy_kwh, ",.2f"),
            co2=_n(t, w.co2_kg, ",.2f"),
            intensity=_n(t, w.intensity_g_per_kwh, ",.0f"),
            today_kwh=_n(t, energy, ",.1f"),
            tce=_n(t, tce, ".4f"),
        ),
        style="bold",
    )


def _render(status: AgentStatus, lang: str | None = None) -> Group:
    """The demo's table: every device of the snapshot, the link, the outbox, the site."""
    t = Translator(lang)
    table = Table(expand=False)
    for col, just in (
        ("col_device", "left"),
        ("col_bus", "left"),
        ("col_unit", "right"),
        ("col_meter", "left"),
        ("col_status", "left"),
        ("col_power", "right"),
        ("col_counter", "right"),
        ("col_last", "right"),
    ):
        table.add_column(t(f"demo.{col}"), justify=just)  # type: ignore[arg-type]
    for d in status.devices:
        if d.state == OK:
            state = Text(t("demo.ok"), style="green")
        elif d.state == ERROR:
            state = Text(t("demo.error", reason=d.reason or "").strip(), style="bold red")
        else:
            state = Text(t("demo.waiting"), style="yellow")
        main = d.main
        table.add_row(
            d.id,
            d.bus,
            str(d.unit),
            d.meter,
            state,
            "" if d.power_kw is None else f"{d.power_kw:,.2f}",
            "" if main.value is None else f"{main.value:,.2f} {main.unit}",
            t("demo.never") if d.age_s is None else t("demo.ago", n=f"{d.age_s:.1f}"),
        )
    link = status.link
    mqtt = (
        Text(t("demo.mqtt_ok"), style="green")
        if link.connected
        else Text(t("demo.mqtt_down", error=link.last_error or "").strip(), style="bold red")
    )
    zone = status.agent.timezone
    header = Text.assemble(
        mqtt,
        "   " + t("demo.outbox", n=f"{status.outbox.depth:,}", acked=f"{status.outbox.acked:,}"),
        "   " + t("demo.times", time=site_time(status.ts, zone), zone=zone_label(status.ts, zone)),
    )
    parts: list[Text | Table] = [header]
    if status.site.intensity is not None:
        parts.append(_site_line(t, status.site.intensity, status.site.today))
    parts.append(table)
    return Group(*parts)


__all__ = ["run_demo"]
