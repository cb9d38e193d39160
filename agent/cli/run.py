"""`run -c FILE`: the main job on a gateway, until SIGTERM or Ctrl-C.

The config is loaded and checked first; only then is the runtime imported
(:mod:`agent.cli.serving`: the agent and its live page), so that its imports reuse
the memory the config's parsing left free (docs/performance.md, "RSS per meter").
"""

from __future__ import annotations

import argparse
import logging
import sys

from agent.cli.common import EXIT_USAGE, Commands, add_config_arg
from agent.config import load_config
from agent.config.load import run_refusal

log = logging.getLogger("agent.run")


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "run",
        help="the main job on a gateway: poll, compute, publish",
        description="Poll the config's meters, compute energy, CO2 and carbon intensity, "
        "buffer every record and publish it over MQTT; serve the live page. Runs until "
        "SIGTERM or Ctrl-C.",
    )
    add_config_arg(p, "the agent's config file (see `energy-agent check`)")
    p.set_defaults(handler=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    # The same loading as `check`: bad YAML, a bad value or a file that cannot be used
    # (the password, the certificates) stops here with exit 2, before any loop runs.
    config = load_config(args.config)
    refusal = run_refusal(config)
    if refusal:
        print(f"error: {args.config}: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    log.info(
        "starting from %s: site %s, gateway %s; loading the core (a few seconds on a gateway)",
        args.config,
        config.site.id,
        config.gateway.id,
    )
    # Only now: the runtime's imports fill the pools the config's parsing left empty.
    from agent.cli.serving import run_loaded

    return run_loaded(config, args.config)
