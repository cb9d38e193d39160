"""Offline verification of a ledger against records: the gateway's history or an export.

What is checked, in this order of report (the earliest broken period first):

* the chain: entries in order, seq without gaps (``entry_missing``; a seq that
  comes later in the file is ``chain_broken``: out of order), each ``prev`` the
  hash of the entry before (``chain_broken``);
* each entry's key (trusted, or certified by a trusted key through the entries'
  certificates: ``key_unknown``, ``key_rotation_invalid``) and signature
  (``signature_wrong``);
* each period's newest cover against the records of that period, both hashes:
  fewer records than the cover counts is ``record_missing``, more is
  ``extra_record``, as many with another hash is ``record_changed``. A record
  in a period of the chain that no entry covers is ``extra_record``.

Records are hashed from their payloads here, never from stored canonical text:
a changed number must show. Records published after the last entry (``pending``)
and periods before the chain began or pruned from the history are not compared,
and are counted in the result.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent.contract import TopicError, TopicRef, parse_topic
from agent.contract.models import LedgerModel
from agent.contract.points import PointError
from agent.ledger import entry as le
from agent.ledger.canonical import Digest, Group, Line, digest, group_of, lines_of
from agent.ledger.entry import Failure, Keyring, Reason
from agent.ledger.jcs import CanonicalError

#: In one period, which failure is reported first: the entry's own (a changed entry's
#: cover no longer describes the records, nor its hash the next link), then its records.
PRIORITY = (
    Reason.SIGNATURE_WRONG,
    Reason.KEY_ROTATION_INVALID,
    Reason.CHAIN_BROKEN,
    Reason.ENTRY_MISSING,
    Reason.RECORD_CHANGED,
    Reason.RECORD_MISSING,
    Reason.EXTRA_RECORD,
)


@dataclass(frozen=True)
class RecordIn:
    """A record to verify: its topic and payload, and whether it came after the last entry."""

    topic: str
    payload: Mapping[str, Any]
    pending: bool = False


@dataclass(frozen=True)
class Broken:
    start: int
    end: int
    seq: int | None
    failure: Failure

    def __str__(self) -> str:
        where = f"period {span_text(self.start, self.end)}"
        if self.seq is not None:
            where += f" (entry {self.seq})"
        return f"{where}: {self.failure}"


@dataclass
class Result:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    periods: int = 0
    records: int = 0
    pending: int = 0
    unsealed: int = 0
    before_chain: int = 0
    broken: list[Broken] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken

    def first(self) -> Broken:
        """The earliest broken period; in one period, a broken entry before its records
        (a changed entry's cover no longer describes them either)."""
        return min(self.broken, key=lambda b: (b.start, PRIORITY.index(b.failure.reason)))

    def summary(self) -> str:
        seqs = "" if self.first_seq is None else f" (seq {self.first_seq}..{self.last_seq})"
        text = (
            f"{self.entries} entries{seqs}, {self.periods} periods, {self.records} records verified"
        )
        notes = []
        if self.pending or self.unsealed:
            notes.append(f"{self.pending + self.unsealed} records not sealed yet")
        if self.before_chain:
            notes.append(f"{self.before_chain} records from before the chain began")
        return text + (f"; {', '.join(notes)}" if notes else "")


def span_text(start: int, end: int) -> str:
    def t(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    return f"{t(start)}–{t(end)} UTC"


def _well_formed(entries: Iterable[Mapping[str, Any]], result: Result) -> list[Mapping[str, Any]]:
    """The entries that have an entry's shape; any other is a changed entry (its
    signature cannot hold), reported and left out (its seq then shows as missing)."""
    out = []
    for e in entries:
        try:
            LedgerModel.model_validate(e, strict=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(x) for x in first["loc"]) or "(entry)"
            start = e.get("period_start") if isinstance(e, Mapping) else None
            end = e.get("period_end") if isinstance(e, Mapping) else None
            seq = e.get("seq") if isinstance(e, Mapping) else None
            result.broken.append(
                Broken(
                    start if isinstance(start, int) else 0,
                    end if isinstance(end, int) else 0,
                    seq if isinstance(seq, int) else None,
                    Failure(Reason.SIGNATURE_WRONG, f"not a ledger entry: {where}: {first['msg']}"),
                )
            )
            continue
        out.append(e)
    return out


def _check_chain(entries: list[Mapping[str, Any]], keyring: Keyring, result: Result) -> None:
    seqs_later = {int(e["seq"]) for e in entries}
    prev: Mapping[str, Any] | None = None
    for e in entries:
        seq = int(e["seq"])
        where = (int(e["period_start"]), int(e["period_end"]), seq)

        def broken(reason: Reason, detail: str, w: tuple[int, int, int] = where) -> None:
            result.broken.append(Broken(w[0], w[1], w[2], Failure(reason, detail)))

        if prev is None:
            if seq == 0 and e["prev"] != le.GENESIS_PREV:
                broken(Reason.CHAIN_BROKEN, "the first entry's prev is not 64 zeros")
        else:
            expected = int(prev["seq"]) + 1
            if seq != expected:
                if expected in seqs_later:
                    broken(
                        Reason.CHAIN_BROKEN,
                        f"entries out of order: seq {seq} follows seq {prev['seq']}",
                    )
                else:
                    broken(
                        Reason.ENTRY_MISSING,
                        f"entry {expected} is missing: seq {seq} follows seq {prev['seq']}",
                        (int(prev["period_end"]), int(e["period_start"]), expected),
                    )
            elif e["prev"] != le.entry_hash(prev):
                broken(
                    Reason.CHAIN_BROKEN,
                    f"prev is not the hash of entry {prev['seq']} (an entry was changed or "
                    "replaced)",
                )
        failure = keyring.check(e)
        if failure is not None:
            result.broken.append(Broken(where[0], where[1], seq, failure))
        else:
            keyring.follow(e)
        prev = e
    if entries:
        result.entries = len(entries)
        result.first_seq = int(entries[0]["seq"])
        result.last_seq = int(entries[-1]["seq"])


def verify(
    entries: Iterable[Mapping[str, Any]],
    records: Iterable[RecordIn],
    keyring: Keyring,
    *,
    prefix: str,
    span: tuple[int | None, int | None] = (None, None),
    pruned_before: int | None = None,
    settled: Mapping[tuple[Unit, Group], Digest] | None = None,
) -> Result:
    """Verify ``entries`` (in the order given) and ``records``; see the module's doc.

    A record belongs to the period of the entries' covers that holds its ``ts`` (the
    end of its interval): covers carry their spans, so a change of ``period_s`` in a
    gateway's life needs nothing here. ``span`` limits the periods compared (an
    export of a time range); ``pruned_before`` skips periods the history pruned.

    ``settled``: (period, group) whose records were proven to hash to the period's
    newest cover by :mod:`agent.ledger.bulk`, with that digest; ``records`` then holds
    none of those records (one there raises :class:`SettledConflict`), only the rest.
    """
    result = Result()
    chain = _well_formed(entries, result)
    _check_chain(chain, keyring, result)
    if not chain:
        return result
    newest = _newest(chain)
    units = sorted(newest)
    unit_starts = [u[0] for u in units]
    # Periods from here on have entries (the genesis covers nothing; a chain whose first
    # entries were pruned starts with the first kept entry's own period).
    first = chain[0]
    chain_start = int(first["period_end"] if int(first["seq"]) == 0 else first["period_start"])
    chain_end = max(int(e["period_end"]) for e in chain)
    lo, hi = span

    def in_span(unit: tuple[int, int]) -> bool:
        if pruned_before is not None and unit[0] < pruned_before:
            return False
        return (lo is None or unit[0] >= lo) and (hi is None or unit[1] <= hi)

    def unit_of(ts: int) -> tuple[int, int] | None:
        i = bisect.bisect_left(unit_starts, ts) - 1
        if i >= 0 and units[i][0] < ts <= units[i][1]:
            return units[i]
        return None

    tally = _Tally(newest, result, in_span, settled or {})
    stray: dict[int, int] = defaultdict(int)
    topic_of = _topics(prefix)
    for r in records:
        ref, group = topic_of(r.topic)
        if group is None:
            continue
        ts = _time_of(r.payload)
        if ts is None:  # changed beyond placing in a period: its own period misses it too
            bad = f"a {ref.kind.value} record without a time: ts={r.payload.get('ts')!r}"
            result.broken.append(Broken(0, 0, None, Failure(Reason.RECORD_CHANGED, bad)))
            continue
        unit = unit_of(ts)
        if unit is not None:
            tally.add(unit, group, ref, r)
        elif r.pending:
            result.pending += 1
        elif ts > chain_end:
            result.unsealed += 1
        elif ts <= chain_start:
            result.before_chain += 1
        elif (lo is None or ts > lo) and (hi is None or ts <= hi):
            stray[ts] += 1  # inside the chain, in no period an entry covers
    for ts, n in sorted(stray.items())[:1]:
        result.broken.append(
            Broken(
                ts - 1, ts, None,
                Failure(Reason.EXTRA_RECORD, f"{n} record(s) at {ts} in no period an entry covers"),
            )
        )  # fmt: skip
    tally.finish(units)
    return result


Unit = tuple[int, int]


class SettledConflict(Exception):
    """A record came in for a (period, group) the caller said was settled: the caller's
    split of the records does not hold, and it verifies without one."""


def _newest(chain: Iterable[Mapping[str, Any]]) -> dict[Unit, tuple[Mapping[str, Any], int]]:
    """The newest cover of each period, and which entry gave it."""
    newest: dict[Unit, tuple[Mapping[str, Any], int]] = {}
    for e in chain:
        for c in e["covers"]:
            newest[(int(c["start"]), int(c["end"]))] = (c, int(e["seq"]))
    return newest


def newest_covers(
    entries: Iterable[Mapping[str, Any]],
) -> dict[Unit, tuple[Mapping[str, Any], int]]:
    """The periods :func:`verify` compares, each with its newest cover and entry: of the
    entries that have an entry's shape, as :func:`verify` takes them."""
    return _newest(_well_formed(entries, Result()))


def _topics(prefix: str) -> Callable[[str], tuple[TopicRef, Group | None]]:
    """A record topic's reference and group, each topic parsed once (a history's records
    come from a few)."""
    known: dict[str, tuple[TopicRef, Group | None]] = {}

    def of(topic: str) -> tuple[TopicRef, Group | None]:
        got = known.get(topic)
        if got is None:
            try:
                ref = parse_topic(topic, prefix)
            except TopicError as exc:
                raise ValueError(f"record on {topic!r}: {exc}") from None
            got = known[topic] = (ref, group_of(ref.kind))
        return got

    return of


def _time_of(payload: Mapping[str, Any]) -> int | None:
    try:
        return int(payload["ts"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


class _Tally:
    """The records of one period at a time, as they come in time order (a history, an
    export), compared with the period's newest cover when the next period begins: a
    verification of months holds one period's lines, not all of them."""

    def __init__(
        self,
        newest: Mapping[Unit, tuple[Mapping[str, Any], int]],
        result: Result,
        in_span: Callable[[Unit], bool],
        settled: Mapping[tuple[Unit, Group], Digest],
    ) -> None:
        self.newest = newest
        self.result = result
        self.in_span = in_span
        self.settled = settled
        self.unit: Unit | None = None
        self.lines: dict[Group, list[Line]] = {g: [] for g in Group}
        #: The open period has a record stored after the last entry: the next entry
        #: covers it again (a late or replaced record), so its cover is not the last word.
        self.in_flux = False
        self.closed: set[Unit] = set()

    def add(self, unit: Unit, group: Group, ref: TopicRef, r: RecordIn) -> None:
        if unit != self.unit:
            self._close()
            if unit in self.closed:
                self._broken(unit, Reason.EXTRA_RECORD, "a record out of time order")
                return
            self.unit = unit
        if r.pending:
            self.result.pending += 1
            self.in_flux = True
            return
        if not self.in_span(unit):
            return
        if (unit, group) in self.settled:
            raise SettledConflict(f"a {group.value} record in settled period {unit}")
        try:
            self.lines[group] += lines_of(ref, r.payload)
        except (PointError, CanonicalError) as exc:
            bad = f"a {ref.kind.value} record at {r.payload.get('ts')} is not one: {exc}"
            self._broken(unit, Reason.RECORD_CHANGED, bad)

    def _broken(self, unit: Unit, reason: Reason, detail: str) -> None:
        seq = self.newest[unit][1]
        self.result.broken.append(Broken(unit[0], unit[1], seq, Failure(reason, detail)))

    def _close(self) -> None:
        unit = self.unit
        if unit is not None:
            if self.in_span(unit) and not self.in_flux:
                self._compare(unit)
            self.closed.add(unit)
        self.unit = None
        self.lines = {g: [] for g in Group}
        self.in_flux = False

    def _compare(self, unit: Unit) -> None:
        cover, seq = self.newest[unit]
        self.result.periods += 1
        for group in Group:
            known = self.settled.get((unit, group))
            got = known if known is not None else digest(self.lines[group])
            self.result.records += got.records
            mismatch = compare(group, cover[group.value], got)
            if mismatch is not None:
                self.result.broken.append(Broken(unit[0], unit[1], seq, mismatch))

    def finish(self, units: Iterable[Unit]) -> None:
        """The last period, and every period no record came for (its cover may count some)."""
        self._close()
        for unit in units:
            if unit not in self.closed and self.in_span(unit):
                self._compare(unit)


def compare(group: Group, claimed: Mapping[str, Any], got: Digest) -> Failure | None:
    """A cover's digest against the records found; None when they agree."""
    want = int(claimed["records"])
    if got.records == want and got.hash == claimed["hash"]:
        return None
    what = f"{group.value} records: {want} in the entry, {got.records} found"
    if got.records < want:
        return Failure(Reason.RECORD_MISSING, what)
    if got.records > want:
        return Failure(Reason.EXTRA_RECORD, what)
    return Failure(Reason.RECORD_CHANGED, f"{what}, but their hash differs")
