"""Bulk verification of a history: a month of hours in seconds, with the same verdict
as the record-by-record path (docs/ledger.md, "Bulk verification").

Verifying a period re-hashes its records. Record by record that is ~17 µs an energy
record and ~130 µs an intensity record (SQLite's row, the payload's parse, the
canonical lines, the rollup's sums): minutes for a month of 200 meters. Here a few
hours of rows at a time come out of SQLite as five strings (``group_concat``: no
Python object per row), compiled kernels write their canonical lines
(:mod:`agent.ledger.bulk_kernel` for energy records, :mod:`agent.ledger.bulk_site` a
line per window of the site's intensity records) and read the numbers the rollup
sums, and each period's lines are hashed in one call.

What it may decide, and what it leaves to the exact path:

* a (period, group) whose lines hash to the period's newest cover, with as many
  records, is *settled*: the exact path would find the same (a line written here
  equals the sealed one only if the payload holds the sealed values; see
  :mod:`agent.ledger.bulk_kernel`). Those records are then not read again (:func:`rest`
  gives the others);
* a period that does not match, holds records stored after the last entry or a
  device's events, or lies outside the span is left to the exact path, record by
  record, which reports what is wrong exactly as before;
* a record outside the strict subset the kernels read (another layout, a type, a
  payload time that is not the row's, a topic that does not parse) makes the whole
  span go the exact way: :func:`settle` returns None.

A row's kind and device columns are not read: the topic is what a line seals, and
the exact path and the report's figures take the kind and the device from it too
(:func:`agent.report.sources.energy_meter`); the columns only index the history.

The rollup's check (:class:`agent.history.rollup.Check`) is made here too, on the
same pass (:mod:`agent.ledger.bulk_rollup`).

numba compiles the kernels when it can be imported (cached on disk); without it, or
with ``ENERGY_AGENT_NUMBA=off``, :func:`available` is false and callers take the
exact path (the plain-Python kernels would be slower than it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from agent.contract import MessageKind, TopicError, parse_topic
from agent.contract.schema import Record, Store
from agent.contract.vocab import Carrier
from agent.history import db as hdb
from agent.history import rollup
from agent.history.reader import HistoryReader
from agent.ledger import bulk_kernel as K
from agent.ledger import bulk_rollup as R
from agent.ledger import bulk_site as S
from agent.ledger import jcs
from agent.ledger.canonical import Digest, Group, group_of
from agent.ledger.entry import Keyring
from agent.ledger.shape import FLOAT, INT, PLAIN_KEY, SHAPES, TAG
from agent.ledger.verify import RecordIn, Result, SettledConflict, newest_covers, verify

Unit = tuple[int, int]
QuarterKey = R.QuarterKey

#: Records per block read from SQLite: ~10 MB of payloads, the block's lines beside.
BLOCK_RECORDS = 40_000
HOUR_MS = 3_600_000


def _kernels() -> ModuleType | None:
    """The kernels, when numba compiles them (module doc)."""
    return K if K.COMPILED else None


def available() -> bool:
    return _kernels() is not None


# --- what the kernel knows: fields, keys, carriers, qualities ---------------------------


def _table(names: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An open-addressed hash table of ``names`` for :func:`bulk_kernel.lookup`."""
    store = np.frombuffer(b"".join(names), dtype=np.uint8).copy()
    off = np.zeros(len(names) + 1, np.int64)
    off[1:] = np.cumsum([len(n) for n in names])
    size = 16
    while size < 4 * max(1, len(names)):
        size *= 2
    tab = np.full(size, -1, np.int64)
    for k, name in enumerate(names):
        buf = np.frombuffer(name, dtype=np.uint8)
        slot = K.fnv(buf, 0, len(name)) & (size - 1)
        while tab[slot] >= 0:
            slot = (slot + 1) & (size - 1)
        tab[slot] = k
    return tab, store, off


_FOLD = {
    "energy_kwh": K.FOLD_KWH, "co2_kg": K.FOLD_CO2, "volume_m3": K.FOLD_M3, "units": K.FOLD_UNITS,
    "unmetered_kwh": K.FOLD_UNMETERED, "interval_s": K.FOLD_INTERVAL, "carrier": K.FOLD_CARRIER,
    "quality": K.FOLD_QUALITY,
}  # fmt: skip
#: The topic's tags, in the order the topic table stores their parts.
_TAGS = ("kind", "site", "gateway", "device")


