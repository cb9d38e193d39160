"""`check -c FILE`: a config file and the files it names, checked as `run` or `bridge` would."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import EXIT_OK, EXIT_USAGE, Commands, add_config_arg
from agent.config import ConfigError
from agent.config.limits import LimitSource, carrier_default_warning, limit_source
from agent.config.load import load_any_config, run_refusal
from agent.config.models import AgentConfig, BridgeConfig
from drivers.profile import ProfileLibrary


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "check",
        help="validate a config file and the files it names, as `run` would",
        description="Load a config (an agent's or a bridge's) exactly as `run` or `bridge` "
        "would and report every problem with its line; exit 2 if there is one. Starts nothing.",
    )
    add_config_arg(p, "the config file to check (an agent's or a bridge's)")
    p.add_argument(
        "--no-files",
        action="store_true",
        help="check the document only, not the password, token and certificate files it "
        "names (for a config meant for another machine)",
    )
    p.set_defaults(handler=run_check)


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
    for warning in [*config.http.warnings(), *limit_warnings(config)]:
        print(f"warning: {warning}", file=sys.stderr)
    refusal = run_refusal(config)
    if refusal:
        print(f"warning: {args.config}: {refusal}", file=sys.stderr)
    return EXIT_OK


def limit_warnings(config: AgentConfig) -> list[str]:
    """Devices whose counter has only its carrier's default glitch limit (docs/core.md):
    a garbage value is caught, one a thousand times too high may not be."""
    return [
        carrier_default_warning(dev)
        for dev in config.resolved(ProfileLibrary())
        if limit_source(dev) is LimitSource.CARRIER
    ]
