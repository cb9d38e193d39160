"""The ledger's bulk verification (agent/ledger/bulk.py) against the record-by-record
path it stands in for: the same verdict hour by hour, the same problems and the same
word on the rollup, on a real history and ledger (the History and Sealer `run` uses),
clean and tampered in every way the exact path's tests tamper; and its two pieces of
arithmetic held to their definitions: a canonical line is the shape's
(agent.ledger.shape), a number's text keeps its decimal value exactly, and the
rollup's sums are :func:`agent.history.rollup.fold`'s to the bit.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("cryptography")

from agent.contract import (
    Carrier,
    MessageKind,
    Topics,
    encode,
    energy_payload,
    intensity_payload,
    parse_topic,
    window_values,
)
from agent.history import rollup
from agent.history.writer import new_record
from agent.ledger import bulk, jcs
from agent.ledger import bulk_kernel as K
from agent.ledger.canonical import Group, lines_of
from agent.ledger.shape import SHAPES
from agent.report.sources import HistorySource
from tests.support.ledger_gateway import PREFIX, LedgerGateway, energy, intensity

MIN = 60_000
HOUR = 3_600_000
T0 = 1_750_000_000_000 // HOUR * HOUR
DEVICES = ("m1", "m2", "m3")
TOPICS = Topics(PREFIX, "plant-a", "gw-01")
SPAN = (T0, T0 + 2 * HOUR)


def test_the_kernels_are_compiled_here() -> None:
    # The suite runs with numba: a bulk test that fell back to the exact path would
    # compare the exact path with itself.
    assert bulk.available()


# --- a sealed history, and the verdict from both paths -----------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hours of 1-minute records of three meters and the site's intensity, sealed in
    15-minute periods; one record in hour two written late (the entry after covers its
    period again)."""
    state = tmp_path_factory.mktemp("bulk") / "state"
    gw = LedgerGateway(state, period_s=900, delay_s=10.0)
    gw.start(T0 + 5_000)
    for k in range(1, 121):
        end = T0 + k * MIN
        for i, d in enumerate(DEVICES):
            if (d, k) == ("m3", 70):
                continue  # comes late, below
            quality = "interpolated" if (d, k) == ("m2", 30) else "measured"
            gw.publish(energy(gw.topics, d, end, round(0.1 + k / 1000 + i / 7, 9), quality))
        gw.publish(intensity(gw.topics, end, 0.2 + k / 100))
        if k == 100:
            gw.publish(energy(gw.topics, "m3", T0 + 70 * MIN, 0.5))
        gw.seal(end + 10_000)
    gw.seal(T0 + 2 * HOUR + 20 * MIN)
    gw.close()
    return state


def tampered(clean: Path, tmp: Path, sql: str, *args: Any) -> Path:
    state = tmp / "state"
    shutil.copytree(clean, state)
    db = sqlite3.connect(state / "history.db")
    with db:
        assert db.execute(sql, args).rowcount >= 1
    db.close()
    return state


def payload_of(state: Path, device: str, ts: int) -> dict[str, Any]:
    db = sqlite3.connect(state / "history.db")
    (raw,) = db.execute(
        "SELECT payload FROM records WHERE kind = 'energy' AND device = ? AND ts = ?",
        (device, ts),
    ).fetchone()
    db.close()
    out: dict[str, Any] = json.loads(raw)
    return out


def verdict(state: Path, span: tuple[int, int], *, use_bulk: bool) -> tuple[Any, Any]:
    source = HistorySource(state, prefix=PREFIX, bulk=use_bulk)
    try:
        v = source.verification(*span)
        check = source._checks.get(span)
    except ValueError as exc:  # a record whose topic does not parse, on either path
        return "raised", str(exc)
    finally:
        source.close()
    return v, None if check is None else (check.differ, check.first, check.complete)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[bulk.Outcome | None]:
    """What each bulk pass settled (None: it left the span to the exact path)."""
    seen: list[bulk.Outcome | None] = []
    real = bulk.settle

    def wrapped(*args: Any, **kwargs: Any) -> bulk.Outcome | None:
        got = real(*args, **kwargs)
        seen.append(got)
        return got

    monkeypatch.setattr(bulk, "settle", wrapped)
    return seen