@dataclass(frozen=True)
class Layout:
    """The energy record's fields and canonical key order, from the contract (the
    compiled shape of :mod:`agent.ledger.shape`), as the kernel's arrays."""

    f_tab: np.ndarray
    f_store: np.ndarray
    f_off: np.ndarray
    f_kind: np.ndarray
    f_fold: np.ndarray
    k_store: np.ndarray
    k_off: np.ndarray
    k_tag: np.ndarray
    c_names: tuple[str, ...]
    c_tab: np.ndarray
    c_store: np.ndarray
    c_off: np.ndarray
    q_class: np.ndarray
    q_tab: np.ndarray
    q_store: np.ndarray
    q_off: np.ndarray


@cache
def layout() -> Layout:
    shape = SHAPES[MessageKind.ENERGY]
    names: list[str] = ["ts"]
    kinds: list[int] = [K.TIME]
    parts: list[str] = ['"ts":']
    how_kind = {TAG: K.TAG, FLOAT: K.FLOAT, INT: K.INT}
    for name, (part, how) in shape.fields.items():
        names.append(name)
        kinds.append(how_kind[how])
        parts.append(part)
    f_tab, f_store, f_off = _table([n.encode() for n in names])
    # The canonical order: every key's part, sorted as the shape sorts its parts (the
    # key's text decides: keys are plain, so '"' ends a shorter one first).
    keyed: list[tuple[str, int]] = [(f'"{t}":', k) for k, t in enumerate(_TAGS)]
    keyed += [(part, -(f + 1)) for f, part in enumerate(parts)]
    keyed.sort()
    k_parts = [p.encode() if tag < 0 else b"" for p, tag in keyed]
    k_off = np.zeros(len(keyed) + 1, np.int64)
    k_off[1:] = np.cumsum([len(p) for p in k_parts])
    carriers = tuple(sorted(c.value for c in Carrier))
    c_tab, c_store, c_off = _table([c.encode() for c in carriers])
    q_names = [rollup.INTERPOLATED, *sorted(rollup.MISSING)]
    q_class = np.array(
        [K.Q_INTERPOLATED if q == rollup.INTERPOLATED else K.Q_MISSING for q in q_names],
        np.int64,
    )
    q_tab, q_store, q_off = _table([q.encode() for q in q_names])
    return Layout(
        f_tab, f_store, f_off, np.array(kinds, np.int64),
        np.array([_FOLD.get(n, -1) for n in names], np.int64),
        np.frombuffer(b"".join(k_parts), dtype=np.uint8).copy(), k_off,
        np.array([tag for _, tag in keyed], np.int64),
        carriers, c_tab, c_store, c_off, q_class, q_tab, q_store, q_off,
    )  # fmt: skip


@dataclass(frozen=True)
class SiteLayout:
    """An intensity record's window lines (a point per window: agent.contract.points),
    as the site kernel's arrays: the window's fields, and where each key of a line
    comes from in canonical order."""

    w_tab: np.ndarray
    w_store: np.ndarray
    w_off: np.ndarray
    w_kind: np.ndarray
    k2_src: np.ndarray
    k2_store: np.ndarray
    k2_off: np.ndarray


