"""The bridge cannot wedge, and says so when it is stuck anyway.

* The lock order: a dead-letter publish racing paho's PUBACK handling (paho's
  ``_out_message_mutex`` held around ``on_publish``) finishes, with paho's real
  client and its real mutex (issue 11's deadlock).
* A dead letter's PUBACK that is handled before ``publish()`` returned still
  acknowledges the original, once; a stale answer for a reused packet id does not.
* The watchdog: fed while idle, progressing or retrying a database; starved when
  messages wait without progress or paho's thread stops answering.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.bridge.app import Bridge
from agent.bridge.consumer import PROBE_FILTER, Consumer, Inbound
from agent.bridge.deadletters import DeadLetterBook, LogThrottle, Original
from agent.bridge.liveness import MIN_STALL_S, Liveness, stall_limit
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Reason, Rejected
from agent.bridge.writer import WriteFailed, Writer
from agent.config.bridge import BridgeConfig
from agent.config.models import BridgeSettings, Mqtt
from agent.sdnotify import Notifier

OK = ReasonCode(PacketTypes.PUBACK)
NOT_AUTHORIZED = ReasonCode(PacketTypes.PUBACK, "Not authorized")
BAD = Rejected(Reason.NOT_JSON, "not JSON")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def new_consumer(progress: list[int] | None = None) -> Consumer:
    marks = progress if progress is not None else []
    return Consumer(
        Mqtt(host="127.0.0.1", port=1),
        BridgeSettings(),
        BridgeMetrics(),
        lambda i: None,
        progress=lambda: marks.append(1),
    )


# --- the lock order, with paho's own client and mutex --------------------------------------


def test_a_dead_letter_publish_racing_a_puback_on_pahos_thread_does_not_deadlock() -> None:
    c = new_consumer()
    client = c._client
    holding = threading.Event()

    def network_thread() -> None:
        # As paho handles a PUBACK: on_publish runs inside its _out_message_mutex.
        with client._out_message_mutex:
            holding.set()
            deadline = time.monotonic() + 1.0
            while not c._lock.locked() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.05)  # the writer is in publish(), waiting for the mutex
            c._on_publish(client, None, 4242, OK, None)

    def writer_thread() -> None:
        holding.wait(5)
        c.reject("energy/v1/a/b/c/measurements", b"x", 1, 1, c._generation, BAD)

    threads = [
        threading.Thread(target=network_thread, daemon=True),
        threading.Thread(target=writer_thread, daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "deadlock: publish() and on_publish wait"


# --- a dead letter's answer, before or after publish() returned ------------------------------


class AnsweringClient:
    """Stands in for paho: ``publish()`` can have its PUBACK handled on another thread
    (as paho's network thread would) before it returns the packet id."""

    def __init__(self, consumer: Consumer, *, early: bool, reason: ReasonCode = OK) -> None:
        self.consumer = consumer
        self.early = early
        self.reason = reason
        self.next_mid = 100
        self.acks: list[int] = []
        self.probes: list[str] = []
        self.blocked = False

    def subscribe(self, topics: object) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int) -> SimpleNamespace:
        self.next_mid += 1
        mid = self.next_mid
        if self.early:
            t = threading.Thread(target=self.answer, args=(mid,), daemon=True)
            t.start()
            t.join(2)
            self.blocked = t.is_alive()  # on_publish waited for a lock publish()'s caller held
        return SimpleNamespace(rc=paho.MQTT_ERR_SUCCESS, mid=mid)

    def answer(self, mid: int) -> None:
        self.consumer._on_publish(self, None, mid, self.reason, None)  # type: ignore[arg-type]

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)

    def unsubscribe(self, topic: str) -> None:
        self.probes.append(topic)

    def disconnect(self) -> None:
        pass

    def loop_stop(self) -> None:
        pass


def connected(early: bool, reason: ReasonCode = OK) -> tuple[Consumer, AnsweringClient, list[int]]:
    progress: list[int] = []
    c = new_consumer(progress)
    fake = AnsweringClient(c, early=early, reason=reason)
    c._client = fake  # type: ignore[assignment]
    c._on_connect(fake, None, None, OK, None)  # type: ignore[arg-type]
    return c, fake, progress


