"""`energy-agent keys`: the gateway's ledger key (docs/ledger.md, docs/deploy.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.common import EXIT_OK, Commands, UsageError
from agent.config import load_config
from agent.ledger import crypto_missing


def _where(q: argparse.ArgumentParser) -> None:
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-c", "--config", metavar="FILE", help="the gateway's config (its state_dir)"
    )
    where.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the state directory itself (deploy/install.sh, before the config is written)",
    )


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "keys",
        help="the gateway's ledger signing key (init, export, rotate)",
        description="The Ed25519 key the gateway signs its ledger with (docs/ledger.md): "
        "created once under state_dir (0600, it never leaves it), its public half exported "
        "for the bridge's trust store, rotated by an entry the old key signs.",
    )
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = actions.add_parser("init", help="create the key under state_dir (mode 0600)")
    _where(q)
    q.add_argument(
        "--force",
        action="store_true",
        help="replace an existing key (the chain continues with a key verifiers must trust anew)",
    )
    q.set_defaults(handler=run_keys)
    q = actions.add_parser("export", help="print the public key for the bridge's trust store")
    _where(q)
    q.add_argument("--json", action="store_true", help="one JSON object: gateway, key, key_id")
    q.set_defaults(handler=run_keys)
    q = actions.add_parser(
        "rotate", help="a new key; the next ledger entry announces it, signed by the old one"
    )
    _where(q)
    q.set_defaults(handler=run_keys)


def run_keys(args: argparse.Namespace) -> int:
    missing = crypto_missing()
    if missing is not None:
        raise UsageError(missing)
    from agent.ledger import keys

    if args.config is not None:
        config = load_config(args.config)
        state = config.state_dir
        name = f"{config.site.id}/{config.gateway.id}"
        again = f"-c {args.config}"
    else:
        state, name, again = args.state_dir, "SITE/GATEWAY", f"--state-dir {args.state_dir}"
    try:
        if args.keys_command == "init":
            key = keys.init(state, force=args.force)
            where = state / keys.KEY_FILE
            print(f"ledger key {key.public.key_id} of {name} in {where} (mode 0600)")
            print(f"give the bridge its public key: energy-agent keys export {again}")
            return EXIT_OK
        if args.keys_command == "rotate":
            key = keys.rotate(state)
            print(
                f"new ledger key {key.public.key_id} of {name} waits in {state / keys.NEXT_FILE}; "
                "the agent's next entry announces it, signed by the current key, and signs "
                "with it from then on (bridges and `verify` follow; nothing to change there)"
            )
            return EXIT_OK
        current = keys.load(state / keys.KEY_FILE)
        pending = keys.pending(state)
    except keys.LedgerKeyError as exc:
        raise UsageError(str(exc)) from None
    pub = current.public
    if args.json:
        doc = {"gateway": name, "key": pub.b64, "key_id": pub.key_id}
        if pending is not None:
            doc["next_key"] = pending.public.b64
        print(json.dumps(doc))
        return EXIT_OK
    print(f"# ledger key {pub.key_id} of {name}: for the bridge's `ledger: trust:` map")
    print(f'"{name}": "{pub.b64}"')
    if pending is not None:
        print(
            f"# key {pending.public.key_id} takes over with the next entry (keys rotate)",
            file=sys.stderr,
        )
    return EXIT_OK