def same_verdict(state: Path, span: tuple[int, int] = SPAN) -> Any:
    exact = verdict(state, span, use_bulk=False)
    fast = verdict(state, span, use_bulk=True)
    assert fast == exact
    return exact


def test_a_clean_history_is_settled_in_bulk_with_the_exact_verdict(
    clean: Path, spy: list[bulk.Outcome | None]
) -> None:
    (v, check) = same_verdict(clean)
    assert v.count("verified") == 2 and not v.problems
    assert check == (0, None, True)
    (outcome,) = spy
    assert outcome is not None
    # 8 quarter-hour periods, both hashes of every one settled, the late record's too:
    # 360 energy records, and 120 intensity records of 2 windows each
    assert energy_settled(outcome) == 8 and site_settled(outcome) == 8
    assert outcome.records == 3 * 120
    assert sum(d.records for (_, g), d in outcome.settled.items() if g is Group.ENERGY) == 360
    assert sum(d.records for (_, g), d in outcome.settled.items() if g is Group.SITE) == 240


def energy_settled(outcome: bulk.Outcome) -> int:
    return sum(1 for _, g in outcome.settled if g is Group.ENERGY)


def site_settled(outcome: bulk.Outcome) -> int:
    return sum(1 for _, g in outcome.settled if g is Group.SITE)


def settled_as(spy: list[bulk.Outcome | None], energy: int | None, name: str) -> None:
    """The bulk pass settled ``energy`` periods' energy hashes, or (None) left the span."""
    (outcome,) = [o for o in spy if o is not None] or [None]
    if energy is None:
        assert outcome is None, name
    else:
        assert outcome is not None and energy_settled(outcome) == energy, name


def compact(doc: dict[str, Any]) -> bytes:
    """A payload as the agent writes it (agent.contract.encode)."""
    return encode(doc)


def set_payload(device: str, ts: int) -> str:
    where = f"kind = 'energy' AND device = '{device}' AND ts = {ts}"
    return f"UPDATE records SET payload = ? WHERE {where}"


TS = T0 + 20 * MIN  # in the period 15-30 min


@pytest.mark.parametrize(
    ("name", "settled", "mutate"),
    [
        # well-formed, another number: the period falls to the exact path, which finds it
        ("number changed", 7, lambda p: compact({**p, "energy_kwh": p["energy_kwh"] + 0.001})),
        # the same value written another way: the same line, or the exact path's verdict
        ("trailing zero", 8, lambda p: compact(p).replace(b"0.5703", b"0.57030")),
        ("exponent", 8, lambda p: compact(p).replace(b"0.5703", b"5.703e-1")),
        (
            "not the shortest digits",
            7,
            lambda p: compact(p).replace(b"0.5703", b"0.57029999999999996"),
        ),
        # not the agent's layout: the whole span goes the exact way
        ("spaces", None, lambda p: json.dumps(p).encode()),
        ("a time that is not the row's", None, lambda p: compact({**p, "ts": p["ts"] + MIN})),
        ("a boolean", None, lambda p: compact({**p, "units": True})),
        ("no time", None, lambda p: compact({k: v for k, v in p.items() if k != "ts"})),
        # the rollup cannot sum it: the exact path says so, as before
        (
            "a field taken away",
            None,
            lambda p: compact({k: v for k, v in p.items() if k != "co2_kg"}),
        ),
        ("a field added", 7, lambda p: compact({**p, "export_kwh": 0.0})),
        ("an unknown key", 8, lambda p: compact({**p, "note": "x"})),
        ("a tag", 7, lambda p: compact({**p, "quality": "estimated"})),
        ("a duplicate key", None, lambda p: compact(p)[:-1] + b',"co2_kg":1.0}'),
        # SQLite hands the kernel payloads NUL-separated: one with a NUL shifts the rest
        ("a NUL byte", None, lambda p: compact(p)[:-1] + b',"x":"\x00"}'),
        ("a NUL between", None, lambda p: compact(p) + b"\x00" + compact(p)),
        ("huge number", None, lambda p: compact(p).replace(b"0.5703", b"1" + b"0" * 400)),
    ],
)
def test_a_changed_payload_gets_the_exact_verdict(
    clean: Path,
    tmp_path: Path,
    spy: list[bulk.Outcome | None],
    name: str,
    settled: int | None,
    mutate: Callable[[dict[str, Any]], bytes],
) -> None:
    state = tampered(clean, tmp_path, set_payload("m1", TS), mutate(payload_of(clean, "m1", TS)))
    same_verdict(state)
    settled_as(spy, settled, name)


