"""The writer thread and the consumer's acknowledgements, with a fake database and client.

What matters: nothing is acknowledged before the write succeeded; a failing
database gets retries, not acknowledgements; bad data is isolated and
dead-lettered; acknowledgements from an old connection are never sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from agent.bridge.consumer import Consumer, Inbound
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Reason, Rejected
from agent.bridge.writer import WriteFailed, Writer
from agent.config.models import BridgeSettings, Mqtt


def item(mid: int, lines: int = 1, generation: int = 1) -> Inbound:
    return Inbound(
        mid=mid,
        qos=1,
        generation=generation,
        received=time.monotonic(),
        topic="t",
        payload=b"{}",
        lines=[f"m,k=v f={mid}.{j} {mid}" for j in range(lines)],
        ts_ms=mid,
        measurement="measurements",
    )


class FakeDb:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.fail_transient = 0
        self.poison: set[str] = set()
        self.lock = threading.Lock()

    def write(self, body: bytes) -> None:
        with self.lock:
            if self.fail_transient:
                self.fail_transient -= 1
                raise WriteFailed("connection refused", data_rejected=False)
            if any(p in body.decode() for p in self.poison):
                raise WriteFailed("HTTP 400: field type conflict", data_rejected=True)
            self.bodies.append(body)


class Harness:
    def __init__(self, **settings: object) -> None:
        self.db = FakeDb()
        self.acked: list[int] = []
        self.rejected: list[tuple[int, Rejected]] = []
        self.metrics = BridgeMetrics()
        self.writer = Writer(
            BridgeSettings.model_validate({"retry_max_s": 0.05, **settings}),
            self.metrics,
            self.db.write,
            self._ack,
            lambda i, r: self.rejected.append((i.mid, r)),
        )

    def _ack(self, batch: list[Inbound]) -> int:
        # The write happened before the acknowledgement: every acked line is in the db.
        written = b"\n".join(self.db.bodies).decode()
        for i in batch:
            assert all(line in written for line in i.lines or ()), "acknowledged before written"
        self.acked.extend(i.mid for i in batch)
        return len(batch)

    def wait(self, predicate: object, limit_s: float = 5.0) -> None:
        deadline = time.monotonic() + limit_s
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(batch_size=10, flush_interval_ms=50)
    h.writer.start()
    yield h
    h.writer.stop()
    h.writer.join(5)


def test_full_batches_go_at_once_and_in_order(harness: Harness) -> None:
    for mid in range(1, 26):
        harness.writer.put(item(mid))
    harness.wait(lambda: len(harness.acked) == 25)
    assert harness.acked == list(range(1, 26))
    sizes = [len(b.splitlines()) for b in harness.db.bodies]
    assert sizes[:2] == [10, 10]
    assert sum(sizes) == 25


def test_a_partial_batch_waits_for_the_flush_interval() -> None:
    h = Harness(batch_size=1000, flush_interval_ms=300)
    h.writer.start()
    t0 = time.monotonic()
    h.writer.put(item(1))
    h.wait(lambda: h.acked == [1])
    assert 0.25 <= time.monotonic() - t0 < 2.0
    h.writer.stop()
    h.writer.join(5)


def test_batch_size_counts_points_not_messages(harness: Harness) -> None:
    harness.writer.put(item(1, lines=6))
    harness.writer.put(item(2, lines=6))
    harness.wait(lambda: len(harness.acked) == 2)
    assert len(harness.db.bodies[0].splitlines()) == 12


def test_a_failing_database_gets_retries_and_no_acknowledgement(harness: Harness) -> None:
    harness.db.fail_transient = 4
    for mid in range(1, 4):
        harness.writer.put(item(mid))
    harness.wait(lambda: harness.acked == [1, 2, 3])
    assert harness.metrics.retries._value.get() == 4
    assert len(harness.db.bodies) == 1


def test_bad_data_is_isolated_and_dead_lettered(harness: Harness) -> None:
    harness.db.poison = {"f=7.0 7"}
    for mid in range(1, 11):
        harness.writer.put(item(mid))
    harness.wait(lambda: len(harness.acked) == 9 and len(harness.rejected) == 1)
    assert sorted(harness.acked) == [m for m in range(1, 11) if m != 7]
    mid, rejected = harness.rejected[0]
    assert mid == 7
    assert rejected.reason is Reason.DB_REJECTED
    assert "field type conflict" in rejected.detail


def test_stop_writes_what_arrived() -> None:
    h = Harness(batch_size=1000, flush_interval_ms=60_000)
    h.writer.start()
    for mid in range(1, 6):
        h.writer.put(item(mid))
    h.writer.stop()
    h.writer.join(5)
    assert not h.writer.is_alive()
    assert h.acked == [1, 2, 3, 4, 5]


class FakeClient:
    def __init__(self) -> None:
        self.acks: list[int] = []
        self.subscriptions: list[object] = []

    def subscribe(self, topics: object) -> None:
        self.subscriptions.append(topics)

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)


def consumer() -> tuple[Consumer, FakeClient]:
    c = Consumer(Mqtt(host="127.0.0.1"), BridgeSettings(), BridgeMetrics(), lambda i: None)
    fake = FakeClient()
    c._client = fake  # type: ignore[assignment]
    return c, fake


def test_acknowledgements_of_an_old_connection_are_not_sent() -> None:
    c, fake = consumer()
    c._on_connect(fake, None, None, _Ok(), None)  # type: ignore[arg-type]
    gen = c._generation
    assert c.ack([item(1, generation=gen), item(2, generation=gen - 1)]) == 1
    assert fake.acks == [1]
    c._on_disconnect(None, None, None, _Ok(), None)  # type: ignore[arg-type]
    assert c.ack([item(3, generation=gen)]) == 0
    c._on_connect(fake, None, None, _Ok(), None)  # type: ignore[arg-type]
    assert c.ack([item(4, generation=gen)]) == 0
    assert fake.acks == [1]
    assert c.metrics.stale_acks._value.get() == 3
    # Every connect (re)subscribes to the contract's eight shapes in the shared group.
    topics = [t for t, _ in fake.subscriptions[0]]  # type: ignore[attr-defined]
    assert topics[0] == "$share/bridge/energy/v1/+/+/status"
    assert len(topics) == 8
    assert "$share/bridge/energy/v1/+/+/alarms" in topics
    assert "$share/bridge/energy/v1/+/+/+/events" in topics
    assert "$share/bridge/energy/v1/+/+/ledger" in topics


def test_qos0_messages_need_no_acknowledgement() -> None:
    c, fake = consumer()
    c._on_connect(fake, None, None, _Ok(), None)  # type: ignore[arg-type]
    m = item(1, generation=c._generation)
    m.qos = 0
    assert c.ack([m]) == 0
    assert fake.acks == []


class _Ok:
    is_failure = False

    def __str__(self) -> str:
        return "Success"


def test_receive_maximum_defaults_to_two_batches() -> None:
    assert BridgeSettings(batch_size=5000).receive_max == 10000
    assert BridgeSettings(batch_size=50_000).receive_max == 65535
    assert BridgeSettings(batch_size=1).receive_max == 100
    assert BridgeSettings(receive_maximum=20).receive_max == 20


def test_messages_are_validated_in_the_writer_and_rejects_dead_lettered() -> None:
    from agent.bridge.validate import Limits, Validator
    from agent.contract import encode, measurements_payload

    now = time.time_ns() // 1_000_000
    h = Harness(batch_size=3, flush_interval_ms=50)
    h.writer._validator = Validator(Limits())
    h.writer.start()
    topic = "energy/v1/s/g/d/measurements"
    for mid in range(1, 6):
        payload = encode(measurements_payload(now, mid, {"active_power_kw": float(mid)}))
        raw = Inbound(mid=mid, qos=1, generation=1, received=time.monotonic(), topic=topic,
                      payload=b"{nope" if mid == 2 else payload)  # fmt: skip
        h.writer.put(raw)
    h.wait(lambda: len(h.acked) == 4 and len(h.rejected) == 1)
    assert h.rejected[0][0] == 2
    assert h.rejected[0][1].reason is Reason.NOT_JSON
    written = b"\n".join(h.db.bodies).decode().splitlines()
    assert written[0] == f"measurements,device=d,gateway=g,site=s seq=1i,active_power_kw=1.0 {now}"
    assert len(written) == 4
    assert h.metrics.received._value.get() == 5
    h.writer.stop()
    h.writer.join(5)


def test_the_batch_histogram_matches_prometheus_own() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from agent.bridge.metrics import BatchHistogram

    # Binary fractions: the sum is exact in any order, so both sums print alike.
    values = [0.0, 0.00390625, 0.0078125, 0.0078125 + 2.0**-30, 0.25, 0.25, 2.0, 64.0, 65.5, 1024.0]
    buckets = (0.0078125, 0.125, 1, 64)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    h = Histogram("lat_seconds", "d", buckets=buckets, registry=theirs)
    for v in values:
        h.observe(v)
    b = BatchHistogram("lat_seconds", "d", buckets=buckets, registry=ours)
    b.observe_many(values[:3])
    b.observe_many(reversed(values[3:]))

    def lines(r: CollectorRegistry) -> list[str]:
        return [x for x in generate_latest(r).decode().splitlines() if "_created" not in x]

    assert lines(ours) == lines(theirs)
