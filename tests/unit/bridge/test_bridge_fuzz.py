"""The bridge's validator against payloads of every shape: no traceback, no hang, bounded memory.

Hypothesis draws payloads -- valid ones, valid ones with a few things changed, and
hostile JSON (wrong types, huge integers, deep nesting, NaN literals, odd unicode,
extra keys, 10,000 keys, huge strings, bytes that are not UTF-8) -- and each is sent
to every kind of topic the bridge subscribes to, and to some it does not. At least
10,000 messages a run. Every verdict must be an :class:`Accepted` whose lines parse
back into what the schema allows, or a :class:`Rejected` with a reason and a
sentence saying why. The real-bridge leg of this test (the same generators through
mosquitto and victoria-metrics) is in tests/integration/test_bridge_contract.py.
"""

from __future__ import annotations

import json
import math
import re
import time
import tracemalloc

from hypothesis import HealthCheck, example, given, settings

from agent.bridge.validate import Accepted, Reason, Rejected, Validator
from agent.contract import (
    WINDOW_RANGES,
    energy_ranges,
    measurements_payload,
)
from agent.contract.plausible import SEQ_MAX, TS_MIN_MS, VALUE_RANGES
from tests.support.payload_fuzz import (
    BAD_TOPICS,
    LIMITS,
    MAX_DETAIL,
    MAX_LINE,
    NOW,
    TOPICS,
    G,
    messages,
)

# --- what a verdict must be ------------------------------------------------------------------

_TAG = r"(?:[^,= \\\n]|\\[,= ])+"
_LINE = re.compile(rf"([a-z_]+)((?:,[a-z_]+={_TAG})+) ([^ \n]+) (\d+)")
_INT = re.compile(r"-?\d+i")
_FLOAT = re.compile(r"-?(?:\d+\.\d+(?:e[+-]\d+)?|\d+e[+-]\d+)")
_ENERGY = {"interval_s", "incomplete_children", *energy_ranges(60)}
FIELDS = {
    "measurements": {"seq", *VALUE_RANGES},
    "energy": _ENERGY,
    "intensity": {"missing_count", *WINDOW_RANGES["1m"]},
    "status": {"up"},
}
TAGS = {
    "measurements": {"site", "gateway", "device"},
    "energy": {"site", "gateway", "device", "carrier", "quality"},
    "intensity": {"site", "gateway", "window"},
    "status": {"site", "gateway", "device"},
}


def assert_line_is_writable(line: str) -> None:
    """Parsed independently of lineproto.py: the shapes a database takes whole."""
    assert len(line) <= MAX_LINE, len(line)
    m = _LINE.fullmatch(line)
    assert m, line
    measurement, tags, fields, ts = m.groups()
    tag_keys = [t.split("=", 1)[0] for t in re.split(r"(?<!\\),", tags[1:])]
    assert tag_keys == sorted(tag_keys) and set(tag_keys) <= TAGS[measurement], line
    assert TS_MIN_MS <= int(ts) <= NOW + LIMITS.max_future_s * 1000, line
    pairs = [f.split("=", 1) for f in fields.split(",")]
    assert pairs, line
    assert len({k for k, _ in pairs}) == len(pairs), line
    for key, text in pairs:
        assert key in FIELDS[measurement], line
        if _INT.fullmatch(text):
            assert abs(int(text[:-1])) <= SEQ_MAX, line
        else:
            assert _FLOAT.fullmatch(text), line
            value = float(text)
            assert math.isfinite(value) and abs(value) <= 1e22, line
            if measurement == "measurements":
                lo, hi = VALUE_RANGES[key]
                assert lo <= value <= hi, line


def assert_verdict(verdict: object) -> None:
    if isinstance(verdict, Rejected):
        assert isinstance(verdict.reason, Reason)
        assert isinstance(verdict.detail, str) and verdict.detail.strip()
        assert len(verdict.detail) <= MAX_DETAIL, verdict.detail[:200]
        return
    assert isinstance(verdict, Accepted), verdict
    assert verdict.ts_ms >= TS_MIN_MS
    for line in verdict.lines:
        assert_line_is_writable(line)


# --- the tests --------------------------------------------------------------------------------


