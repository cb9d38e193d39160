"""`replay`: argument handling around :mod:`agent.replay`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.main import EXIT_OK, UsageError
from agent.config import load_config
from agent.core.engine import CACHE_DIR, load_kernel
from agent.replay import ReplayInputError, Topic, read_rows, replay
from drivers.profile import ProfileLibrary


def run_replay(args: argparse.Namespace) -> int:
    try:
        topics = frozenset(Topic(t.strip()) for t in args.topics.split(",") if t.strip())
    except ValueError:
        raise UsageError(
            f"--topics '{args.topics}': choose from {', '.join(t.value for t in Topic)}"
        ) from None
    if not topics:
        raise UsageError("--topics: name at least one of measurements, energy, intensity")
    config = load_config(args.config, files=False)  # replay connects to nothing
    if (slow := load_kernel(config.state_dir / CACHE_DIR).JIT.warning()) is not None:
        print(f"warning: {slow}", file=sys.stderr)
    library = ProfileLibrary()
    try:
        rows, bad = read_rows(Path(args.file), config, library)
    except ReplayInputError as exc:
        raise UsageError(str(exc)) from None
    for b in bad:
        print(f"{args.file}: {b} — skipped", file=sys.stderr)
    out = sys.stdout
    for message in replay(config, library, rows, topics):
        out.write(json.dumps(message.as_json_line(), separators=(",", ":")))
        out.write("\n")
    out.flush()
    if bad:
        print(
            f"{args.file}: {len(bad)} bad row{'s' if len(bad) != 1 else ''} skipped, "
            f"{len(rows)} used",
            file=sys.stderr,
        )
    return EXIT_OK