@cache
def site_layout() -> SiteLayout | None:
    """None when the intensity record is not the shape the site kernel reads (time,
    a revision not stored, windows as points of plain numbers): its records then take
    the exact path."""
    spec = MessageKind.INTENSITY.spec
    kinds = [f.store for f in spec.record.fields]
    if kinds != [Store.TIME, Store.NOT_STORED, Store.KEYS_AS_POINTS]:
        return None
    ts, _, windows = spec.record.fields
    items = windows.items
    if ts.name != "ts" or windows.name != "windows" or not isinstance(items, Record):
        return None
    names: list[str] = []
    wkind: list[int] = []
    keyed: list[tuple[str, int]] = [(f'"{t}":', k) for k, t in enumerate(_TAGS)]
    keyed += [(f'"{windows.db_name}":', S.W_WINDOW), ('"ts":', S.W_TS)]
    for f in items.fields:
        if f.store is Store.NOT_STORED:
            wkind.append(S.SKIP)
        elif f.store is Store.FIELD and f.codes is None:
            wkind.append(K.INT if f.type.value == "integer" else K.FLOAT)
            if not PLAIN_KEY.fullmatch(f.db_name) or f.db_name in (*_TAGS, "ts", "window"):
                return None
            keyed.append((f'"{f.db_name}":', S.W_FIELD + len(names)))
        else:
            return None
        names.append(f.name)
    keyed.sort()
    parts = [b"" if src < S.W_WINDOW else p.encode() for p, src in keyed]
    off = np.zeros(len(parts) + 1, np.int64)
    off[1:] = np.cumsum([len(p) for p in parts])
    w_tab, w_store, w_off = _table([n.encode() for n in names])
    return SiteLayout(
        w_tab, w_store, w_off, np.array(wkind, np.int64),
        np.array([src for _, src in keyed], np.int64),
        np.frombuffer(b"".join(parts) or b"\0", dtype=np.uint8).copy(), off,
    )  # fmt: skip


