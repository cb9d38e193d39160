"""`check -c FILE`: a config file and the files it names, checked as `run` or `bridge` would."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import ssl
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_config_arg,
)
from agent.config import ConfigError
from agent.config.document import parse_document, read_config_text
from agent.config.limits import LimitSource, carrier_default_warning, limit_source
from agent.config.load import agent_config, is_bridge_config, load_any_config, run_refusal
from agent.config.models import AgentConfig, BridgeConfig, Bus, ResolvedDevice
from agent.config.secrets import file_problems
from confdoc.yamldoc import YamlDocument
from drivers.profile import ProfileLibrary

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

#: Seconds to wait for the broker's answer.
ONLINE_TIMEOUT_S = 5.0


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "check",
        help="validate a config file and the files it names, as `run` would",
        description="Load a config (an agent's or a bridge's) exactly as `run` or `bridge` "
        "would and report every problem with its line; exit 2 if there is one. Starts nothing. "
        "Warns about what this machine lacks for it (a serial port, the state directory); "
        "--online tries every bus, meter and the broker too.",
    )
    add_config_arg(p, "the config file to check (an agent's or a bridge's)")
    p.add_argument(
        "--no-files",
        action="store_true",
        help="check the document only, not the password, token and certificate files it "
        "names (for a config meant for another machine)",
    )
    p.add_argument(
        "--online",
        action="store_true",
        help="also try everything an agent's config names, from this machine: open each bus "
        "and read each device once, connect to the broker with its TLS settings and "
        "credentials, check the files and the state directory; print a table and exit 1 "
        "if anything fails (takes a few seconds per silent device)",
    )
    p.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Load the config as `run` or `bridge` would, the files it names included."""
    try:
        if args.online:
            if args.no_files:
                raise UsageError("--online checks the files too; leave out --no-files")
            return run_online(args.config)
        config = load_any_config(args.config, files=not args.no_files)
    except ConfigError as exc:
        n = len(exc.problems)
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(
            f"{args.config}: {n} problem{'s' if n != 1 else ''}; nothing was started",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if isinstance(config, BridgeConfig):
        b = config.bridge
        print(
            f"{args.config}: OK — bridge config, group {b.group}, batches of {b.batch_size} "
            f"points to {config.influx.url} bucket {config.influx.bucket}"
        )
        return EXIT_OK
    buses = {d.bus for d in config.devices}
    print(
        f"{args.config}: OK — site {config.site.id}, gateway {config.gateway.id}, "
        f"{len(config.devices)} device{'s' if len(config.devices) != 1 else ''} on "
        f"{len(buses)} bus{'es' if len(buses) != 1 else ''}"
    )
    here = [] if args.no_files else machine_warnings(config)
    for warning in [*config.http.warnings(), *limit_warnings(config), *here]:
        print(f"warning: {warning}", file=sys.stderr)
    refusal = run_refusal(config)
    if refusal:
        print(f"warning: {args.config}: {refusal}", file=sys.stderr)
    return EXIT_OK


def machine_warnings(config: AgentConfig) -> list[str]:
    """What this machine lacks that `run` will need: serial ports, the state directory.
    Warnings, not errors: a config is often checked on another machine than its gateway's
    (`--no-files` leaves them out; `--online` makes them failures)."""
    from drivers.hints import serial_port_problem

    out = []
    for bus in config.buses:
        if bus.rtu is not None and (problem := serial_port_problem(bus.rtu.port)) is not None:
            out.append(f"bus {bus.id}: {problem}")
    state = _state_dir_row(Path(config.state_dir))
    if state.ok is not True:
        out.append(f"state_dir {state.target}: {state.detail}")
    return out


def limit_warnings(config: AgentConfig) -> list[str]:
    """Devices whose counter has only its carrier's default glitch limit (docs/core.md):
    a garbage value is caught, one a thousand times too high may not be."""
    return [
        carrier_default_warning(dev)
        for dev in config.resolved(ProfileLibrary())
        if limit_source(dev) is LimitSource.CARRIER
    ]


# --- --online: try what the config names ------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the --online table."""

    what: str
    target: str
    #: True ok, False failed (exit 1), None a warning.
    ok: bool | None
    detail: str


def run_online(path: str) -> int:
    """Every check of --online, a table, exit 1 if one failed. Each check stands alone: a
    missing file does not keep the buses from being tried."""
    doc, problems = parse_document(read_config_text(path), str(path))
    if is_bridge_config(doc.data):
        raise UsageError("--online tries an agent's buses and broker; for a bridge use `check`")
    config = agent_config(doc, problems)  # document errors: exit 2, as without --online
    library = ProfileLibrary()
    rows = [*_file_rows(doc, config), _state_dir_row(Path(config.state_dir))]
    rows.append(_broker_row(config))
    rows += asyncio.run(_bus_rows(config, library))
    table = Table(title=f"{path}: site {config.site.id}, gateway {config.gateway.id}")
    for col in ("check", "what", "result", "detail"):
        table.add_column(col, overflow="fold")
    for row in rows:
        mark = {True: "[green]ok[/]", False: "[bold red]FAIL[/]", None: "[yellow]warn[/]"}
        table.add_row(row.what, escape(row.target), mark[row.ok], escape(row.detail))
    Console(width=max(Console().width, 140)).print(table)
    failed = [r for r in rows if r.ok is False]
    if failed:
        print(
            f"{path}: {len(failed)} check{'s' if len(failed) != 1 else ''} failed: "
            + "; ".join(f"{r.what} {r.target}" for r in failed),
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _file_rows(doc: YamlDocument, config: AgentConfig) -> list[Row]:
    """The files the config names (TLS, password files), each usable or why not."""
    problems = {p.path: p for p in file_problems(doc, config)}
    named = []
    if config.mqtt is not None:
        named += [("mqtt.password_file", config.mqtt.password_file)]
        if config.mqtt.tls is not None:
            tls = config.mqtt.tls
            named += [("mqtt.tls.ca", tls.ca), ("mqtt.tls.cert", tls.cert)]
            named += [("mqtt.tls.key", tls.key)]
    named += [("http.password_file", config.http.password_file)]
    rows = [
        Row("file", f"{field}: {p}", True, "readable")
        for field, p in named
        if p is not None and field not in problems
    ]
    rows += [Row("file", problem.path, False, str(problem)) for problem in problems.values()]
    return rows


def _state_dir_row(state: Path) -> Row:
    """The state directory: there and writable, or creatable by `run` (which makes it).
    Tried, not inferred from the mode bits: root passes every access check, and a
    read-only file system refuses whatever the bits say."""
    user = getpass.getuser()
    target = str(state)
    if state.is_dir():
        if (why := _cannot_write_in(state)) is not None:
            return Row("state", target, False, f"{user} cannot write in it ({why}): chown it "
                       "to the agent's user, or set state_dir")  # fmt: skip
        free = shutil.disk_usage(state).free
        return Row("state", target, True, f"writable, {free / 1e9:,.1f} GB free")
    if state.exists():
        return Row("state", target, False, "exists but is not a directory")
    parent = state.parent
    while not parent.exists():
        parent = parent.parent
    if parent.is_dir() and _cannot_write_in(parent) is None:
        return Row("state", target, None, f"does not exist yet; `run` creates it ({user} "
                   f"can write in {parent})")  # fmt: skip
    return Row("state", target, False, f"does not exist and {user} cannot create it under "
               f"{parent}: create it for the agent's user (systemd: StateDirectory=)")  # fmt: skip


def _cannot_write_in(folder: Path) -> str | None:
    """Why a directory cannot be made in ``folder`` (one is made and removed), or None."""
    try:
        probe = tempfile.mkdtemp(prefix=".energy-agent-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.rmdir(probe)
    return None


def _broker_row(config: AgentConfig) -> Row:
    """Connect once with the config's TLS and credentials, under a client id of its own
    (the agent's id would knock a running agent off the broker)."""
    mqtt = config.mqtt
    if mqtt is None:
        return Row("broker", "(none)", False, "no `mqtt:` section: `run` needs one")
    from agent.mqttclient import MqttConfigError, client_id_of, new_client

    target = f"{'mqtts' if mqtt.tls else 'mqtt'}://{mqtt.host}:{mqtt.port}"
    base = client_id_of(config.mqtt, config.site.id, config.gateway.id)
    answered = threading.Event()
    reason: list[str] = []
    try:
        client = new_client(mqtt, f"{base}-check")
    except MqttConfigError as exc:
        return Row("broker", target, False, str(exc))

    def on_connect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        reason.append("" if not rc.is_failure else f"the broker refused: {rc}")
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=10)
    except ssl.SSLError as exc:
        why = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return Row("broker", target, False, f"TLS handshake failed: {why}; is mqtt.tls.ca the "
                   "CA that signed the broker's certificate, and is the host in it? (client "
                   "certificate: mqtt.tls.cert/key)")  # fmt: skip
    except (OSError, ValueError) as exc:
        return Row("broker", target, False, f"cannot connect: {_why(exc)}; check host, port "
                   "and firewall (1883 plain, 8883 TLS)")  # fmt: skip
    client.loop_start()
    try:
        if not answered.wait(ONLINE_TIMEOUT_S):
            return Row("broker", target, False, f"no CONNACK within {ONLINE_TIMEOUT_S:g} s")
        if reason[0]:
            return Row("broker", target, False, reason[0])
        client.disconnect()
    finally:
        client.loop_stop()
    tls = "TLS verified, " if mqtt.tls else ""
    return Row("broker", target, True, f"{tls}connected as {base}-check")


def _why(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


async def _bus_rows(config: AgentConfig, library: ProfileLibrary) -> list[Row]:
    """Every bus at once (as `run` polls them), its devices one after another."""
    devices = config.resolved(library)
    jobs = [_one_bus(bus, [d for d in devices if d.device.bus == bus.id]) for bus in config.buses]
    return [row for rows in await asyncio.gather(*jobs) for row in rows]


async def _one_bus(bus: Bus, devices: list[ResolvedDevice]) -> list[Row]:
    from drivers.errors import ConnectionLost, TransportError
    from drivers.hints import failure_hint
    from drivers.reader import DeviceReader
    from drivers.transport import open_bus

    endpoint = bus.endpoint()
    target = f"{bus.id}: {endpoint.describe()}"
    rows: list[Row] = []
    async with open_bus(endpoint, bus.timing(), name=bus.id) as transport:
        try:
            await transport.connect()
        except TransportError as exc:
            hint = failure_hint(endpoint, exc)
            rows.append(Row("bus", target, False, f"{exc.detail}; {hint}"))
            skipped = ", ".join(d.device.id for d in devices)
            return [*rows, Row("device", skipped, False, f"not read: bus {bus.id} did not open")]
        rows.append(Row("bus", target, True, "opened"))
        for dev in devices:
            d = dev.device
            where = f"{d.id} (unit {d.unit} on {bus.id})"
            try:
                sample = await DeviceReader(dev.regmap, d.unit).read(transport)
            except TransportError as exc:
                rows.append(
                    Row("device", where, False, f"{exc}; {failure_hint(endpoint, exc, d.unit)}")
                )
                if isinstance(exc, ConnectionLost):
                    break
                continue
            value = sample.values.get(dev.main) if dev.main is not None else None
            shown = (
                "no value"
                if value is None
                else f"{dev.main.value if dev.main else ''} = {value:,.6g}"
            )
            rows.append(Row("device", where, True, f"answered: {shown}"))
    return rows
