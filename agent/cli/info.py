"""Commands that only look at files: `check`, `profiles`, `schema`."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from agent.cli.common import EXIT_OK, EXIT_USAGE, UsageError
from agent.config import ConfigError
from agent.config.load import load_any_config, run_refusal
from agent.config.models import AgentConfig, BridgeConfig
from drivers.profile import Profile, ProfileLibrary


def run_check(args: argparse.Namespace) -> int:
    """Load the config as `run` or `bridge` would, the files it names included."""
    try:
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
    for warning in config.http.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    refusal = run_refusal(config)
    if refusal:
        print(f"warning: {args.config}: {refusal}", file=sys.stderr)
    return EXIT_OK


def profile_summary(p: Profile) -> dict[str, object]:
    reads = {r.table.value for r in p.registers}
    return {
        "id": p.id,
        "manufacturer": p.manufacturer,
        "model": p.model,
        "kind": p.kind.value,
        "tables": sorted(reads),
        "quantities": [q.value for q in p.quantities],
        "serial": p.serial.model_dump(),
        "default_unit": p.default_unit,
        "sources": [s.model_dump(mode="json") for s in p.sources],
    }


def run_profiles(args: argparse.Namespace) -> int:
    library = ProfileLibrary()
    if args.id:
        profile = library.get(args.id)
        if args.json:
            print(json.dumps(profile.model_dump(mode="json"), indent=2))
            return EXIT_OK
        _print_profile(profile)
        return EXIT_OK
    profiles = library.all()
    if args.json:
        print(json.dumps([profile_summary(p) for p in profiles], indent=2))
        return EXIT_OK
    table = Table(title="Built-in meter profiles", show_lines=False)
    table.add_column("id", no_wrap=True)
    for col in ("maker", "model", "kind", "quantities", "serial default"):
        table.add_column(col)
    for p in profiles:
        s = p.serial
        table.add_row(
            p.id,
            p.manufacturer,
            p.model,
            p.kind.value,
            str(len(p.registers)),
            f"{s.baudrate} {s.bytesize}{s.parity}{s.stopbits}, unit {p.default_unit}",
        )
    Console().print(table)
    return EXIT_OK


def _print_profile(p: Profile) -> None:
    console = Console()
    console.print(f"[bold]{p.id}[/bold]: {p.manufacturer} {p.model} — {p.description}")
    for s in p.sources:
        console.print(f"  source ({s.trust.value}): {s.title}" + (f" <{s.url}>" if s.url else ""))
    table = Table()
    for col in ("quantity", "table", "address", "type", "word order", "scale", "ratios"):
        table.add_column(col)
    for r in p.registers:
        table.add_row(
            r.quantity.value,
            r.table.value,
            f"{r.address} (0x{r.address:04X})",
            r.type.value,
            r.word_order.value,
            f"{r.scale:g}",
            ",".join(r.ratios),
        )
    console.print(table)


def run_schema(args: argparse.Namespace) -> int:
    model = BridgeConfig if args.bridge else AgentConfig
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "energy-agent bridge config" if args.bridge else "energy-agent config"
    print(json.dumps(schema, indent=2))
    return EXIT_OK


__all__ = ["UsageError", "run_check", "run_profiles", "run_schema"]
