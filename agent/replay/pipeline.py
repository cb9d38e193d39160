"""Files in, the agent's messages out, streamed: the backfill pipeline.

    sources (in time order, side by side where they overlap)
      -> reader chunks (pyarrow, or Python's csv)  -> bad rows reported
      -> reorder window (time order, duplicates)   -> late rows reported
      -> SiteCore, one one-minute slot at a time   -> messages, as they close

The core is fed exactly as ``replay`` always fed it: each slot's readings in
time order, then ``flush`` on the data's own clock (the last reading of the
slot), so a site interval waiting for a silent meter goes out
``core.site_hold_s`` after its end as in the running agent, and the output is
the same, byte for byte, whatever the chunking. Slots are what keeps the
site's windows computable: their intervals close while the core's ring still
holds them.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import numpy as np

from agent.config.models import AgentConfig
from agent.contract.kinds import Message, MessageKind
from agent.core.bulk import BulkLane
from agent.core.channels import SLOT_MS
from agent.core.site import Reading, SiteCore
from agent.replay import sources as src_mod
from agent.replay.reorder import Batch, Reorder
from agent.replay.rows import NQ, QUANTITIES, BadRow, Chunk, ReplayInputError, Skip, Vocabulary
from agent.replay.sources import Container, Source
from agent.replay.timestamps import TsState, TsUnit
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

DEFAULT_WINDOW_MS = 15 * 60_000
#: Bad rows kept for the report; beyond it they are counted only.
KEEP_BAD = 10_000


class Topic(StrEnum):
    """What `replay --topics` chooses from: the kinds the core publishes."""

    MEASUREMENTS = MessageKind.MEASUREMENTS.value
    ENERGY = MessageKind.ENERGY.value
    INTENSITY = MessageKind.INTENSITY.value
    EVENTS = MessageKind.EVENTS.value


class Reader(StrEnum):
    AUTO = "auto"
    ARROW = "arrow"
    PYTHON = "python"


def have_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def reader_module(choice: Reader) -> ModuleType:
    if choice is Reader.PYTHON or (choice is Reader.AUTO and not have_pyarrow()):
        from agent.replay import read_python

        return read_python
    if not have_pyarrow():
        raise ReplayInputError(
            "the arrow reader needs pyarrow: pip install 'energy-agent[backfill]'"
        )
    from agent.replay import read_arrow

    return read_arrow


@dataclass
class Options:
    topics: frozenset[Topic] = frozenset(Topic)
    window_ms: int = DEFAULT_WINDOW_MS
    reader: Reader = Reader.AUTO
    #: Publish what waits for late meters at the end (a plain replay); not when the
    #: agent continues from the snapshot: it publishes those when their data comes.
    final_flush: bool = True
    #: Regular stretches through the site's bulk lane (agent/core/bulk.py): the same
    #: records, already written as JSON (``Message.text``), for a JSON-lines writer.
    bulk: bool = False


@dataclass
class Stats:
    rows_read: int = 0
    rows_used: int = 0
    bad: int = 0
    #: The bad rows by cause (all of them, not only those kept for the report).
    skipped: Counter[Skip] = field(default_factory=Counter)
    #: Used rows of a quantity the core counts a device by (its channel's).
    rows_counted: int = 0
    #: The (device, quantity) keys of the used rows (``Vocabulary`` keys).
    keys: set[int] = field(default_factory=set)
    messages: dict[str, int] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None
    bytes_total: int = 0
    bytes_done: int = 0


@dataclass
class _Open:
    src: Source
    chunks: Iterator[tuple[Chunk, list[BadRow]]]
    state: TsState
    progress: list[int]
    newest: int


class Backfill:
    """One run over the inputs; :meth:`run` yields the messages slot by slot."""

    def __init__(
        self,
        config: AgentConfig,
        library: ProfileLibrary,
        inputs: Sequence[Path],
        options: Options | None = None,
        *,
        site: SiteCore | None = None,
    ) -> None:
        self.options = options or Options()
        self.site = site or SiteCore(config, library)
        self.vocab = Vocabulary(config, library, self.site)
        self.tz = ZoneInfo(config.site.timezone)
        self.reader = reader_module(self.options.reader)
        paths = src_mod.expand(inputs)
        self.sources = [src_mod.describe(i, p, self.vocab, self.tz) for i, p in enumerate(paths)]
        self.stats = Stats(bytes_total=sum(s.size for s in self.sources))
        #: Bad rows in the order found (at most KEEP_BAD of them); ``stats.bad`` counts all.
        self.bad: list[BadRow] = []
        #: Things the user must know about the input (a unit detected, a DST fold).
        self.notes: list[str] = []
        self.reorder = Reorder(
            self.options.window_ms,
            {s.index: str(s.path) for s in self.sources},
            {s.index: s.row_unit for s in self.sources},
        )
        self._wanted = {MessageKind(t) for t in self.options.topics}
        self._done_bytes = 0
        self._open: list[_Open] = []
        self.lane = BulkLane(self.site) if self.options.bulk else None
        #: Slots the per-slot path takes before the lane is tried again (doubles while
        #: the lane refuses: a batch that is not regular is not re-checked slot by slot).
        self._slow_run = 1

    def name(self, source: int) -> str:
        return str(self.sources[source].path)

    def progress(self) -> int:
        return self._done_bytes + sum(o.progress[0] for o in self._open)

    # --- reading -----------------------------------------------------------------------

    def _report(self, bad: list[BadRow]) -> None:
        self.stats.bad += len(bad)
        self.stats.skipped.update(b.cause for b in bad)
        room = KEEP_BAD - len(self.bad)
        if room > 0:
            self.bad += bad[:room]

    def _start(self, s: Source) -> _Open:
        state = TsState(self.tz)
        progress = [0]
        newest = s.first_ts if s.first_ts is not None else -(2**62)
        # Parquet is pyarrow's whatever reads the CSV files (describe() has checked it is there).
        reader = reader_module(Reader.ARROW) if s.container is Container.PARQUET else self.reader
        return _Open(s, reader.chunks(s, self.vocab, state, progress), state, progress, newest)

    def _finish_source(self, o: _Open) -> None:
        self._done_bytes += o.src.size
        if o.state.unit is TsUnit.S:
            self.notes.append(f"{o.src.path}: ts read as Unix seconds")
        if o.state.second_occurrences:
            self.notes.append(
                f"{o.src.path}: {o.state.second_occurrences} local times in the hour that "
                "repeats when clocks go back were read as its second occurrence"
            )

    def _release_point(self, pending: deque[Source]) -> int | None:
        if not self._open and not pending:
            return None
        w = self.options.window_ms
        points = [o.newest - w for o in self._open]
        if pending and pending[0].first_ts is not None:
            points.append(pending[0].first_ts - w)
        return min(points)

    def batches(self) -> Iterator[Batch]:
        """Released rows, in time order, as the inputs are read."""
        pending = deque(src_mod.order(self.sources))
        while True:
            frontier = min((o.newest for o in self._open), default=None)
            while pending and (
                frontier is None or pending[0].first_ts is None or pending[0].first_ts <= frontier
            ):
                self._open.append(self._start(pending.popleft()))
                frontier = min(o.newest for o in self._open)
            if not self._open:
                break
            o = min(self._open, key=lambda x: x.newest)
            try:
                chunk, bad = next(o.chunks)
            except StopIteration:
                self._open.remove(o)
                self._finish_source(o)
            else:
                self._report(bad)
                self.stats.rows_read += len(chunk) + len(bad)
                late, o.newest = self.reorder.add(chunk, o.newest)
                self._report(late)
            batch, dupes = self.reorder.release(self._release_point(pending))
            self._report(dupes)
            if len(batch):
                yield batch
        batch, dupes = self.reorder.release(None)
        self._report(dupes)
        if len(batch):
            yield batch

    # --- the core ----------------------------------------------------------------------

    def run(self) -> Iterator[list[Message]]:
        """Every message the agent would publish for these readings, in order, a slot's
        worth at a time (only the wanted topics)."""
        for batch in self.batches():
            yield from self._feed(batch)
        if self.options.final_flush:
            out = self._keep(self.site.flush())
            if out:
                yield out

    def _keep(self, messages: list[Message], counts: dict[str, int] | None = None) -> list[Message]:
        """The wanted messages, counted (``counts``: by kind, when the maker counted them)."""
        if counts is not None and self._wanted.issuperset(counts):
            for kind, n in counts.items():
                self.stats.messages[kind] = self.stats.messages.get(kind, 0) + n
            return messages
        out = [m for m in messages if m.kind in self._wanted]
        for m in out:
            self.stats.messages[m.kind] = self.stats.messages.get(m.kind, 0) + 1
        return out

    def _feed(self, b: Batch) -> Iterator[list[Message]]:
        n = len(b)
        self.stats.rows_used += n
        self.stats.rows_counted += int(np.count_nonzero(self.vocab.channel[b.key] >= 0))
        self.stats.keys.update(np.flatnonzero(np.bincount(b.key)).tolist())  # keys are >= 0
        first, last = int(b.ts[0]), int(b.ts[-1])
        self.stats.first_ts = first if self.stats.first_ts is None else self.stats.first_ts
        self.stats.last_ts = last
        slots = b.ts // SLOT_MS
        cuts = np.flatnonzero(slots[1:] != slots[:-1]) + 1
        starts = np.concatenate([[0], cuts]).tolist()
        ends = np.concatenate([cuts, [n]]).tolist()
        site = self.site
        if Topic.MEASUREMENTS in self.options.topics:
            feed: Callable[[int, int], list[Message]] = lambda a, e: site.feed(  # noqa: E731
                self._readings(b, a, e), measurements=True
            )
        else:
            feed = self._array_feed(b)

        ts = b.ts
        k = 0
        while k < len(starts):
            if self.lane is not None and Topic.MEASUREMENTS not in self.options.topics:
                taken, bulk = self._bulk(b, starts[k:], ends[k:])
                if bulk:
                    kept = self._keep(bulk, self.lane.counts)
                    if kept:
                        yield kept
                k += taken
                if k >= len(starts):
                    break
                upto = min(len(starts), k + (self._slow_run if not taken else 1))
                self._slow_run = 1 if taken else min(self._slow_run * 2, 4096)
            else:
                upto = len(starts)
            for a, e in zip(starts[k:upto], ends[k:upto], strict=True):
                yield from self._one_slot(feed, a, e, int(ts[e - 1]))
            k = upto

    def _bulk(self, b: Batch, starts: list[int], ends: list[int]) -> tuple[int, list[Message]]:
        """The lane over the batch's remaining slots: (slots taken, their messages);
        it refuses (0) when they are not regular, and stops before a slot whose
        readings the engine's months do not cover yet."""
        assert self.lane is not None
        c, t, v = _lane_rows(self.vocab, b, starts[0], ends[-1])
        covered = self.site.months_covered
        n = len(starts)
        if covered is not None and t.size:
            inside = int(np.searchsorted(b.ts[[e - 1 for e in ends]], covered[1], side="right"))
            n = min(n, inside)
            if n < len(starts):
                # slots in order (not ts: a slot's export copies follow its readings)
                stop = int(np.searchsorted(t // SLOT_MS, b.ts[starts[n]] // SLOT_MS, "left"))
                c, t, v = c[:stop], t[:stop], v[:stop]
        if n < 2:
            return 0, []
        out = self.lane.feed(c, t, v)
        return (0, []) if out is None else (n, out)

    def _one_slot(
        self, feed: Callable[[int, int], list[Message]], a: int, e: int, now: int
    ) -> Iterator[list[Message]]:
        messages = feed(a, e)
        # The data's clock stands in for the agent's: what waits for a silent meter
        # goes out core.site_hold_s after its interval, as the running agent does.
        messages += self.site.flush(now_ms=now)
        if messages:
            kept = self._keep(messages)
            if kept:
                yield kept

    def _array_feed(self, b: Batch) -> Callable[[int, int], list[Message]]:
        """Rows [a, e) of ``b`` to the core as arrays: each counted row on its channel,
        and a power-only meter's power on its export channel too."""
        chans = [self.vocab.channel[b.key], self.vocab.also[b.key]]
        if not (chans[1] >= 0).any():
            chans.pop()
        parts = []
        for chan in chans:
            take = chan >= 0
            at = np.concatenate([[0], np.cumsum(take)]).tolist()
            parts.append((at, chan[take], b.ts[take], b.value[take]))

        def feed(a: int, e: int) -> list[Message]:
            cols = [(c[at[a] : at[e]], t[at[a] : at[e]], v[at[a] : at[e]]) for at, c, t, v in parts]
            c, t, v = (np.concatenate(col) for col in zip(*cols, strict=True))
            return self.site.feed_arrays(c, t, v)

        return feed

    def _readings(self, b: Batch, a: int, e: int) -> list[Reading]:
        grouped: dict[tuple[str, int], dict[Quantity, float | None]] = {}
        devices = self.vocab.devices
        for k, t, v in zip(
            b.key[a:e].tolist(), b.ts[a:e].tolist(), b.value[a:e].tolist(), strict=True
        ):
            values = grouped.setdefault((devices[k // NQ], t), {})
            values[QUANTITIES[k % NQ]] = None if math.isnan(v) else v
        return [Reading(dev, t, values) for (dev, t), values in grouped.items()]


def _lane_rows(
    vocab: Vocabulary, b: Batch, a: int, e: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [a, e) as :meth:`_array_feed` gives them to the core slot by slot, for
    the whole stretch at once: per slot, its counted rows, then a power-only
    meter's power again for its export channel (the same order, so the engine
    closes the channels' slots in the same order and the sums add alike)."""
    key, ts, value = b.key[a:e], b.ts[a:e], b.value[a:e]
    chan = vocab.channel[key]
    main = chan >= 0
    also = vocab.also[key]
    more = also >= 0
    if not more.any():
        return chan[main], ts[main], value[main]
    c = np.concatenate([chan[main], also[more]])
    t = np.concatenate([ts[main], ts[more]])
    v = np.concatenate([value[main], value[more]])
    order = np.argsort(t // SLOT_MS, kind="stable")
    return c[order], t[order], v[order]
