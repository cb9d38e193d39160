"""Where the records come from: the gateway's history, JSON lines, or the central store,
read into one stream of :class:`EnergyRow`.

Every source goes through the database point of a record
(:func:`agent.contract.points.points_of`), which is what the central store holds:
a payload from the history or a file becomes the same numbers, with the same
types, as the point read back from VictoriaMetrics or InfluxDB. That is what
makes the report from the three sources the same report, to the last digit.

Only energy records are read: the figures are sums of closed intervals, each
device's own. Intensity records are derived from the same intervals and would
count them twice.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agent.contract import MessageKind, TopicError, parse_topic
from agent.contract.points import Point, PointError, points_of
from agent.history import db as hdb
from agent.history import rollup
from agent.history.db import HISTORY_FILE, HistoryError
from agent.history.reader import HistoryReader
from agent.history.rollup import Quarter
from agent.ledger.export import json_objects
from agent.report import ReportError, SourceDown
from agent.report.verification import (
    Verification,
    from_chain,
    from_result,
    from_verdicts,
    unverified,
)
from agent.store import PointStore, StoreError

if TYPE_CHECKING:
    from agent.ledger.verify import RecordIn

MEASUREMENT = MessageKind.ENERGY.spec.measurement


@dataclass(frozen=True, slots=True)
class EnergyRow:
    """One closed interval of one device, as the database holds it."""

    device: str
    #: Unix ms of the interval's end.
    ts: int
    interval_s: int
    carrier: str
    quality: str
    energy_kwh: float
    co2_kg: float
    ef_kg_per_kwh: float | None
    volume_m3: float | None
    units: float | None
    unmetered_kwh: float | None


def row_of_point(p: Point) -> EnergyRow:
    f = p.fields

    def opt(name: str) -> float | None:
        v = f.get(name)
        return None if v is None else float(v)

    return EnergyRow(
        p.tags.get("device", ""),
        int(p.ts),
        int(f.get("interval_s", 0)),
        p.tags.get("carrier", ""),
        p.tags.get("quality", ""),
        float(f.get("energy_kwh", 0.0)),
        float(f.get("co2_kg", 0.0)),
        opt("ef_kg_per_kwh"),
        opt("volume_m3"),
        opt("units"),
        opt("unmetered_kwh"),
    )


def row_of_payload(device: str, p: Mapping[str, Any]) -> EnergyRow:
    """An energy payload as its database point reads back (:func:`row_of_point` of
    ``points_of``), without building the point: the history's fast path, a month of
    records per report. tests/integration/test_report.py holds the two to the byte."""

    def opt(name: str) -> float | None:
        v = p.get(name)
        return None if v is None else float(v)

    try:
        return EnergyRow(
            device, int(p["ts"]), int(p["interval_s"]), str(p["carrier"]), str(p["quality"]),
            float(p["energy_kwh"]), float(p["co2_kg"]), opt("ef_kg_per_kwh"),
            opt("volume_m3"), opt("units"), opt("unmetered_kwh"),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"an energy record of {device} without its shape: {exc!r}") from None


def energy_meter(prefix: str) -> Callable[[str], str | None]:
    """The device of an energy record's topic, None for any other topic.

    A stored record's topic is what its ledger line seals; its kind and device columns
    are the history's index only. A figure taken from a record takes them from the
    topic, so a column edited after the record was sealed moves no energy to another
    meter while its hour reads "verified" (and the bulk verification need not read
    them: docs/ledger.md)."""
    known: dict[str, str | None] = {}

    def meter(topic: str) -> str | None:
        try:
            return known[topic]
        except KeyError:
            pass
        try:
            ref = parse_topic(topic, prefix)
        except TopicError:
            device = None
        else:
            device = ref.device if ref.kind is MessageKind.ENERGY else None
        known[topic] = device
        return device

    return meter


def rows_of_message(topic: str, payload: Mapping[str, Any], prefix: str) -> list[EnergyRow]:
    """The energy row of a published message; [] for other kinds (ReportError if bad)."""
    try:
        ref = parse_topic(topic, prefix)
    except TopicError as exc:
        raise ReportError(f"record on {topic!r}: {exc}") from None
    if ref.kind is not MessageKind.ENERGY:
        return []
    try:
        return [row_of_point(p) for p in points_of(ref, payload)]
    except PointError as exc:
        raise ReportError(f"record on {topic!r}: {exc}") from None


def quarters_of(rows: Iterable[EnergyRow], *, ordered: bool) -> Iterator[Quarter]:
    """Records read one by one, summed as the rollup sums them (the same additions in the
    same order): the figures from records and from the rollup are the same to the bit."""
    if not ordered:
        rows = sorted(rows, key=lambda r: r.ts)
    return rollup.fold_stream(
        (
            r.device, r.ts,
            (r.interval_s, r.carrier, r.quality, r.energy_kwh, r.co2_kg, r.volume_m3, r.units,
             r.unmetered_kwh),
        )
        for r in rows
    )  # fmt: skip


class Source(Protocol):
    #: For the report's header: what was read.
    label: str

    def energy(self, start_ms: int, end_ms: int) -> Iterator[EnergyRow]:
        """Energy rows with ``start < ts <= end``, each (device, ts) once."""
        ...

    def quarters(self, start_ms: int, end_ms: int) -> Iterator[Quarter]:
        """The same rows summed by device and quarter hour (:func:`quarters_of`)."""
        ...

    def first_ms(self) -> int | None:
        """The oldest record's ts, if the source can tell (for "before history starts")."""
        ...

    def verification(self, start_ms: int, end_ms: int) -> Verification: ...

    def start_verification(self, start_ms: int, end_ms: int) -> Callable[[], Verification]:
        """:meth:`verification`, begun now where it can run beside the figures; the
        function returns it (waiting for it, or computing it then)."""
        ...

    def figures_from_records(self, start_ms: int, end_ms: int) -> bool:
        """Did the verification of the span find that the figures must be summed from
        the records after all (a history's rollup that differs from them)?"""
        ...

    def close(self) -> None: ...