@pytest.mark.parametrize(
    ("name", "sql", "settled"),
    [
        (
            "deleted",
            f"DELETE FROM records WHERE kind = 'energy' AND device = 'm2' AND ts = {TS}",
            7,
        ),
        (
            "moved to another meter",
            "UPDATE records SET device = 'm9', topic = replace(topic, '/m2/', '/m9/') "
            f"WHERE kind = 'energy' AND device = 'm2' AND ts = {TS}",
            7,
        ),
        # the columns only index the history: the topic is sealed, and decides
        (
            "its device column",
            f"UPDATE records SET device = 'zz' WHERE device = 'm2' AND ts = {TS}",
            8,
        ),
        (
            "its kind column",
            f"UPDATE records SET kind = 'status' WHERE device = 'm2' AND ts = {TS}",
            8,
        ),
        ("its topic", f"UPDATE records SET topic = 'x/y' WHERE device = 'm2' AND ts = {TS}", None),
        ("its row time", f"UPDATE records SET ts = ts + 1 WHERE device = 'm2' AND ts = {TS}", None),
        (
            "an intensity record",
            "UPDATE records SET payload = CAST(replace(payload, '0.', '1.') AS BLOB) "
            f"WHERE kind = 'intensity' AND ts = {TS}",
            8,
        ),
        (
            "an entry",
            "UPDATE ledger SET entry = CAST(replace(entry, '\"seq\":3', '\"seq\":4') AS BLOB)",
            8,
        ),
        (
            "the rollup",
            f"UPDATE rollup SET kwh = kwh + 1 WHERE device = 'm1' AND bq = {TS // 900_000}",
            8,
        ),
        ("a rollup row", f"DELETE FROM rollup WHERE device = 'm3' AND bq = {TS // 900_000}", 8),
        (
            "pruned",
            "INSERT INTO meta (name, value) VALUES ('pruned_before_ms', " + str(T0 + HOUR) + ")",
            4,
        ),
    ],
)
def test_a_changed_history_gets_the_exact_verdict(
    clean: Path,
    tmp_path: Path,
    spy: list[bulk.Outcome | None],
    name: str,
    sql: str,
    settled: int | None,
) -> None:
    state = tampered(clean, tmp_path, sql)
    same_verdict(state)
    settled_as(spy, settled, name)


def test_edited_kind_and_device_columns_move_no_energy(clean: Path, tmp_path: Path) -> None:
    """A record's kind and device columns are not sealed (its topic is): edited, the hours
    still verify, and the figures (summed from the records here, as the rollup was edited
    too) are the clean history's to the bit: no kWh moved to another meter or lost."""
    bq = TS // 900_000
    state = tampered(
        clean, tmp_path,
        f"UPDATE records SET device = 'zz' WHERE kind = 'energy' AND device = 'm2' AND ts = {TS}",
    )  # fmt: skip
    db = sqlite3.connect(state / "history.db")
    with db:
        db.execute(f"UPDATE records SET kind = 'status' WHERE device = 'm1' AND ts = {TS}")
        db.execute(f"UPDATE rollup SET kwh = kwh + 1 WHERE device = 'm3' AND bq = {bq}")
    db.close()
    want = HistorySource(clean, prefix=PREFIX)
    try:
        assert want.verification(*SPAN).count("verified") == 2
        clean_quarters = list(want.quarters(*SPAN))
        assert not want.figures_from_records(*SPAN)  # the clean history's rollup
    finally:
        want.close()
    for use_bulk in (False, True):
        source = HistorySource(state, prefix=PREFIX, bulk=use_bulk)
        try:
            v = source.verification(*SPAN)
            assert v.count("verified") == 2, use_bulk
            at = dt.datetime.fromtimestamp(bq * 900, dt.UTC)
            assert v.problems == [
                "the history's quarter-hour rollup differs from its records in 1 quarter "
                f"hours, the first of m3 at {at:%Y-%m-%d %H:%M} UTC: the figures are the "
                "records' sums"
            ]
            assert source.figures_from_records(*SPAN)
            assert list(source.quarters(*SPAN)) == clean_quarters, use_bulk
        finally:
            source.close()


