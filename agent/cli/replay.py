"""`replay`: argument handling around :mod:`agent.replay`."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_NOTHING,
    EXIT_OK,
    Commands,
    UsageError,
    add_config_arg,
)
from agent.config import load_config
from agent.config.models import AgentConfig
from agent.core.engine import CACHE_DIR, load_kernel
from agent.replay import Backfill, Options, Reader, ReplayError, Topic
from agent.replay.report import Bar, bad_rows, nothing_out, summary
from agent.replay.writers import JsonLines, ParquetOut, Writer
from drivers.profile import ProfileLibrary

#: The name `run` loads its core snapshot by (agent.runtime.agent.SNAPSHOT).
SNAPSHOT = "core-snapshot.npz"
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?\s*")
_UNIT_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "replay",
        help="recorded readings (CSV, Parquet) through the core: JSON lines, Parquet, or MQTT",
        description="Backfill: meter logs through the same core as `run`, streamed. Inputs are "
        "files or directories, long (ts,device,quantity,value) or wide (ts and one column per "
        "device.quantity), CSV (gzip too) or Parquet.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories")
    add_config_arg(p, "the agent's config: the site, devices and factors to compute with")
    p.add_argument(
        "--topics",
        default=",".join(t.value for t in Topic),
        metavar="KINDS",
        help="which messages to produce, comma-separated: "
        + ", ".join(t.value for t in Topic)
        + " (default all)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write to FILE: .parquet for Parquet, else JSON lines (default: stdout)",
    )
    p.add_argument(
        "--publish",
        action="store_true",
        help="publish through an outbox and the config's MQTT broker, as `run` does "
        "(resumable: run the same command again after an interruption)",
    )
    p.add_argument(
        "--rate", type=float, metavar="N", help="--publish: messages per second (default 5000)"
    )
    p.add_argument(
        "--queue",
        type=int,
        default=20_000,
        metavar="N",
        help="--publish: messages stored ahead of the broker at most (default 20000)",
    )
    p.add_argument(
        "--reorder-window",
        default="15min",
        metavar="SPAN",
        help="how far rows may be out of time order (e.g. 15min, 90s, 1h; default 15min); "
        "older rows are reported and skipped",
    )
    p.add_argument(
        "--snapshot-out",
        metavar="PATH",
        help="end in a core snapshot `run` continues from (a file, or `run`'s empty "
        "state directory)",
    )
    p.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar on stderr, and the time taken in the summary (default auto: "
        "when stderr is a terminal)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no summary line on stderr (rows read, skipped and why, written per topic); "
        "bad rows, notes and the reason for exit code 3 are still said",
    )
    p.add_argument(
        "--reader", choices=[r.value for r in Reader], default="auto", help=argparse.SUPPRESS
    )
    p.set_defaults(handler=run_replay)


def parse_span(text: str) -> int:
    m = _SPAN.fullmatch(text)
    if m is None:
        raise UsageError(f"--reorder-window '{text}': give a span like 15min, 90s or 1h")
    return round(float(m[1]) * _UNIT_MS[m[2] or "s"])


def _topics(text: str) -> frozenset[Topic]:
    try:
        topics = frozenset(Topic(t.strip()) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(
            f"--topics '{text}': choose from {', '.join(t.value for t in Topic)}"
        ) from None
    if not topics:
        raise UsageError(f"--topics: name at least one of {', '.join(t.value for t in Topic)}")
    return topics


def _snapshot_path(text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if path.is_dir():
        path = path / SNAPSHOT
    if path.exists():
        raise UsageError(
            f"--snapshot-out {path} exists: an agent has state there already; a backfill "
            "starts a new state, so move that file away first"
        )
    return path


def _writer(args: argparse.Namespace, config: AgentConfig) -> Writer:
    if args.out is None or args.out == "-":
        return JsonLines(sys.stdout)
    path = Path(args.out)
    if path.suffix.lower() in (".parquet", ".pq"):
        return ParquetOut(path, config.site.id, config.gateway.id)
    try:
        return JsonLines(path.open("w", encoding="utf-8"), owned=True)
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write: {exc.strerror}") from None


def run_replay(args: argparse.Namespace) -> int:
    topics = _topics(args.topics)
    window = parse_span(args.reorder_window)
    snapshot = _snapshot_path(args.snapshot_out)
    if args.publish and args.out is not None:
        raise UsageError("--publish and --out: choose one")
    config = load_config(args.config, files=False)  # replay connects to nothing
    if (slow := load_kernel(config.state_dir / CACHE_DIR).JIT.warning()) is not None:
        print(f"warning: {slow}", file=sys.stderr)
    # The bulk lane writes JSON lines itself: for --out FILE.jsonl or stdout only.
    lines = not args.publish and not (
        args.out is not None and Path(args.out).suffix.lower() in (".parquet", ".pq")
    )
    options = Options(topics, window, Reader(args.reader), final_flush=snapshot is None, bulk=lines)
    try:
        backfill = Backfill(config, ProfileLibrary(), [Path(p) for p in args.inputs], options)
        if args.publish:
            from agent.replay.publish import Interrupted, publish

            started, show = time.monotonic(), _show(args, to_stdout=False)
            try:
                publish(config, backfill, rate=args.rate, progress=show, queue=args.queue)
            except Interrupted as exc:
                print(f"energy-agent replay: {exc}", file=sys.stderr)
                return EXIT_FAILED
        else:
            started, show = _write(args, config, backfill)
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    if snapshot is not None:
        backfill.site.save_snapshot(snapshot)
    bad_rows(backfill, sys.stderr)
    for note in backfill.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        took = time.monotonic() - started if show else None
        print(summary(backfill, took), file=sys.stderr)
    if snapshot is not None:
        print(f"core snapshot written to {snapshot}: `run` continues from it", file=sys.stderr)
    if (why := nothing_out(backfill)) is not None:
        print(f"energy-agent replay: {why}", file=sys.stderr)
        return EXIT_NOTHING
    return EXIT_OK


def _show(args: argparse.Namespace, to_stdout: bool) -> bool:
    """The bar and summary: on a terminal, unless the records themselves go to it."""
    if args.progress != "auto":
        return bool(args.progress == "on")
    return sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())


def _write(args: argparse.Namespace, config: AgentConfig, backfill: Backfill) -> tuple[float, bool]:
    show = _show(args, args.out in (None, "-"))
    started = time.monotonic()
    writer = _writer(args, config)
    bar = Bar(backfill, show)
    try:
        for messages in backfill.run():
            writer.write(messages)
            bar.tick()
    finally:
        bar.close()
        writer.close()
    return started, show
