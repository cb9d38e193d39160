"""`schema`: the config file's JSON Schema, for editors and CI."""

from __future__ import annotations

import argparse
import json

from agent.cli.common import EXIT_OK, Commands
from agent.config.models import AgentConfig, BridgeConfig


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "schema",
        help="JSON Schema of the config file",
        description="Print the JSON Schema (draft 2020-12) of the agent's config, or with "
        "--bridge the bridge's, e.g. for an editor's YAML completion.",
    )
    p.add_argument("--bridge", action="store_true", help="the bridge's config instead")
    p.set_defaults(handler=run_schema)


def run_schema(args: argparse.Namespace) -> int:
    model = BridgeConfig if args.bridge else AgentConfig
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "energy-agent bridge config" if args.bridge else "energy-agent config"
    print(json.dumps(schema, indent=2))
    return EXIT_OK