class Topics:
    """The topics met so far, as the kernel looks them up: each topic's tag parts
    (``"site":"plant-a"``, JCS text), its device's bytes and rank. A topic that does not
    parse, or is not an energy record's, is known as such (its records are odd)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[bytes] = []
        self.devices: list[str] = []
        self.ok: list[bool] = []
        self.parts: list[tuple[bytes, bytes, bytes, bytes]] = []
        #: What the kernel does with the topic's records (bulk_kernel.K_*).
        self.kinds: list[int] = []
        self._build()

    def add_all(self, names: Sequence[bytes]) -> None:
        for name in names:
            self._add(name)
        self._build()

    def _add(self, name: bytes) -> None:
        device = ""
        tags: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", b"")
        ok = False
        kind = K.K_OTHER
        try:
            ref = parse_topic(name.decode("utf-8"), self.prefix)
            # The kinds the history keeps (sealed ones); any other is not a history's.
            ok = group_of(ref.kind) is not None
            device = ref.device or ""
            if ref.kind is MessageKind.ENERGY:
                kind = K.K_ENERGY
            elif ref.kind is MessageKind.INTENSITY and site_layout() is not None:
                kind = K.K_INTENSITY
            values = (ref.kind.spec.measurement, ref.site, ref.gateway, ref.device)
            tags = tuple(  # type: ignore[assignment]
                b"" if v is None else f'"{t}":{jcs.string(v)}'.encode()
                for t, v in zip(_TAGS, values, strict=True)
            )
        except (TopicError, UnicodeDecodeError, jcs.CanonicalError):
            ok = False
        self.names.append(name)
        self.devices.append(device)
        self.ok.append(ok)
        self.parts.append(tags)
        self.kinds.append(kind)

    def _build(self) -> None:
        self.tab, self.store, self.off = _table(self.names)
        n = len(self.names)
        part = bytearray()
        self.pstart = np.zeros((max(n, 1), 4), np.int64)
        self.pend = np.zeros((max(n, 1), 4), np.int64)
        for t in range(n):
            for j, p in enumerate(self.parts[t]):
                self.pstart[t, j] = len(part)
                part += p
                self.pend[t, j] = len(part)
        self.part = np.frombuffer(bytes(part) or b"\0", dtype=np.uint8).copy()
        self.okarr = np.array(self.ok or [False], np.uint8)
        self.kindarr = np.array(self.kinds or [K.K_OTHER], np.int64)
        self.widest = max((sum(map(len, p)) for p in self.parts), default=0)
        # Ranks by device name, as the hash's order sorts lines (str order).
        order = sorted(set(self.devices))
        rank = {d: r for r, d in enumerate(order)}
        self.rank = np.array([rank[d] for d in self.devices] or [0], np.int64)
        self.device_rank = rank


# --- the outcome ------------------------------------------------------------------------

#: A period and one of its two hashes.
Part = tuple[Unit, Group]


@dataclass
class Outcome:
    """What the bulk pass proved."""

    #: (period, group) whose records hash to the period's newest cover: its digest.
    settled: dict[Part, Digest] = field(default_factory=dict)
    #: Energy records read (every one in the span).
    records: int = 0
    #: The rollup's check: rows that differ from the records, and the first of them.
    differ: int = 0
    first: QuarterKey | None = None


@dataclass(frozen=True)
class Periods:
    """The chain's periods the span's records fall into, as the exact path places them:
    sorted, each with its newest cover, and which may be settled."""

    units: list[Unit]
    covers: list[Mapping[str, Any]]
    #: May be settled here: in the span, not pruned.
    eligible: list[bool]


def periods(
    newest: Mapping[Unit, tuple[Mapping[str, Any], int]],
    span: tuple[int, int],
    pruned_before: int | None,
) -> Periods:
    units = sorted(newest)
    lo, hi = span
    eligible = [
        u[0] >= lo and u[1] <= hi and (pruned_before is None or u[0] >= pruned_before)
        for u in units
    ]
    return Periods(units, [newest[u][0] for u in units], eligible)


# --- the pass -----------------------------------------------------------------------------

#: A block: every row of ``start < ts <= end`` in the ts index's order, as a few strings.
#: No kind filter: a filter costs as much as the kind column, and the site's records
#: and any other are seen on the same pass (no second walk of the index for them).
_BLOCK_SQL = (
    "SELECT count(*), group_concat(ts), CAST(group_concat(topic, char(10)) AS BLOB), "
    "CAST(group_concat(payload, char(0)) AS BLOB) "
    "FROM records INDEXED BY records_ts WHERE ts > ? AND ts <= ?"
)


class Odd(Exception):
    """A record the kernels do not read: the span takes the exact path."""


def settle(
    path: Path,
    span: tuple[int, int],
    plan: Periods,
    *,
    upto: int,
    prefix: str,
    check_rollup: bool,
    workers: int = 2,
) -> Outcome | None:
    """Settle what can be settled of ``span``'s records in the history at ``path`` (module
    doc); None when the kernels are not available or a record is odd (the exact path
    then does all). ``workers`` threads share the span, each with its own connection:
    SQLite, the kernels and SHA-256 all run without the GIL."""
    kernels = _kernels()
    if kernels is None:
        return None
    start, end = span
    if check_rollup and (start % rollup.QUARTER_MS or end % rollup.QUARTER_MS):
        return None
    passes: list[_Pass] = []
    try:
        with hdb.errors(path):
            for _ in range(max(1, workers)):
                db = hdb.connect(path, readonly=True)
                passes.append(_Pass(kernels, db, span, plan, upto, prefix, check_rollup))
            first = passes[0]
            pending = first.pending()
            # Spans of about a day, taken in turn by the threads as each finishes one: the
            # cores stay busy to the end (halves of a month left one core idle for the
            # last part when the halves ran at different speeds).
            pieces = max(1, min(4 * len(passes), (end - start) // (24 * HOUR_MS)))
            cuts = [start]
            for k in range(1, pieces):
                t = start + (end - start) * k // pieces
                cuts.append(max(cuts[-1], first.edge(t - (t - start) % HOUR_MS)))
            cuts.append(end)
            todo = [c for c in pairwise(cuts) if c[1] > c[0]]
            if len(passes) == 1 or len(todo) == 1:
                outcomes = [first.run_all(todo, pending)]
            else:
                queue = iter(todo)
                lock = threading.Lock()

                def take() -> tuple[int, int] | None:
                    with lock:
                        return next(queue, None)

                with ThreadPoolExecutor(len(passes), thread_name_prefix="bulk") as pool:
                    futures = [pool.submit(p.run_queue, take, pending) for p in passes]
                    outcomes = [f.result() for f in futures]
    except Odd:
        return None
    finally:
        for p in passes:
            p.db.close()
    return _merged(outcomes)


#: A stored row as the kernels read it: (ts, topic, payload).
Row = tuple[int, str, bytes]


def lines(rows: Sequence[Row], prefix: str) -> list[list[bytes] | None]:
    """The canonical lines the kernels write for each row (one for an energy record, one
    per window for an intensity record), None for a row they leave to the exact path:
    the block SQLite would give for these rows, built here (tests, diagnostics)."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("the bulk kernels need numba")
    p = _Pass(kernels, sqlite3.connect(":memory:"), (0, 0), Periods([], [], []), 0, prefix, False)
    try:
        r = p.scan(
            len(rows),
            _u8(",".join(str(row[0]) for row in rows).encode()),
            _u8("\n".join(row[1] for row in rows).encode()),
            _u8(b"\0".join(row[2] for row in rows)),
        )
    finally:
        p.db.close()
    out: list[list[bytes] | None] = []
    for i in range(len(rows)):
        if r.status[i] != K.OK:
            out.append(None)
        elif r.site[i]:
            out.append(
                [
                    r.out[r.s_start[q] : r.s_end[q]].tobytes()
                    for q in range(r.nsite)
                    if r.s_row[q] == i
                ]
            )
        else:
            out.append([r.out[r.l_start[i] : r.l_end[i]].tobytes()])
    return out