def test_records_after_the_last_entry_leave_their_period_to_the_exact_path(
    clean: Path, tmp_path: Path, spy: list[bulk.Outcome | None]
) -> None:
    state = tmp_path / "state"
    shutil.copytree(clean, state)
    gw = LedgerGateway(state, period_s=900, delay_s=10.0)
    try:
        gw.publish(energy(gw.topics, "m4", TS, 0.3))  # late, not sealed yet: pending
    finally:
        gw.close()
    v, _ = same_verdict(state)
    (outcome,) = spy[-1:]
    assert outcome is not None and energy_settled(outcome) == 7
    assert site_settled(outcome) == 7  # a period in flux is left whole to the exact path
    assert ((T0 + 15 * MIN, T0 + 30 * MIN), Group.ENERGY) not in outcome.settled
    assert v.count("verified") == 2  # the period's newest cover still holds


@pytest.mark.parametrize(
    "span",
    [
        (T0 + 5 * MIN, T0 + 2 * HOUR),  # not on a quarter hour: no rollup check
        (T0 + HOUR, T0 + 2 * HOUR),  # half the chain
        (T0 - HOUR, T0 + 3 * HOUR),  # beyond it both ways
    ],
)
def test_any_span_gets_the_exact_verdict(clean: Path, span: tuple[int, int]) -> None:
    same_verdict(clean, span)


def test_one_worker_or_two_settle_the_same(clean: Path) -> None:
    from agent.ledger.verify import newest_covers

    source = HistorySource(clean, prefix=PREFIX)
    try:
        entries = [row.entry for row in source.reader.entries()]
        last = source.reader.last_entry()
        assert last is not None
        plan = bulk.periods(newest_covers(entries), SPAN, None)
        one, two = (
            bulk.settle(
                source.reader.path, SPAN, plan, upto=last.upto, prefix=PREFIX,
                check_rollup=True, workers=w,
            )
            for w in (1, 2)
        )  # fmt: skip
    finally:
        source.close()
    assert one is not None and two is not None
    assert one.settled == two.settled and one.records == two.records == 360
    assert len(one.settled) == 16


# --- the kernel's lines and numbers --------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
optional = st.none() | finite


@st.composite
def agent_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Energy payloads as the core builds them (energy_payload: rounded, ordered)."""
    given_: dict[str, Any] = {
        "ts": draw(st.integers(1, 2**44)),
        "interval_s": draw(st.sampled_from([1, 60, 300, 900, 3600])),
        "carrier": draw(st.sampled_from(list(Carrier))),
        "energy_kwh": draw(finite.filter(lambda x: abs(x) < 1e12)),
        "co2_kg": draw(finite.filter(lambda x: abs(x) < 1e12)),
        "ef_kg_per_kwh": draw(st.floats(0, 2)),
        "quality": draw(st.sampled_from(["measured", "interpolated", "gap", "reset", "mixed"])),
    }
    for name in ("export_kwh", "volume_m3", "units", "unmetered_kwh"):
        x = draw(optional.filter(lambda x: x is None or abs(x) < 1e12))
        if x is not None:
            given_[name] = x
    return energy_payload(**given_)


@settings(max_examples=300, deadline=None)
@given(payload=agent_payloads(), device=st.sampled_from(["m1", "a-b_c", "m" * 40]))
def test_a_line_is_the_shapes_for_what_the_agent_writes(
    payload: dict[str, Any], device: str
) -> None:
    msg = TOPICS.message(MessageKind.ENERGY, payload, device)
    raw = encode(payload)
    (got,) = bulk.lines([(int(payload["ts"]), msg.topic, raw)], PREFIX)
    _, want = SHAPES[MessageKind.ENERGY].line(parse_topic(msg.topic, PREFIX), json.loads(raw))
    assert got == [want.encode()]


share = st.floats(0, 1)


@st.composite
def intensity_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Intensity records as the site builds them (window_values: rounded, nulls where a
    ratio has no denominator, missing devices listed, net import where it exports)."""
    names = draw(st.lists(st.sampled_from(["1m", "15m", "1h", "24h", "today", "month"]),
                          min_size=0, max_size=6, unique=True))  # fmt: skip
    windows = {}
    for name in names:
        m, i = draw(share), draw(share)
        kwh = draw(finite.filter(lambda x: abs(x) < 1e12))
        windows[name] = window_values(
            kwh,
            kwh * draw(st.floats(0, 2)),  # CO2 at some factor: a finite intensity
            draw(st.just(0.0) | st.floats(1e-3, 1e9)),  # units: none, or countable
            draw(st.floats(0, 1e9)),
            (m, i * (1 - m), max(0.0, 1 - m - i * (1 - m))),
            (n := draw(st.integers(0, 3)), [f"m{k}" for k in range(n)]),
            draw(st.none() | st.floats(-1e6, 1e6)),
        )
    return intensity_payload(draw(st.integers(1, 2**44)), windows, draw(st.integers(0, 3)))