def test_ten_thousand_messages_of_every_shape_get_a_verdict_and_nothing_else() -> None:
    validator = Validator(LIMITS)
    seen: dict[str, int] = {"messages": 0, "accepted": 0}
    slowest = [0.0]

    @settings(
        max_examples=700,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    # Explicit examples, always run: the rare shapes the assertions below count on
    # (random generation reached an over-limit body, or five implausible values, in most
    # runs, not all).
    @example(([b" " * LIMITS.max_payload_bytes + b"{}"], None))
    @example(([b'{"ts":%d,"seq":1,"values":{"active_power_kw":NaN}}' % NOW], None))
    @example(
        (
            [
                b'{"ts":%d,"seq":%d,"values":{"voltage_l1_v":1e7}}' % (NOW, seq)
                for seq in range(1, 6)
            ],
            None,
        )
    )
    @given(messages)
    def run(case: tuple[list[bytes], str | None]) -> None:
        bodies, bad_topic = case
        for payload in bodies:
            for topic in (*TOPICS, bad_topic) if bad_topic else TOPICS:
                started = time.perf_counter()
                verdict = validator.check(topic, payload, NOW)
                slowest[0] = max(slowest[0], time.perf_counter() - started)
                assert_verdict(verdict)
                seen["messages"] += 1
                if isinstance(verdict, Accepted):
                    seen["accepted"] += 1
                    assert topic not in BAD_TOPICS
                else:
                    seen[verdict.reason.value] = seen.get(verdict.reason.value, 0) + 1

    run()
    assert seen["messages"] >= 10_000, seen
    # Not vacuous: good messages pass, and every kind of refusal was exercised.
    # (Each payload goes to five topics and only one is its own: about 2 % pass.)
    assert seen["accepted"] >= 100, seen
    for reason in ("bad_topic", "not_json", "invalid", "not_finite", "implausible", "too_large"):
        assert seen.get(reason, 0) >= 5, (reason, seen)
    assert slowest[0] < 2.0, f"one message took {slowest[0]:.2f} s"


#: The most expensive payloads at the size limit: each is parsed, refused or accepted.
COSTLY = [
    b'{"ts":%d,"seq":1,"values":{' % NOW
    + b",".join(b'"q%d":1.0' % i for i in range(18_000))
    + b"}}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    json.dumps(
        {"state": "ok", "error": "\u00e9" * 120_000, "ts": NOW}, ensure_ascii=False
    ).encode(),
    b'{"ts":%d,"seq":%s,"values":{}}' % (NOW, b"9" * 200_000),
    b'{"ts":%d,"seq":1,"values":{' % NOW + b",".join([b'"active_power_kw":NaN'] * 11_000) + b"}}",
    b'{"ts":%d,"windows":{"1m":[' % NOW + b"1," * 100_000 + b"1]}}",
]


def peak_bytes(validator: Validator, topic: str, payload: bytes) -> int:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    assert_verdict(validator.check(topic, payload, NOW))
    return tracemalloc.get_traced_memory()[1] - before


def test_memory_per_message_is_bounded_and_nothing_accumulates() -> None:
    """The worst payloads at the size limit cost at most ~60 times their size while they
    are checked (pydantic keeps a copy of the input with each error), 10,000 value keys
    far less, and 5,000 more topics after the memo is full leave nothing behind: the
    memo is bounded. Over the limit a payload costs nothing: it is refused unread."""
    assert all(len(p) <= LIMITS.max_payload_bytes for p in COSTLY)
    limit = LIMITS.max_payload_bytes
    validator = Validator(LIMITS)
    tracemalloc.start()
    try:
        for payload in COSTLY:
            for topic in TOPICS:
                peak = peak_bytes(validator, topic, payload)
                assert peak < 80 * limit, (topic, payload[:40], peak)
        # One error for 18,000 unknown quantities, not 18,000 (they took 22 MB).
        assert peak_bytes(validator, TOPICS[0], COSTLY[0]) < 16 * limit
        assert peak_bytes(validator, TOPICS[0], b"[" * 50_000_000) < 1024 * 1024
    finally:
        tracemalloc.stop()
    body = json.dumps(measurements_payload(NOW, 1, {"active_power_kw": 1.0})).encode()
    for i in range(10_000):  # fills the memo of topics
        validator.check(f"{G}/m{i}/measurements", body, NOW)
    tracemalloc.start()
    try:
        settled = tracemalloc.get_traced_memory()[0]
        for i in range(10_000, 15_000):
            validator.check(f"{G}/m{i}/measurements", body, NOW)
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after another 5,000 topics"