def test_a_puback_handled_before_publish_returned_acknowledges_the_original_once() -> None:
    c, fake, progress = connected(early=True)
    c.reject("t", b"x", 7, 1, c._generation, BAD)
    assert not fake.blocked
    assert fake.acks == [7]
    assert c.dead_letters_pending == 0
    assert progress == [1]


def test_the_original_is_acknowledged_only_after_the_dead_letter_was() -> None:
    c, fake, progress = connected(early=False)
    c.reject("t", b"x", 7, 1, c._generation, BAD)
    assert fake.acks == []
    assert c.dead_letters_pending == 1
    fake.answer(fake.next_mid)
    fake.answer(fake.next_mid)  # a second answer for the same id is not ours any more
    assert fake.acks == [7]
    assert c.dead_letters_pending == 0
    assert progress == [1]


def test_a_refused_dead_letter_still_frees_its_original() -> None:
    c, fake, _ = connected(early=False, reason=NOT_AUTHORIZED)
    c.reject("t", b"x", 7, 1, c._generation, BAD)
    fake.answer(fake.next_mid)
    assert fake.acks == [7]
    assert c.metrics.dead_letters_refused._value.get() == 1


def test_a_reconnect_before_the_answer_leaves_the_original_to_the_broker() -> None:
    c, fake, progress = connected(early=False)
    c.reject("t", b"x", 7, 1, c._generation, BAD)
    c._on_disconnect(fake, None, None, OK, None)  # type: ignore[arg-type]
    assert c.dead_letters_pending == 0
    fake.answer(fake.next_mid)  # paho resent it after the reconnect
    assert fake.acks == []  # the broker redelivers the original; it is rejected again
    assert progress == []


def test_after_a_stop_nothing_more_is_acknowledged() -> None:
    c, fake, _ = connected(early=False)
    generation = c._generation
    assert c.stop(1.0)
    assert c.ack([Inbound(1, 1, generation, 0.0, "t", b"{}")]) == 0
    assert fake.acks == []


def test_the_probe_measures_how_long_pahos_thread_leaves_it_unanswered() -> None:
    c, fake, _ = connected(early=False)
    assert c.unanswered_s(100.0) == 0.0  # sent now
    assert fake.probes == [PROBE_FILTER]
    assert c.unanswered_s(112.0) == 12.0  # still out: not sent again
    assert fake.probes == [PROBE_FILTER]
    c._on_unsubscribe(fake, None, 1, [], None)  # type: ignore[arg-type]
    assert c.unanswered_s(113.0) == 0.0  # answered; the next one goes out
    assert len(fake.probes) == 2
    c._on_disconnect(fake, None, None, OK, None)  # type: ignore[arg-type]
    assert c.unanswered_s(500.0) == 0.0  # no connection: nothing to probe
    assert len(fake.probes) == 2


def test_the_book_keeps_early_answers_only_while_a_publication_is_open() -> None:
    book: DeadLetterBook[str] = DeadLetterBook()
    assert book.answered(5, "ok") is None  # nobody publishing: not kept
    ticket = book.opening()
    assert book.answered(6, "ok") is None  # early
    assert book.filed(ticket, 6, Original(60, 1, 1), live=True) == "ok"
    assert len(book) == 0


def test_an_answer_from_before_the_publication_began_is_stale() -> None:
    book: DeadLetterBook[str] = DeadLetterBook()
    first = book.opening()
    book.answered(7, "stale")  # for an earlier holder of packet id 7
    second = book.opening()
    assert book.filed(first, 5, Original(50, 1, 1), live=True) is None
    # paho reuses id 7 for the second publication: the stale answer must not settle it.
    assert book.filed(second, 7, Original(70, 1, 1), live=True) is None
    assert len(book) == 2
    assert book.answered(7, "ok") == Original(70, 1, 1)


def test_a_publication_on_a_lost_connection_is_not_filed() -> None:
    book: DeadLetterBook[str] = DeadLetterBook()
    ticket = book.opening()
    assert book.filed(ticket, 9, Original(90, 1, 1), live=False) is None
    assert len(book) == 0
    ticket = book.opening()
    assert book.filed(ticket, None, Original(91, 1, 1), live=True) is None  # nothing queued
    assert len(book) == 0