@settings(max_examples=300, deadline=None)
@given(payload=intensity_payloads())
def test_site_lines_are_the_points_for_what_the_site_writes(payload: dict[str, Any]) -> None:
    msg = TOPICS.message(MessageKind.INTENSITY, payload)
    raw = encode(payload)
    (got,) = bulk.lines([(int(payload["ts"]), msg.topic, raw)], PREFIX)
    want = [
        line.text.encode() for line in lines_of(parse_topic(msg.topic, PREFIX), json.loads(raw))
    ]
    assert got == want


json_numbers = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z")


@settings(max_examples=2000, deadline=None)
@given(text=json_numbers)
def test_a_numbers_text_keeps_its_decimal_value(text: str) -> None:
    """The kernel moves digits and the point, never rounds: its text is the payload's
    number exactly, so it can equal the sealed text only if the payload holds the
    sealed value (the argument of agent/ledger/bulk_kernel.py)."""
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    digs = np.zeros(64, np.int64)
    nk, n, neg, _, ok = K.digits_of(buf, 0, len(buf), digs)
    assert ok
    out = np.zeros(512, np.uint8)
    end = K.number_text(out, 0, neg, digs, nk, n)
    written = out[:end].tobytes().decode()
    assert Decimal(written) == Decimal(text)


@settings(max_examples=2000, deadline=None)
@given(x=finite)
def test_the_agents_number_text_is_ecmascripts(x: float) -> None:
    text = json.dumps(x)
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    digs = np.zeros(64, np.int64)
    nk, n, neg, _, ok = K.digits_of(buf, 0, len(buf), digs)
    out = np.zeros(512, np.uint8)
    end = K.number_text(out, 0, neg, digs, nk, n)
    assert ok and out[:end].tobytes().decode() == jcs.number(x)


# --- the rollup's sums ------------------------------------------------------------------------

