"""`profiles`: the built-in meter profiles, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from agent.cli.common import EXIT_OK, Commands
from drivers.profile import Profile, ProfileLibrary


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "profiles",
        help="list built-in meter profiles",
        description="The meter profiles shipped with energy-agent; with an id, that "
        "profile's registers (address, type, word order, scale).",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("id", nargs="?", help="show one profile's registers")
    p.set_defaults(handler=run_profiles)


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
