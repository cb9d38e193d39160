"""The bridge's verification of ledger entries, against an in-memory database.

The verifier is driven by hand (its thread is not started): entries are
submitted as the writer hands them over, the clock is the test's, and jobs run
when due. The fake database holds exactly the points the bridge writes for
each message (agent.points), so what is read back is what a real one returns
(tests/integration/test_ledger.py does the same with VictoriaMetrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")

from agent.bridge.ledger import LedgerVerifier
from agent.bridge.metrics import BridgeMetrics
from agent.config.bridge import BridgeLedger
from agent.contract import Message, MessageKind, parse_topic
from agent.contract.points import Point
from agent.ledger import entry as le
from agent.ledger import keys
from agent.ledger.entry import Reason
from agent.ledger.points import written_points
from tests.support.ledger_gateway import LedgerGateway, energy

MIN = 60_000
T0 = 1_750_000_000_000 // (60 * MIN) * (60 * MIN)
DELAY = 10_000
AFTER = 30.0


class FakeDb:
    def __init__(self) -> None:
        self.rows: list[Point] = []
        self.reads = 0

    def add(self, topic: str, payload: dict[str, Any]) -> None:
        for p in written_points(parse_topic(topic), payload):
            same = [
                r
                for r in self.rows
                if (r.measurement, r.tags, r.ts) == (p.measurement, p.tags, p.ts)
            ]
            if same:
                same[0].fields.update(p.fields)
            else:
                self.rows.append(Point(p.measurement, dict(p.tags), dict(p.fields), p.ts))

    def drop(self, device: str, ts: int) -> None:
        self.rows = [r for r in self.rows if not (r.tags.get("device") == device and r.ts == ts)]

    def points(
        self, measurement: str, site: str, gateway: str, start: int, end: int
    ) -> list[Point]:
        self.reads += 1
        return [
            r
            for r in self.rows
            if r.measurement == measurement
            and r.tags["site"] == site
            and r.tags["gateway"] == gateway
            and start < r.ts <= end
        ]

    def close(self) -> None:
        return None


class Rig:
    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.gw = LedgerGateway(tmp / "state")
        self.db = FakeDb()
        self.now = 0.0
        self.verdicts: dict[int, dict[str, int]] = {}
        self.metrics = BridgeMetrics()
        key = keys.known(self.gw.state_dir)[0].b64
        config = BridgeLedger(
            trust={"plant-a/gw-01": key}, verify_after_s=AFTER, retries=2, **settings
        )
        self.v = LedgerVerifier(config, self.db, self.metrics, self._write, clock=lambda: self.now)
        self.entries: list[dict[str, Any]] = []

    def _write(self, body: bytes) -> None:
        _, fields, ts = body.decode().split(" ")
        values = {k: int(v.rstrip("i")) for k, v in (f.split("=") for f in fields.split(","))}
        self.verdicts[int(ts)] = values

    def seal(self, *messages: Message, end: int) -> list[dict[str, Any]]:
        """Records of a period to the gateway and the database, and its entry sealed."""
        self.gw.publish(*messages)
        for m in messages:
            self.db.add(m.topic, m.payload)
        out = [json.loads(s.payload) for s in self.gw.seal(end + DELAY)]
        self.entries += out
        return out

    def deliver(self, entry: dict[str, Any]) -> None:
        """The writer wrote the entry and hands it over."""
        self.db.add(self.gw.topics.topic(MessageKind.LEDGER), entry)
        self.v.submit(json.dumps(entry).encode())

    def run(self, seconds: float) -> None:
        """Let the clock run, processing every job that comes due."""
        end = self.now + seconds
        while self.v._jobs and self.v._jobs[0].due <= end:
            job = self.v._jobs.pop(0)
            self.now = max(self.now, job.due)
            self.v._process(job)
            self.v._jobs.sort()
        self.now = end

    def verdict(self, entry: dict[str, Any]) -> tuple[int, int, int]:
        v = self.verdicts[entry["period_end"]]
        return v["verified"], v["reason"], v["records"]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    (genesis,) = [json.loads(s.payload) for s in r.gw.start(T0 + 5_000)]
    r.entries.append(genesis)
    return r


def two_periods(rig: Rig) -> None:
    t = rig.gw.topics
    for k in (1, 2):
        end = T0 + k * MIN
        rig.seal(energy(t, "m1", end, 0.1 * k), energy(t, "m2", end, 0.2 * k), end=end)


def test_entries_are_verified_after_the_delay_with_their_records(rig: Rig) -> None:
    two_periods(rig)
    for e in rig.entries:
        rig.deliver(e)
    rig.run(AFTER - 1)
    assert rig.verdicts == {}  # not before verify_after_s
    rig.run(2)
    assert [rig.verdict(e) for e in rig.entries] == [(1, 0, 0), (1, 0, 2), (1, 0, 2)]
    m = rig.metrics
    assert m.ledger_entries.labels("verified")._value.get() == 3
    assert m.ledger_verified.labels("plant-a", "gw-01")._value.get() == 1


def test_a_changed_record_is_read_again_then_counted(rig: Rig) -> None:
    two_periods(rig)
    rig.db.add(
        rig.gw.topics.topic(MessageKind.ENERGY, "m2"),
        energy(rig.gw.topics, "m2", T0 + 2 * MIN, 0.401).payload,
    )
    for e in rig.entries:
        rig.deliver(e)
    rig.run(AFTER + 1)
    assert rig.entries[2]["period_end"] not in rig.verdicts  # read again first
    rig.run(2 * AFTER + 1)
    assert rig.verdict(rig.entries[2]) == (0, Reason.RECORD_CHANGED.code, 2)
    assert rig.verdict(rig.entries[1])[0] == 1
    assert rig.metrics.ledger_failures.labels("record_changed")._value.get() == 1


def test_a_record_another_bridge_writes_late_is_waited_for(rig: Rig) -> None:
    two_periods(rig)
    rig.db.drop("m1", T0 + MIN)
    for e in rig.entries:
        rig.deliver(e)
    rig.run(AFTER + 1)  # missing at the first look
    rig.db.add(
        rig.gw.topics.topic(MessageKind.ENERGY, "m1"),
        energy(rig.gw.topics, "m1", T0 + MIN, 0.1).payload,
    )
    rig.run(3 * AFTER)
    assert rig.verdict(rig.entries[1]) == (1, 0, 2)


def test_a_deleted_record_is_record_missing(rig: Rig) -> None:
    two_periods(rig)
    rig.db.drop("m1", T0 + MIN)
    for e in rig.entries:
        rig.deliver(e)
    rig.run(4 * AFTER)
    assert rig.verdict(rig.entries[1]) == (0, Reason.RECORD_MISSING.code, 1)


def test_a_period_a_newer_entry_covers_again_is_that_entrys_to_check(rig: Rig) -> None:
    """m2's late record for the first period makes entry 2 cover it again: entry 1,
    checked after it, sees 3 records where it counted 2, and does not fail for it."""
    t = rig.gw.topics
    rig.seal(energy(t, "m1", T0 + MIN, 0.1), end=T0 + MIN)
    rig.seal(energy(t, "m2", T0 + MIN, 0.2), energy(t, "m1", T0 + 2 * MIN, 0.3), end=T0 + 2 * MIN)
    assert [c["start"] for c in rig.entries[2]["covers"]] == [T0, T0 + MIN]
    for e in rig.entries:
        rig.deliver(e)
    rig.run(4 * AFTER)
    assert rig.verdict(rig.entries[1]) == (1, 0, 0)  # its cover was superseded
    assert rig.verdict(rig.entries[2]) == (1, 0, 3)


def test_more_records_than_covered_wait_for_a_newer_entry_before_they_count(rig: Rig) -> None:
    t = rig.gw.topics
    rig.seal(energy(t, "m1", T0 + MIN, 0.1), end=T0 + MIN)
    for e in rig.entries:
        rig.deliver(e)
    # A record appears in the database for that period that the gateway never sent.
    rig.db.add(t.topic(MessageKind.ENERGY, "m9"), energy(t, "m9", T0 + MIN, 9.0).payload)
    rig.run(10 * AFTER)
    assert rig.entries[1]["period_end"] not in rig.verdicts  # it might be a late record
    # The next entry comes and does not cover that period again: an extra record.
    (nxt,) = rig.seal(energy(t, "m1", T0 + 2 * MIN, 0.2), end=T0 + 2 * MIN)
    rig.deliver(nxt)
    # Sealed after the first check (this test's clock is 2025, the verifier's wall 2026+).
    rig.v._gateways["plant-a/gw-01"].newest_end = 2**62
    rig.run(10 * AFTER)
    assert rig.verdict(rig.entries[1]) == (0, Reason.EXTRA_RECORD.code, 2)
    assert rig.verdict(nxt) == (1, 0, 1)


def test_a_missing_entry_and_a_broken_link_are_found(rig: Rig) -> None:
    two_periods(rig)
    t = rig.gw.topics
    rig.seal(energy(t, "m1", T0 + 3 * MIN, 0.3), end=T0 + 3 * MIN)
    e = rig.entries
    rig.deliver(e[0])
    rig.deliver(e[1])
    rig.deliver(e[3])  # entry 2 never arrives
    rig.run(4 * AFTER)
    assert rig.verdict(e[3]) == (0, Reason.ENTRY_MISSING.code, 0)
    # A link checked against the database's hash48 (another bridge had the entry):
    rig.v._gateways["plant-a/gw-01"].hashes.clear()
    rig.db.add(t.topic(MessageKind.LEDGER), e[2])
    rig.verdicts.clear()
    rig.v.submit(json.dumps(e[3]).encode())
    rig.v._gateways["plant-a/gw-01"].hashes.pop(2, None)
    rig.run(2 * AFTER)
    assert rig.verdict(e[3]) == (1, 0, 1)
    # An entry whose prev is wrong, signed by the gateway's own key: chain broken.
    key = keys.load(rig.gw.state_dir / keys.KEY_FILE)
    bad = {k: v for k, v in e[3].items() if k != "sig"} | {"prev": "a" * 64}
    bad["sig"] = key.sign(le.signed_bytes(bad))
    rig.verdicts.clear()
    rig.v.submit(json.dumps(bad).encode())
    rig.run(2 * AFTER)
    assert rig.verdict(bad) == (0, Reason.CHAIN_BROKEN.code, 0)


def test_an_entry_signed_by_another_key_is_signature_wrong(rig: Rig) -> None:
    two_periods(rig)
    other = keys.SigningKey.generate()
    body = {k: v for k, v in rig.entries[1].items() if k != "sig"}
    body |= {"key": other.public.b64, "key_id": other.public.key_id}
    forged = {**body, "sig": other.sign(le.signed_bytes(body))}
    rig.deliver(rig.entries[0])
    rig.deliver(forged)
    rig.run(2 * AFTER)
    assert rig.verdict(forged) == (0, Reason.SIGNATURE_WRONG.code, 0)


def test_untrusted_gateways_and_a_full_queue_are_counted_never_blocking(tmp_path: Path) -> None:
    r = Rig(tmp_path, queue=1)
    (genesis,) = [json.loads(s.payload) for s in r.gw.start(T0 + 5_000)]
    stranger = dict(genesis, gateway="gw-99")
    r.v.submit(json.dumps(stranger).encode())
    assert r.metrics.ledger_entries.labels("untrusted")._value.get() == 1
    r.v.submit(json.dumps(genesis).encode())
    r.v.submit(json.dumps(genesis).encode())
    assert r.metrics.ledger_entries.labels("skipped")._value.get() == 1
    assert len(r.v._jobs) == 1