awkward = (
    st.floats(-1e6, 1e6, allow_nan=False)  # 17 digits: Python parses these
    | st.integers(-(10**6), 10**6).map(lambda i: i / 1000)  # the fast path
    | st.sampled_from([0.0, -0.0, 1e-7, 3e-05, 12345678.123456789, 1e300])
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(DEVICES),
            st.sampled_from([60, 300, 900, 3600]),
            st.sampled_from(["measured", "interpolated", "gap", "reset"]),
            awkward,
            awkward,
            st.none() | awkward,
            st.sampled_from([Carrier.ELECTRICITY, Carrier.NATURAL_GAS]),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_the_rollups_sums_are_the_kernels_to_the_bit(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Any]
) -> None:
    """The history writes its rollup with Python's fold; the kernel folds the same
    records: any difference in any bit of any sum would count as a differing row."""
    from agent.history import HISTORY_FILE, History

    state = tmp_path_factory.mktemp("fold")
    history = History(state / HISTORY_FILE, max_bytes=2**30, retention_months=240)
    try:
        batch = []
        for k, (device, interval, quality, kwh, co2, m3, carrier) in enumerate(rows):
            ts = T0 + (k // len(DEVICES) + 1) * interval * 1000
            p = energy_payload(
                ts=ts, interval_s=interval, carrier=carrier, energy_kwh=kwh, co2_kg=co2,
                ef_kg_per_kwh=0.5, quality=quality, **({} if m3 is None else {"volume_m3": m3}),
            )  # fmt: skip
            msg = TOPICS.message(MessageKind.ENERGY, p, device)
            batch.append(new_record(parse_topic(msg.topic), msg.topic, p, encode(p)))
        history.put(batch)
    finally:
        history.close()
    span = (T0, T0 + 400 * HOUR)
    outcome = bulk.settle(
        state / HISTORY_FILE, span, bulk.Periods([], [], []), upto=0, prefix=PREFIX,
        check_rollup=True,
    )  # fmt: skip
    assert outcome is not None
    stored = {(r.device, r.ts) for r in batch}
    assert outcome.records == len(stored)
    assert outcome.differ == 0
    db = sqlite3.connect(state / HISTORY_FILE)
    exact = rollup.Check(db, *span)
    for device, ts, raw in db.execute("SELECT device, ts, payload FROM records ORDER BY ts, id"):
        exact.record(device, ts, json.loads(raw))
    exact.finish()
    db.close()
    assert exact.differ == 0
    # and a row changed in its last bit is seen
    db = sqlite3.connect(state / HISTORY_FILE)
    with db:
        key = "bq = ? AND sq = ? AND device = ? AND carrier = ?"
        (kwh, *first) = db.execute(
            "SELECT kwh, bq, sq, device, carrier FROM rollup ORDER BY bq, sq, device, carrier"
        ).fetchone()
        db.execute(f"UPDATE rollup SET kwh = ? WHERE {key}", (np.nextafter(kwh, np.inf), *first))
    db.close()
    outcome = bulk.settle(
        state / HISTORY_FILE, span, bulk.Periods([], [], []), upto=0, prefix=PREFIX,
        check_rollup=True,
    )  # fmt: skip
    assert outcome is not None and outcome.differ == 1
    assert outcome.first == tuple(first)


@pytest.mark.parametrize(
    "sql",
    [
        None,
        f"DELETE FROM records WHERE kind = 'energy' AND device = 'm2' AND ts = {TS}",
        "UPDATE records SET payload = CAST(replace(payload, '0.', '1.') AS BLOB) "
        f"WHERE kind = 'intensity' AND ts = {TS}",
    ],
)
def test_verify_of_a_whole_history_in_bulk_is_the_exact_result(
    clean: Path, tmp_path: Path, sql: str | None
) -> None:
    """`energy-agent verify -c`: the whole history, no span, no rollup check."""
    from agent.cli.verify import _in_bulk
    from agent.history.reader import HistoryReader
    from agent.ledger import keys
    from agent.ledger.entry import Keyring
    from agent.ledger.verify import RecordIn, verify

    state = clean if sql is None else tampered(clean, tmp_path, sql)
    reader = HistoryReader.open(state / "history.db")
    try:
        entries = [row.entry for row in reader.entries()]
        last = reader.last_entry()
        assert last is not None
        trusted = keys.known(state)
        fast = _in_bulk(reader, entries, Keyring(trusted), PREFIX, last.upto, None)
        records = [
            RecordIn(r.topic, json.loads(r.payload), r.id > last.upto)
            for r in reader.iter_records(0, 2**62)
        ]
        exact = verify(entries, records, Keyring(trusted), prefix=PREFIX)
    finally:
        reader.close()
    assert fast is not None
    assert fast == exact
    assert fast.ok == (sql is None)


def test_the_kernels_are_warmed_through_a_reports_own_path() -> None:
    """deploy/install.sh runs this into the agent's numba cache: it must reach every
    kernel a report calls (it verifies energy and site records with a rollup check)."""
    from agent.ledger import bulk_warm

    assert bulk_warm.warm()


def test_a_record_of_many_windows_outgrows_the_line_buffers_and_is_read_again() -> None:
    windows = {f"w{k}": window_values(k + 1.5, 0.5, 0.0, 0.1) for k in range(40)}
    payload = intensity_payload(T0 + MIN, windows)
    msg = TOPICS.message(MessageKind.INTENSITY, payload)
    raw = encode(payload)
    (got,) = bulk.lines([(T0 + MIN, msg.topic, raw)], PREFIX)
    want = [line.text.encode() for line in lines_of(parse_topic(msg.topic, PREFIX), payload)]
    assert got == want and len(want) == 40