def test_a_flood_of_rejects_logs_samples_and_counts_the_rest() -> None:
    clock = Clock()
    throttle = LogThrottle(burst=3, window_s=60.0, clock=clock)
    assert [throttle.allow("not_json") for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert throttle.allow("ts_out_of_window") == (True, 0)  # each reason has its own budget
    clock.t += 60
    assert throttle.allow("not_json") == (True, 2)  # the next window says what was left out
    assert throttle.allow("not_json") == (True, 0)


# --- the liveness evidence ---------------------------------------------------------------


def test_stall_limit_covers_a_flush_a_write_and_the_longest_backoff() -> None:
    # Defaults: 1 s flush, 10 s write limit, 30 s backoff, plus the 10 s margin.
    assert stall_limit(1.0, 10.0, 30.0) == 51.0
    assert stall_limit(0.1, 1.0, 2.0) == MIN_STALL_S


def test_verdicts() -> None:
    clock = Clock()
    live = Liveness(30.0, clock=clock)
    clock.t += 3600
    assert live.verdict(0, 0.0).why == "idle"  # idle for an hour is healthy
    clock.t += 25
    assert live.verdict(5, 0.0).healthy  # busy since the last idle look: not yet
    clock.t += 10
    stuck = live.verdict(5, 0.0)
    assert not stuck.healthy and stuck.why == "5 messages pending, no progress for 35 s"
    live.progressed()
    assert live.verdict(5, 0.0).why == "progressing"
    clock.t += 31
    live.retried()
    assert live.verdict(5, 0.0).why == "database unavailable, retrying"
    clock.t += 31
    assert not live.verdict(5, 0.0).healthy
    # Idle, but paho's thread has not answered a probe: not healthy either.
    assert not live.verdict(0, 31.0).healthy
    assert live.verdict(0, 29.0).healthy


class Marks(Liveness):
    def __init__(self) -> None:
        super().__init__(30.0)
        self.marks: list[str] = []

    def progressed(self) -> None:
        self.marks.append("progress")

    def retried(self) -> None:
        self.marks.append("retry")


def test_the_writer_marks_retries_and_progress() -> None:
    marks = Marks()
    failures = [WriteFailed("connection refused", data_rejected=False)] * 2
    written: list[bytes] = []

    def write(body: bytes) -> None:
        if failures:
            raise failures.pop()
        written.append(body)

    writer = Writer(
        BridgeSettings(retry_max_s=0.05, flush_interval_ms=10),
        BridgeMetrics(),
        write,
        lambda batch: len(batch),
        lambda item, r: None,
        liveness=marks,
    )
    writer.start()
    writer.put(Inbound(1, 1, 1, time.monotonic(), "t", b"{}", ["m f=1 1"], 1, "measurements"))
    deadline = time.monotonic() + 5
    while not written and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.stop()
    writer.join(5)
    assert marks.marks == ["retry", "retry", "progress"]
    assert writer.pending == 0


def test_progress_moves_the_gauge_to_the_wall_clock() -> None:
    metrics = BridgeMetrics()
    live = Liveness(30.0, metrics.last_progress, wall=lambda: 1_700_000_123.5)
    live.progressed()
    assert metrics.last_progress._value.get() == 1_700_000_123.5


# --- the watchdog, end to end from Bridge.watch() to a notify socket -------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield sock, path
    finally:
        sock.close()


def bridge_config() -> BridgeConfig:
    doc: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "influx": {"url": "http://127.0.0.1:9", "org": "o", "bucket": "b", "token": "t"},
        "bridge": {"metrics_listen": None},
    }
    return BridgeConfig.model_validate(doc)


def test_the_watchdog_is_fed_only_while_the_bridge_moves(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    clock = Clock()
    bridge = Bridge(bridge_config(), notifier=Notifier({"NOTIFY_SOCKET": path}))
    bridge.liveness = Liveness(30.0, clock=clock)

    def look() -> list[str]:
        bridge.watch()
        return sock.recv(4096).decode().splitlines()

    clock.t += 3600
    assert look() == ["WATCHDOG=1", "STATUS=idle; 0 pending"]
    bridge.writer.put(Inbound(1, 1, 1, clock.t, "t", b"{}"))  # the writer never takes it
    clock.t += 20
    assert "WATCHDOG=1" in look()
    clock.t += 20
    assert look() == ["STATUS=stalled: 1 messages pending, no progress for 40 s; 1 pending"]
    clock.t += 60
    assert "WATCHDOG=1" not in look()
    bridge.liveness.progressed()
    assert "WATCHDOG=1" in look()
    bridge.influx.close()