def verify_history(
    reader: HistoryReader,
    entries: Sequence[Mapping[str, Any]],
    keyring: Keyring,
    *,
    prefix: str,
    upto: int,
    pruned_before: int | None,
    span: tuple[int | None, int | None],
    read: tuple[int, int],
    check_rollup: bool,
) -> tuple[Result, Outcome] | None:
    """:func:`agent.ledger.verify.verify` of a history's records in ``read``, those the
    bulk pass settles by their digests and the rest one by one: the same result as every
    record one by one, or None when the bulk pass leaves it all to that. ``span`` is
    verify's (which periods are compared; (None, None): every one)."""
    lo, hi = span
    far = (-(2**62) if lo is None else lo, 2**62 if hi is None else hi)
    plan = periods(newest_covers(entries), far, pruned_before)
    done = settle(reader.path, read, plan, upto=upto, prefix=prefix, check_rollup=check_rollup)
    if done is None:
        return None
    try:
        result = verify(
            entries, rest(reader, read, upto, done.settled), keyring, prefix=prefix,
            span=span, pruned_before=pruned_before, settled=done.settled,
        )  # fmt: skip
    except (SettledConflict, Moved):
        return None
    return result, done


class Moved(Exception):
    """A record whose payload's time is not its row's: the split of the records by row
    time is not the verification's, which verifies them all itself."""


def rest(
    reader: HistoryReader, span: tuple[int, int], upto: int, settled: Mapping[Part, Digest]
) -> Iterator[RecordIn]:
    """The span's records but those of the ``settled`` (period, group)s, for
    :func:`agent.ledger.verify.verify` beside them, in the order a history gives all of
    them (row time, then row); :class:`Moved` for one whose payload's time is not its
    row's. Runs of periods settled whole are not read at all."""
    energy = MessageKind.ENERGY.value
    groups: dict[Unit, set[Group]] = {}
    for unit, group in settled:
        groups.setdefault(unit, set()).add(group)
    # Runs of time read alike: every record, all but energy's, only energy's, none.
    runs: list[tuple[int, int, str]] = []

    def run(a: int, b: int, what: str) -> None:
        if runs and runs[-1][2] == what and runs[-1][1] == a:
            runs[-1] = (runs[-1][0], b, what)
        elif b > a:
            runs.append((a, b, what))

    start, end = span
    at = start
    for (a, b), got in sorted(groups.items()):
        run(at, a, "all")
        if got == {Group.ENERGY, Group.SITE}:
            run(a, b, "none")
        else:
            run(a, b, "site" if Group.ENERGY in got else "energy")
        at = b
    run(at, end, "all")
    for a, b, what in runs:
        if what == "none":
            continue
        rows = reader.iter_records(
            a, b,
            not_kind=energy if what == "site" else None,
            only_kind=energy if what == "energy" else None,
        )  # fmt: skip
        for r in rows:
            payload = json.loads(r.payload)
            ts = payload.get("ts")
            if ts != r.ts or isinstance(ts, bool):
                raise Moved(r.id)
            yield RecordIn(r.topic, payload, r.id > upto)


def _merged(outcomes: Sequence[Outcome]) -> Outcome:
    out = Outcome()
    firsts = []
    for o in outcomes:
        out.settled.update(o.settled)
        out.records += o.records
        out.differ += o.differ
        if o.first is not None:
            firsts.append(o.first)
    out.first = min(firsts) if firsts else None
    return out