T = TypeVar("T")


def in_child(work: Callable[[], T], what: str) -> Callable[[], T] | None:
    """``work`` in a forked process, begun now; the function returns its result (or
    raises what it raised). None where processes cannot fork. The report calls this
    before it starts any thread (a fork copies no other thread, nor a lock it held)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe(duplex=False)

    def run() -> None:
        try:
            theirs.send(work())
        except Exception as exc:  # noqa: BLE001 (a process boundary: re-raised over there)
            try:
                theirs.send(exc)
            except (TypeError, AttributeError, pickle.PicklingError):
                theirs.send(RuntimeError(f"{what} failed: {exc!r}"))
        finally:
            theirs.close()

    child = ctx.Process(target=run, daemon=True)
    child.start()
    theirs.close()

    def result() -> T:
        try:
            got = mine.recv()
        except EOFError:
            raise SourceDown(
                f"{what} ended without a result (its process: exit code {child.exitcode})"
            ) from None
        finally:
            mine.close()
            child.join()
        if isinstance(got, BaseException):
            raise got
        return got  # type: ignore[no-any-return]

    return result


class HistorySource:
    """``--history STATE_DIR``: the gateway's own SQLite history, read-only beside a
    running agent; its ledger verified with the keys the gateway signed with."""

    def __init__(
        self, state_dir: Path, *, prefix: str, use_rollup: bool = True, bulk: bool = True
    ) -> None:
        self.state_dir = state_dir
        self.prefix = prefix
        #: False: every record, even where the rollup could answer (the benchmark's and
        #: the tests' other path).
        self.use_rollup = use_rollup
        #: False: the ledger verified record by record, never in bulk (the tests' and the
        #: benchmark's other path).
        self.bulk = bulk
        if bulk:
            from agent.ledger import use_kernel_cache

            use_kernel_cache(state_dir)
        self._checks: dict[tuple[int, int], rollup.Check | rollup.Checked] = {}
        path = state_dir / HISTORY_FILE
        self.label = f"history {path}"
        if not path.exists():
            raise ReportError(
                f"--history {state_dir}: no {HISTORY_FILE} there (has `energy-agent run` run "
                "with this state_dir?)"
            )
        try:
            self.reader = HistoryReader.open(path)
        except HistoryError as exc:
            raise ReportError(str(exc)) from None

    def energy(self, start_ms: int, end_ms: int) -> Iterator[EnergyRow]:
        # One streamed query, not pages: pages re-run an ordered query per 5,000
        # records, five times the cost for a month (docs/performance.md). Every kind's
        # rows, the topic deciding: the kind and device columns are not sealed.
        sql = "SELECT topic, payload FROM records WHERE ts > ? AND ts <= ? ORDER BY ts, id"
        loads = json.loads
        meter = energy_meter(self.prefix)
        try:
            with hdb.errors(self.reader.path):
                rows = self.reader.db.execute(sql, (start_ms, end_ms))
                for topic, payload in rows:
                    device = meter(topic)
                    if device is not None:
                        yield row_of_payload(device, loads(payload.decode()))
        except HistoryError as exc:
            raise SourceDown(str(exc)) from None

    def quarters(self, start_ms: int, end_ms: int) -> Iterator[Quarter]:
        """The rollup when the file has it (docs/performance.md), else the records; the
        records too when the verification of the span found the rollup differs from them."""
        check = self._checks.get((start_ms, end_ms))
        try:
            with hdb.errors(self.reader.path):
                use = self.use_rollup and rollup.readable(self.reader.db, start_ms, end_ms)
                if use and (check is None or check.differ == 0):
                    yield from rollup.read(self.reader.db, start_ms, end_ms)
                    return
        except HistoryError as exc:
            raise SourceDown(str(exc)) from None
        yield from quarters_of(self.energy(start_ms, end_ms), ordered=True)

    def start_verification(self, start_ms: int, end_ms: int) -> Callable[[], Verification]:
        """The verification in a process of its own, forked now, while this one sums the
        figures: its threads and this process's figures then never wait for one GIL
        (sharing one, the figures' row-by-row reads took 4x as long:
        docs/performance.md). Where processes cannot fork, it runs when asked for."""

        def child() -> tuple[Verification, rollup.Checked | None]:
            # Through connections of its own: the parent's is never touched here.
            verdict = self.verification(start_ms, end_ms)
            c = self._checks.get((start_ms, end_ms))
            return verdict, None if c is None else rollup.Checked(c.differ, c.first, c.complete)

        pending = in_child(child, f"{self.label}: the verification")
        if pending is None:
            return lambda: self.verification(start_ms, end_ms)

        def result() -> Verification:
            verdict, check = pending()
            if check is not None:
                self._checks[(start_ms, end_ms)] = check
            return verdict

        return result

    def figures_from_records(self, start_ms: int, end_ms: int) -> bool:
        check = self._checks.get((start_ms, end_ms))
        return check is not None and check.differ > 0

    def first_ms(self) -> int | None:
        try:
            oldest = self.reader.oldest_ts()
        except HistoryError as exc:
            raise SourceDown(str(exc)) from None
        return oldest

    def verification(self, start_ms: int, end_ms: int) -> Verification:
        from agent.ledger import crypto_missing

        missing = crypto_missing()
        if missing is not None:
            return unverified(start_ms, end_ms, "other", missing)
        from agent.ledger import keys

        try:
            trusted = keys.known(self.state_dir)
        except keys.LedgerKeyError as exc:
            return unverified(start_ms, end_ms, "other", str(exc))
        if not trusted:
            return unverified(start_ms, end_ms, "no_keys")
        try:
            # A connection of its own: the report computes its figures meanwhile.
            reader = HistoryReader.open(self.reader.path)
        except HistoryError as exc:
            raise SourceDown(str(exc)) from None
        try:
            entries = [row.entry for row in reader.entries()]
            last = reader.last_entry()
            upto = last.upto if last is not None else 0
            pruned = reader.pruned_before()
            checked = self.use_rollup and rollup.readable(reader.db, start_ms, end_ms)
            span = (start_ms, end_ms)
            found = (
                self._bulk(reader, entries, trusted, span, upto, pruned, checked)
                if self.bulk
                else None
            )
            check: rollup.Check | rollup.Checked | None
            if found is not None:
                verdict, check = found
            else:
                exact = rollup.Check(reader.db, start_ms, end_ms) if checked else None
                check = exact
                verdict = from_chain(
                    entries,
                    self._records_in(reader, start_ms, end_ms, upto, exact),
                    trusted,
                    prefix=self.prefix,
                    span=span,
                    pruned_before=pruned,
                )
        except HistoryError as exc:
            raise SourceDown(str(exc)) from None
        finally:
            reader.close()
        if check is None:
            return verdict
        self._checks[(start_ms, end_ms)] = check
        if not check.complete:
            check.differ = check.differ or 1  # not every record seen: sum the records
        if not check.differ:
            return verdict
        return replace(verdict, problems=[*verdict.problems, self._differs(check)])

    def _bulk(
        self,
        reader: HistoryReader,
        entries: list[Any],
        trusted: list[Any],
        span: tuple[int, int],
        upto: int,
        pruned: int | None,
        checked: bool,
    ) -> tuple[Verification, rollup.Checked | None] | None:
        """The verification with the records settled in bulk where they can be
        (:mod:`agent.ledger.bulk`: the same verdict, seconds for a month); None when the
        bulk pass cannot decide, and the caller verifies every record itself."""
        from agent.ledger import bulk
        from agent.ledger.entry import Keyring

        got = bulk.verify_history(
            reader, entries, Keyring(list(trusted)), prefix=self.prefix, upto=upto,
            pruned_before=pruned, span=span, read=span, check_rollup=checked,
        )  # fmt: skip
        if got is None:
            return None
        result, done = got
        verdict = from_result(entries, result, span=span, pruned_before=pruned)
        return verdict, rollup.Checked(done.differ, done.first) if checked else None

    def _records_in(
        self,
        reader: HistoryReader,
        start_ms: int,
        end_ms: int,
        upto: int,
        check: rollup.Check | None,
    ) -> Iterator[RecordIn]:
        """The span's records for the ledger's verification, summed on the way into a
        check of the rollup (the one pass over them: they are read and decoded once)."""
        from agent.ledger.verify import RecordIn

        meter = energy_meter(self.prefix)
        for r in reader.iter_records(start_ms, end_ms):
            payload = json.loads(r.payload)
            if check is not None:
                device = meter(r.topic)
                if device is not None:
                    check.record(device, r.ts, payload)
            yield RecordIn(r.topic, payload, r.id > upto)
        if check is not None:
            check.finish()

    def _differs(self, check: rollup.Check | rollup.Checked) -> str:
        where = ""
        if check.first is not None:
            bq, _, device, _ = check.first
            at = dt.datetime.fromtimestamp(bq * rollup.QUARTER_MS / 1000, dt.UTC)
            where = f", the first of {device} at {at:%Y-%m-%d %H:%M} UTC"
        return (
            f"the history's quarter-hour rollup differs from its records in {check.differ} "
            f"quarter hours{where}: the figures are the records' sums"
        )

    def close(self) -> None:
        self.reader.close()


class JsonLinesSource:
    """``--jsonl FILE``: `replay`'s output (``{"topic", "payload"}`` per line) or a
    `history export` (typed lines, with the ledger's entries). Read a line at a time,
    once per question: a file of months is never held in memory."""

    def __init__(self, path: Path, *, prefix: str, public_keys: list[Any] | None = None) -> None:
        self.path = path
        self.prefix = prefix
        self.public_keys = public_keys
        self.label = f"JSON lines {path}"
        if not path.is_file():
            raise ReportError(f"--jsonl {path}: no such file")

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return json_objects(self.path, ReportError, f"--jsonl {self.path}")

    def _messages(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        for n, obj in self._lines():
            kind = obj.get("type", "record")
            if kind != "record":
                continue
            topic, payload = obj.get("topic"), obj.get("payload")
            if not isinstance(topic, str) or not isinstance(payload, dict):
                raise ReportError(f"{self.path}:{n}: a record line needs a topic and a payload")
            yield n, topic, payload

    def energy(self, start_ms: int, end_ms: int) -> Iterator[EnergyRow]:
        seen: set[tuple[str, int]] = set()
        for n, topic, payload in self._messages():
            try:
                rows = rows_of_message(topic, payload, self.prefix)
            except ReportError as exc:
                raise ReportError(f"{self.path}:{n}: {exc}") from None
            for row in rows:
                key = (row.device, row.ts)
                if start_ms < row.ts <= end_ms and key not in seen:
                    seen.add(key)
                    yield row

    def quarters(self, start_ms: int, end_ms: int) -> Iterator[Quarter]:
        """Summed as the file streams when its records are in time order (`replay` and
        `history export` write them so: a file of months is never held); sorted in
        memory first otherwise."""
        ordered = self._in_order(start_ms, end_ms)
        return quarters_of(self.energy(start_ms, end_ms), ordered=ordered)

    def _in_order(self, start_ms: int, end_ms: int) -> bool:
        last = start_ms
        for _, _, payload in self._messages():
            ts = payload.get("ts")
            if isinstance(ts, int) and start_ms < ts <= end_ms:
                if ts < last:
                    return False
                last = ts
        return True

    def start_verification(self, start_ms: int, end_ms: int) -> Callable[[], Verification]:
        # One read at a time: the verification after the figures.
        return lambda: self.verification(start_ms, end_ms)

    def figures_from_records(self, start_ms: int, end_ms: int) -> bool:
        return False

    def first_ms(self) -> int | None:
        return None

    def verification(self, start_ms: int, end_ms: int) -> Verification:
        from agent.ledger.verify import RecordIn

        entries = [o["entry"] for _, o in self._lines() if o.get("type") == "ledger"]
        if not entries:
            return unverified(start_ms, end_ms, "no_ledger_in_file")
        if not self.public_keys:
            return unverified(start_ms, end_ms, "no_public_key")
        records = (
            RecordIn(topic, payload, bool(obj_pending))
            for topic, payload, obj_pending in self._records_in(start_ms, end_ms)
        )
        header = next((o for _, o in self._lines() if o.get("type") == "export"), {})
        return from_chain(
            entries,
            records,
            self.public_keys,
            prefix=str(header.get("prefix") or self.prefix),
            span=(start_ms, end_ms),
            pruned_before=header.get("pruned_before"),
        )

    def _records_in(self, start_ms: int, end_ms: int) -> Iterator[tuple[str, dict[str, Any], bool]]:
        for _, obj in self._lines():
            if obj.get("type") != "record":
                continue
            payload = obj.get("payload")
            if isinstance(payload, dict) and start_ms < int(payload.get("ts", 0)) <= end_ms:
                yield str(obj.get("topic")), payload, bool(obj.get("pending"))

    def close(self) -> None:
        return None


class StoreSource:
    """The central store (VictoriaMetrics' export API, or Flux on InfluxDB 2): the
    points the bridge wrote, and the bridge's verdict on every ledger entry."""

    def __init__(self, store: PointStore, label: str, *, site: str, gateway: str) -> None:
        self.store = store
        self.label = label
        self.site = site
        self.gateway = gateway

    def _points(self, measurement: str, start_ms: int, end_ms: int) -> list[Point]:
        try:
            return self.store.points(measurement, self.site, self.gateway, start_ms, end_ms)
        except StoreError as exc:
            raise SourceDown(f"{self.label}: {exc}") from None
        except ValueError as exc:
            # The InfluxDB client refuses some requests before sending them (a token
            # that is no header value): the store could not be asked.
            raise SourceDown(f"{self.label}: {exc}") from None

    def energy(self, start_ms: int, end_ms: int) -> Iterator[EnergyRow]:
        for p in self._points(MEASUREMENT, start_ms, end_ms):
            yield row_of_point(p)

    def quarters(self, start_ms: int, end_ms: int) -> Iterator[Quarter]:
        return quarters_of(self.energy(start_ms, end_ms), ordered=False)

    def start_verification(self, start_ms: int, end_ms: int) -> Callable[[], Verification]:
        # One read at a time: the verification after the figures.
        return lambda: self.verification(start_ms, end_ms)

    def figures_from_records(self, start_ms: int, end_ms: int) -> bool:
        return False

    def first_ms(self) -> int | None:
        return None

    def verification(self, start_ms: int, end_ms: int) -> Verification:
        points = self._points(MessageKind.LEDGER.spec.measurement, start_ms, end_ms)
        return from_verdicts(
            [(p.ts, p.fields) for p in points],
            start_ms,
            end_ms,
        )

    def close(self) -> None:
        self.store.close()
