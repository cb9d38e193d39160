"""`energy-agent history export`: the gateway's records and ledger as JSON lines."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.cli.common import EXIT_OK, Commands, UsageError, add_config_arg
from agent.config import load_config
from agent.contract import DEFAULT_PREFIX
from agent.history import HISTORY_FILE, HistoryError
from agent.history.reader import require
from agent.ledger import export


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "history",
        help="the gateway's own history of records (export)",
        description="The records the gateway published and its ledger entries, kept in "
        "state_dir/history.db (docs/ledger.md).",
    )
    actions = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    q = actions.add_parser(
        "export", help="records and ledger entries as JSON lines (verify them with `verify`)"
    )
    add_config_arg(q, "the gateway's config (its state_dir holds the history)")
    q.add_argument("--from", dest="start", metavar="TIME", help="from this time on (see --to)")
    q.add_argument(
        "--to",
        dest="end",
        metavar="TIME",
        help="up to this time: 2025-06-01, 2025-06-01T08:00 (the site's time zone), "
        "2025-06-01T08:00+08:00, or Unix ms",
    )
    q.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    q.set_defaults(handler=run_history)


def parse_time(text: str, zone: str, option: str) -> int:
    """Unix ms from ISO 8601 (a date or a time without offset: the site's zone) or ms."""
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} '{text}': give a date (2025-06-01), a time (2025-06-01T08:00, "
            "optionally with +08:00) or Unix milliseconds"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(zone))
    return int(t.timestamp() * 1000)


def run_history(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    zone = config.site.timezone
    lo = parse_time(args.start, zone, "--from") if args.start else None
    hi = parse_time(args.end, zone, "--to") if args.end else None
    if lo is not None and hi is not None and hi <= lo:
        raise UsageError("--to must be after --from")
    prefix = config.mqtt.prefix if config.mqtt is not None else DEFAULT_PREFIX
    try:
        reader = require(config.state_dir / HISTORY_FILE)
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    try:
        out = sys.stdout if args.out is None else args.out.open("w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror}") from None
    try:
        entries, records = export.write(
            out,
            reader,
            site=config.site.id,
            gateway=config.gateway.id,
            prefix=prefix,
            span=(lo, hi),
            now_ms=time.time_ns() // 1_000_000,
        )
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    finally:
        reader.close()
        if out is not sys.stdout:
            out.close()
    print(f"exported {entries} ledger entries and {records} records", file=sys.stderr)
    return EXIT_OK