def _u8(b: bytes | None) -> np.ndarray:
    return np.frombuffer(b or b"", dtype=np.uint8)


_EMPTY = Digest(0, hashlib.sha256().hexdigest())


class _Pass:
    """One worker's share of the span: its own connection, its own table of topics."""

    def __init__(
        self,
        kernels: ModuleType,
        db: sqlite3.Connection,
        span: tuple[int, int],
        plan: Periods,
        upto: int,
        prefix: str,
        check_rollup: bool,
    ) -> None:
        self.k = kernels
        self.db = db
        self.span = span
        self.plan = plan
        self.upto = upto
        self.topics = Topics(prefix)
        self.check_rollup = check_rollup
        self.lay = layout()
        self.site = site_layout()
        self.u_start = np.array([u[0] for u in plan.units], np.int64).reshape(-1)
        self.u_end = np.array([u[1] for u in plan.units], np.int64).reshape(-1)
        self.outcome = Outcome()

    def run_all(self, spans: Sequence[tuple[int, int]], pending: set[int]) -> Outcome:
        for a, b in spans:
            self.run(a, b, pending)
        return self.outcome

    def run_queue(self, take: Callable[[], tuple[int, int] | None], pending: set[int]) -> Outcome:
        while (span := take()) is not None:
            self.run(span[0], span[1], pending)
        return self.outcome

    def run(self, start: int, end: int, pending: set[int]) -> Outcome:
        step = HOUR_MS
        t0 = start
        while t0 < end:
            t1 = min(self.edge(t0 + step), end)
            n = self._block(t0, t1, pending)
            # Blocks of about BLOCK_RECORDS, whatever the meters' intervals.
            if n > 2 * BLOCK_RECORDS and step > HOUR_MS // 4:
                step //= 2
            elif n < BLOCK_RECORDS // 2 and step < 64 * HOUR_MS:
                step *= 2
            t0 = t1
        return self.outcome

    def edge(self, t: int) -> int:
        """A block's end: never inside a period (its lines are hashed together), on a
        quarter hour when the rollup is checked (a quarter's rows are summed together)."""
        i = int(np.searchsorted(self.u_start, t, side="left")) - 1
        if i >= 0 and self.u_start[i] < t < self.u_end[i]:
            t = int(self.u_end[i])
        t = min(t, self.span[1])
        if self.check_rollup and t % rollup.QUARTER_MS:
            raise Odd
        return t

    def pending(self) -> set[int]:
        """Periods holding a record stored after the last entry (of any kind): the next
        entry covers them again, the exact path handles them."""
        start, end = self.span
        rows = self.db.execute(
            # by row id: the rows stored since the last entry, not the span's index
            "SELECT DISTINCT ts FROM records NOT INDEXED WHERE id > ? AND ts > ? AND ts <= ?",
            (self.upto, start, end),
        ).fetchall()
        out: set[int] = set()
        for (ts,) in rows:
            i = int(np.searchsorted(self.u_start, int(ts), side="left")) - 1
            if i >= 0 and int(ts) <= self.u_end[i]:
                out.add(i)
        return out

    def _block(self, t0: int, t1: int, pending: set[int]) -> int:
        row = self.db.execute(_BLOCK_SQL, (t0, t1)).fetchone()
        n = int(row[0])
        if n == 0:
            if self.check_rollup:
                self._compare_rollup(t0, t1, None)
            self._settle(None, None, t0, t1, pending)
            return 0
        r = self.scan(n, _u8(row[1].encode()), _u8(row[2]), _u8(row[3]))
        if (r.status == K.ODD).any() or r.info[3]:
            raise Odd
        if n > 1 and (np.diff(r.ts) < 0).any():
            raise Odd  # not in time order: the exact path's tally decides
        energy = (r.status == K.OK) & ~r.site
        _patch(r, _u8(row[3]))
        rank = self.topics.rank[r.topic]
        self.outcome.records += int(energy.sum())
        self._settle(r, rank, t0, t1, pending)
        if self.check_rollup:
            self._compare_rollup(t0, t1, (r, rank, energy))
        return n

    def scan(
        self,
        n: int,
        ts_txt: np.ndarray,
        topic_txt: np.ndarray,
        blob: np.ndarray,
    ) -> _Scanned:
        lay = self.lay
        r = _Scanned(n)
        while True:
            tp = self.topics
            size = 2 * blob.shape[0] + n * (1024 + tp.widest)
            if r.out.shape[0] < size:
                r.out = np.empty(size, np.uint8)
            code = self.k.scan(
                ts_txt, topic_txt, blob, n,
                tp.tab, tp.store, tp.off, tp.part, tp.pstart, tp.pend, tp.okarr, tp.kindarr,
                lay.f_tab, lay.f_store, lay.f_off, lay.f_kind, lay.f_fold,
                lay.k_store, lay.k_off, lay.k_tag,
                lay.c_tab, lay.c_store, lay.c_off, lay.q_class, lay.q_tab, lay.q_store,
                lay.q_off,
                r.status, r.topic, r.ts, r.row_a, r.row_b, r.l_start, r.l_end,
                r.ival, r.carrier, r.quality, r.vals, r.has, r.p_start, r.p_end, r.out, r.info,
            )  # fmt: skip
            if code == K.UNKNOWN_TOPIC:
                # every topic of the block not known yet, learnt at once (a table rebuilt
                # per topic would cost a second for a site's first block)
                names = set(topic_txt.tobytes().split(b"\n")) - set(self.topics.names)
                self.topics.add_all(sorted(names))
                continue
            if code == K.OUT_OF_SPACE:  # the margin above rules it out; never loop
                raise Odd
            break
        r.site = r.status == K.SITE
        if self.site is not None and r.site.any():
            _scan_site(r, n, blob, self.site, self.topics)
        return r

    def _settle(
        self,
        r: _Scanned | None,
        rank: np.ndarray | None,
        t0: int,
        t1: int,
        pending: set[int],
    ) -> None:
        """Each eligible period of ``(t0, t1]`` whose records are all read here: a group
        whose lines hash to the newest cover's is settled."""
        lo = int(np.searchsorted(self.u_start, t0, side="left"))
        hi = int(np.searchsorted(self.u_start, t1, side="left"))
        if r is None or rank is None:
            for u in range(lo, hi):
                for group in Group:
                    self._settle_one(u, group, _EMPTY, pending)
            return
        # The records of period u, (start, end], are a run of the block (time order).
        firsts = np.searchsorted(r.ts, self.u_start[lo:hi], side="right")
        lasts = np.searchsorted(r.ts, self.u_end[lo:hi], side="right")
        site_rows = r.s_row[: r.nsite]
        dst = np.empty(r.used() + r.n + r.nsite + 1, np.uint8)
        nrank = len(self.topics.device_rank)
        energy = ((r.status == K.OK) & ~r.site).view(np.uint8)
        for u in range(lo, hi):
            if u in pending or not self.plan.eligible[u]:
                continue
            a, b = int(firsts[u - lo]), int(lasts[u - lo])
            self._energy(r, rank, nrank, energy, a, b, u, dst, pending)
            kinds = r.status[a:b]
            if not ((kinds == K.OTHER) | (kinds == K.SITE)).any():
                la = int(np.searchsorted(site_rows, a, side="left"))
                lb = int(np.searchsorted(site_rows, b, side="left"))
                end = S.assemble_site(r.s_start, r.s_end, r.s_row, r.ts, r.out, la, lb, dst, 0)
                got = Digest(lb - la, hashlib.sha256(dst.data[:end]).hexdigest())
                self._settle_one(u, Group.SITE, got, pending)

    def _energy(
        self,
        r: _Scanned,
        rank: np.ndarray,
        nrank: int,
        energy: np.ndarray,
        a: int,
        b: int,
        u: int,
        dst: np.ndarray,
        pending: set[int],
    ) -> None:
        """The period's energy lines: the energy records among rows ``a..b``."""
        end = self.k.assemble(r.l_start, r.l_end, rank, nrank, r.ts, energy, r.out, a, b, dst, 0)
        if end >= 0:
            got = Digest(int(energy[a:b].sum()), hashlib.sha256(dst.data[:end]).hexdigest())
            self._settle_one(u, Group.ENERGY, got, pending)

    def _settle_one(self, u: int, group: Group, got: Digest, pending: set[int]) -> None:
        if u in pending or not self.plan.eligible[u]:
            return
        claimed = self.plan.covers[u][group.value]
        if int(claimed["records"]) == got.records and claimed["hash"] == got.hash:
            self.outcome.settled[(self.plan.units[u], group)] = got

    def _compare_rollup(
        self, t0: int, t1: int, scanned: tuple[_Scanned, np.ndarray, np.ndarray] | None
    ) -> None:
        """The block's rollup rows against the records' sums (bulk_rollup)."""
        records = None
        if scanned is not None:
            r, rank, energy = scanned
            records = R.Records(r.ts, r.ival, rank, r.carrier, r.quality, r.vals, r.has, energy)
        rows = R.rows_of(self.db, t0 // rollup.QUARTER_MS, t1 // rollup.QUARTER_MS)
        if rows is None:
            raise Odd  # the rollup's two reads disagree: the exact check decides
        n, first = R.compare(self.k, records, rows, self.topics.device_rank, self.lay.c_names)
        self.outcome.differ += n
        if first is not None:
            old = self.outcome.first
            self.outcome.first = first if old is None else min(old, first)


def _scan_site(r: _Scanned, n: int, blob: np.ndarray, site: SiteLayout, tp: Topics) -> None:
    """The block's site rows (bulk_site.scan_site), into larger buffers if they fill."""
    cap = 8 * int(r.site.sum()) + 16
    start = int(r.info[1])
    while True:
        r.s_row = np.zeros(cap, np.int64)
        r.s_start = np.zeros(cap, np.int64)
        r.s_end = np.zeros(cap, np.int64)
        code = S.scan_site(
            blob, n, r.status, r.topic, r.row_a, r.row_b, r.ts,
            tp.part, tp.pstart, tp.pend,
            site.w_tab, site.w_store, site.w_off, site.w_kind,
            site.k2_src, site.k2_store, site.k2_off,
            r.out, start, tp.widest + 1024, r.s_row, r.s_start, r.s_end, r.info,
        )  # fmt: skip
        if code == K.DONE:
            r.nsite = int(r.info[1])
            return
        # Full: every site row is read again, into buffers twice as large.
        r.status[r.site & (r.status == K.OK)] = K.SITE
        cap *= 2
        grown = np.empty(2 * r.out.shape[0], np.uint8)
        grown[:start] = r.out[:start]
        r.out = grown


def _patch(r: _Scanned, blob: np.ndarray) -> None:
    """Numbers the kernel's fast path does not parse exactly: Python's own parse of the
    JSON text (json.loads, then float: as the rollup reads a payload)."""
    rows, cols = np.nonzero(r.has == K.PATCH)
    for i, c in zip(rows.tolist(), cols.tolist(), strict=True):
        text = blob[r.p_start[i, c] : r.p_end[i, c]].tobytes()
        r.vals[i, c] = float(json.loads(text))
        r.has[i, c] = K.PARSED


class _Scanned:
    """The kernel's per-record output for one block."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.status = np.zeros(n, np.uint8)
        self.topic = np.zeros(n, np.int64)
        self.ts = np.zeros(n, np.int64)
        self.l_start = np.zeros(n, np.int64)
        self.l_end = np.zeros(n, np.int64)
        self.ival = np.zeros(n, np.int64)
        self.carrier = np.zeros(n, np.int64)
        self.quality = np.zeros(n, np.int64)
        self.vals = np.zeros((n, K.N_VALS), np.float64)
        self.has = np.zeros((n, K.N_VALS), np.uint8)
        self.p_start = np.zeros((n, K.N_VALS), np.int64)
        self.p_end = np.zeros((n, K.N_VALS), np.int64)
        self.out = np.empty(0, np.uint8)
        self.info = np.zeros(4, np.int64)
        self.row_a = np.zeros(n, np.int64)
        self.row_b = np.zeros(n, np.int64)
        #: Site rows (intensity), and their lines: row, start and end in ``out``.
        self.site = np.zeros(n, np.bool_)
        self.s_row = np.zeros(0, np.int64)
        self.s_start = np.zeros(0, np.int64)
        self.s_end = np.zeros(0, np.int64)
        self.nsite = 0

    def used(self) -> int:
        """Bytes of ``out`` the lines take."""
        return int(max(self.info[1], self.info[2]))
