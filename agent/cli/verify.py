"""`energy-agent verify`: the ledger against the records, offline (docs/ledger.md).

``verify -c CONFIG`` checks the gateway's own history with the keys it has signed
with; ``verify --export FILE --public-key FILE`` checks an export with a key from
the central trust store. Exit 0 when every period verifies; 1 naming the first
broken period and why; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.common import EXIT_FAILED, EXIT_OK, Commands, UsageError
from agent.config import load_config
from agent.contract import DEFAULT_PREFIX
from agent.history import HISTORY_FILE, HistoryError
from agent.history.reader import HistoryReader, require
from agent.ledger import crypto_missing, export, use_kernel_cache
from agent.ledger.entry import Keyring
from agent.ledger.export import FAR_FUTURE
from agent.ledger.verify import RecordIn, Result, verify

HOUR_MS = 3_600_000

if TYPE_CHECKING:
    from agent.ledger.keys import PublicKey


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "verify",
        help="check the ledger against the records (history or export)",
        description="Exit 0 when every period verifies; 1 naming the first broken period and "
        "why (record changed, record missing, extra record, entry missing, signature wrong, "
        "chain broken, key rotation invalid); 2 for a usage error (docs/ledger.md).",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="the gateway's own history, its keys")
    p.add_argument("--export", type=Path, metavar="FILE", help="an export (history export)")
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the gateway's public key (keys export), with --export",
    )
    p.set_defaults(handler=run_verify)


def read_public_keys(path: Path) -> list[PublicKey]:
    """Keys from a file: `keys export`'s output (plain or --json), or bare base64 lines."""
    from agent.ledger.keys import LedgerKeyError, PublicKey

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--public-key {path}: cannot read: {exc.strerror}") from None
    found = []
    try:
        if text.lstrip().startswith("{"):
            found.append(PublicKey.from_b64(str(json.loads(text)["key"])))
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    found.append(PublicKey.from_b64(line.split()[-1].strip("\"'")))
    except (LedgerKeyError, ValueError, KeyError) as exc:
        raise UsageError(f"--public-key {path}: {exc}") from None
    if not found:
        raise UsageError(f"--public-key {path}: no key in it (expected `keys export`'s output)")
    return found


def run_verify(args: argparse.Namespace) -> int:
    missing = crypto_missing()
    if missing is not None:
        raise UsageError(missing)
    if (args.config is None) == (args.export is None):
        raise UsageError(
            "give -c CONFIG (the gateway's history) or --export FILE --public-key FILE"
        )
    if args.export is not None:
        if args.public_key is None:
            raise UsageError("--export needs --public-key FILE (the output of `keys export`)")
        result = _verify_export(args.export, Keyring(read_public_keys(args.public_key)))
        what = str(args.export)
    else:
        result, what = _verify_history(args.config)
    if result.ok:
        print(f"{what}: OK: {result.summary()}")
        return EXIT_OK
    print(f"{what}: {result.first()}", file=sys.stderr)
    more = len(result.broken) - 1
    if more:
        print(f"({more} more problem{'s' if more != 1 else ''} after it)", file=sys.stderr)
    return EXIT_FAILED


def _verify_export(path: Path, keyring: Keyring) -> Result:
    try:
        data = export.read(path)
    except export.ExportError as exc:
        raise UsageError(str(exc)) from None
    h = data.header
    return verify(
        data.entries,
        data.records(),
        keyring,
        prefix=str(h.get("prefix") or DEFAULT_PREFIX),
        span=(h.get("from"), h.get("to")),
        pruned_before=h.get("pruned_before"),
    )


def _in_bulk(
    reader: HistoryReader,
    entries: list[dict[str, Any]],
    keyring: Keyring,
    prefix: str,
    upto: int,
    pruned: int | None,
) -> Result | None:
    """The whole history verified with its records hashed in bulk where they can be
    (docs/ledger.md, "Bulk verification": the same result); None when the bulk pass
    leaves it to the record-by-record path."""
    from agent.ledger import bulk

    oldest, newest = reader.oldest_ts(), reader.newest_ts()
    if oldest is None or newest is None:
        return None
    # Every record, in blocks on whole hours (a period's lines are hashed together).
    read = ((oldest - 1) // HOUR_MS * HOUR_MS, -(-newest // HOUR_MS) * HOUR_MS)
    got = bulk.verify_history(
        reader, entries, keyring, prefix=prefix, upto=upto, pruned_before=pruned,
        span=(None, None), read=read, check_rollup=False,
    )  # fmt: skip
    return None if got is None else got[0]


def _verify_history(config_path: str) -> tuple[Result, str]:
    from agent.ledger import keys

    config = load_config(config_path)
    state = config.state_dir
    use_kernel_cache(state)
    try:
        trusted = keys.known(state)
    except keys.LedgerKeyError as exc:
        raise UsageError(str(exc)) from None
    if not trusted:
        raise UsageError(f"no ledger keys recorded in {state / keys.PUBLIC_FILE} (keys init)")
    path = state / HISTORY_FILE
    prefix = config.mqtt.prefix if config.mqtt is not None else DEFAULT_PREFIX
    try:
        reader = require(path)
        try:
            last = reader.last_entry()
            upto = last.upto if last is not None else 0
            entries = [row.entry for row in reader.entries()]
            pruned = reader.pruned_before()
            keyring = Keyring(trusted)
            result = _in_bulk(reader, entries, keyring, prefix, upto, pruned)
            if result is None:
                # A page at a time: months of records never in memory at once.
                records = (
                    RecordIn(r.topic, json.loads(r.payload), r.id > upto)
                    for r in reader.iter_records(-FAR_FUTURE, FAR_FUTURE)
                )
                result = verify(entries, records, keyring, prefix=prefix, pruned_before=pruned)
        finally:
            reader.close()
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    return result, str(path)
