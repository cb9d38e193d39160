"""The baselines of bench_backfill, each run as its own process (for its peak RSS).

``python -m bench.backfill_baselines KIND DATA CONFIG OUT [DAYS]``

* ``old``: the replay before streaming (bench/old_replay.py): read, sort, feed.
* ``pandas``: ``pd.read_csv`` of the whole file, then the core fed slot by slot as
  the new path feeds it (same bytes out).
* ``core``: the same core loop on arrays made in memory (DAYS of bench_backfill's
  1 Hz meter): what the pipeline around the core cannot go below.
* ``profile``: cProfile of the new path over DATA (the bulk lane, as ``replay --out
  FILE.jsonl`` runs), the top entries by own time.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from agent.config import load_config
from agent.contract import Message, MessageKind
from agent.core.channels import SLOT_MS
from agent.core.site import SiteCore
from agent.replay import Backfill, Options, Topic
from agent.replay.writers import JsonLines
from drivers.profile import ProfileLibrary

TOPICS = frozenset({Topic.ENERGY, Topic.INTENSITY})
RECORDS = frozenset({MessageKind.ENERGY, MessageKind.INTENSITY})
T0 = 1_735_689_600_000


def slots(
    site: SiteCore, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray
) -> Iterator[list[Message]]:
    """Sorted main-quantity readings to messages, one slot at a time (as replay does)."""
    s = ts // SLOT_MS
    cuts = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts = np.concatenate([[0], cuts]).tolist()
    ends = np.concatenate([cuts, [len(ts)]]).tolist()
    for a, e in zip(starts, ends, strict=True):
        out = site.feed_arrays(chans[a:e], ts[a:e], vals[a:e])
        out += site.flush(now_ms=int(ts[e - 1]))
        yield [m for m in out if m.kind in RECORDS]
    yield [m for m in site.flush() if m.kind in RECORDS]


def main() -> None:
    kind, data, cfg_path, out_path = sys.argv[1:5]
    config = load_config(Path(cfg_path))
    library = ProfileLibrary()
    with open(out_path, "w", encoding="utf-8") as f:
        writer = JsonLines(f)
        if kind == "old":
            from bench import old_replay

            rows, _ = old_replay.read_rows(Path(data), config, library)
            wanted = frozenset({old_replay.Topic.ENERGY, old_replay.Topic.INTENSITY})
            for m in old_replay.replay(config, library, rows, wanted):
                f.write(json.dumps(m.as_json_line(), separators=(",", ":")))
                f.write("\n")
        elif kind == "pandas":
            import pandas as pd

            df = pd.read_csv(data, dtype={"device": "category", "quantity": "category"})
            df = df.sort_values("ts", kind="stable")
            site = SiteCore(config, library)
            chan = np.array(
                [site.by_id[d].channel for d in df["device"].astype(str)], dtype=np.int64
            )
            for batch in slots(
                site, chan, df["ts"].to_numpy(np.int64), df["value"].to_numpy(np.float64)
            ):
                writer.write(batch)
        elif kind == "core":
            n = int(float(sys.argv[5]) * 86400)
            k = np.arange(n)
            ts, vals = T0 + k * 1000, np.round(1000 + k * 0.005, 3)
            site = SiteCore(config, library)
            for batch in slots(site, np.zeros(n, dtype=np.int64), ts, vals):
                writer.write(batch)
        elif kind == "profile":
            # as `replay --out FILE.jsonl` runs: regular stretches through the bulk lane
            backfill = Backfill(config, library, [Path(data)], Options(TOPICS, bulk=True))
            prof = cProfile.Profile()
            prof.enable()
            for batch in backfill.run():
                writer.write(batch)
            prof.disable()
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        else:
            raise SystemExit(f"unknown kind {kind}")
        writer.close()


if __name__ == "__main__":
    main()
