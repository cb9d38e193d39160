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
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.bridge.validate import Accepted, Limits, Reason, Rejected, Validator
from agent.contract import (
    WINDOW_RANGES,
    WINDOWS,
    Carrier,
    device_status_payload,
    energy_payload,
    energy_ranges,
    gateway_status_payload,
    intensity_payload,
    measurements_payload,
    window_values,
)
from agent.contract.plausible import SEQ_MAX, TS_MIN_MS, VALUE_RANGES

NOW = 1_750_000_000_000
LIMITS = Limits(max_payload_bytes=256 * 1024, max_past_s=31 * 86400, max_future_s=300)
G = "energy/v1/plant-a/gw-01"
#: Every topic kind the bridge subscribes to, then topics it must refuse.
TOPICS = (
    f"{G}/press-1/measurements",
    f"{G}/press-1/energy",
    f"{G}/intensity",
    f"{G}/status",
    f"{G}/press-1/status",
)
BAD_TOPICS = (
    f"{G}/press-1\n/energy",
    "energy/v1/plant,x=1/gw-01/intensity",
    f"{G}/Press/measurements",
    "energy/v2/plant-a/gw-01/d/energy",
    f"{G}/d/x/energy",
)
#: The longest line the bridge can build stays far below VictoriaMetrics' 256 KiB
#: (-influx.maxLineSize), which would drop a longer one.
MAX_LINE = 4096
#: A rejection's detail travels in every dead letter: bounded, whatever the payload.
MAX_DETAIL = 2000

# --- payload shapes ------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
timestamps = st.integers(min_value=NOW - 31 * 86_400_000, max_value=NOW + 300_000)


@st.composite
def valid_payload(draw: st.DrawFn) -> dict[str, Any]:
    """What a gateway publishes, with any plausible numbers: mostly Accepted."""
    ts = draw(timestamps)
    kind = draw(st.sampled_from(["measurements", "energy", "intensity", "status", "device"]))
    if kind == "measurements":
        keys = draw(st.lists(st.sampled_from(sorted(VALUE_RANGES)), max_size=24, unique=True))
        values = {k: draw(st.floats(*VALUE_RANGES[k]) | st.none()) for k in keys}
        return measurements_payload(ts, draw(st.integers(0, SEQ_MAX)), values)
    if kind == "energy":
        interval = draw(st.sampled_from([60, 300, 900, 1800, 3600]))
        ceiling = energy_ranges(interval)["energy_kwh"][1]
        kwh = draw(st.floats(0, ceiling))
        ef = draw(st.floats(0, 10) | st.none())
        carrier = draw(st.sampled_from(list(Carrier)))
        quality = draw(st.sampled_from(["measured", "gap", "reset", "partial"]))
        # The optional numbers of a gas meter, a production counter, a meter with children.
        volume, units = draw(st.floats(0, 1e6)), draw(st.floats(0, 1e6))
        unmetered, parent = draw(st.floats(-kwh, kwh)), draw(st.booleans())
        return energy_payload(
            ts=ts,
            interval_s=interval,
            carrier=carrier,
            energy_kwh=kwh,
            co2_kg=kwh * (ef or 0.0),
            ef_kg_per_kwh=ef,
            quality=quality,
            **({"volume_m3": volume} if carrier is Carrier.NATURAL_GAS else {}),
            **({"units": units} if carrier is Carrier.PRODUCTION else {}),
            **({"unmetered_kwh": unmetered} if parent else {}),
        )
    if kind == "intensity":
        names = draw(st.lists(st.sampled_from(WINDOWS), unique=True))
        amounts = st.floats(0, 1e6)
        windows = {
            w: window_values(draw(amounts), draw(amounts), draw(amounts), draw(amounts))
            for w in names
        }
        return intensity_payload(ts, windows)
    if kind == "status":
        return gateway_status_payload(draw(st.sampled_from(["online", "offline"])), ts, "1.0")
    return device_status_payload("error", draw(st.text(max_size=40)), ts)


#: Values a field may be changed to: wrong types, the contract's edges, absurd numbers.
hostile_value = st.one_of(
    st.none(),
    st.booleans(),
    finite,
    st.sampled_from([-1e6, 1e300, -0.0, 5e-324, 1.7976931348623157e308, 2.5e9]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**14 + 1, 0, TS_MIN_MS - 1]),
    st.text(max_size=20),
    st.sampled_from(["1.5", "NaN", "measured", "electricity", "\u0000", "\ud800", "中文"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
#: Literals json.dumps never writes, spliced into the text.
LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 5000, b"0.5e-400"]


@st.composite
def near_valid_payload(draw: st.DrawFn) -> bytes:
    """A valid payload with a few keys (or value keys) changed, removed or added."""
    doc = draw(valid_payload())
    for _ in range(draw(st.integers(1, 3))):
        target = doc
        values, windows = doc.get("values"), doc.get("windows")
        if isinstance(values, dict) and draw(st.booleans()):
            target = values
        elif isinstance(windows, dict) and windows and draw(st.booleans()):
            window = windows[draw(st.sampled_from(sorted(windows)))]
            target = window if isinstance(window, dict) else target
        key = draw(st.sampled_from([*target, "extra", "implausible", "seq", "a\n", "Ts"]))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(hostile_value)
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )
    if draw(st.integers(0, 5)) == 0:  # a literal no JSON encoder writes, in place of a number
        text = re.sub(rb"-?\d+\.\d+(e[+-]?\d+)?", draw(st.sampled_from(LITERALS)), text, count=1)
    return text


def _deep(depth: int, opening: bytes) -> bytes:
    closing = b"]" if opening == b"[" else b"}"
    if opening == b"[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + closing * depth


@st.composite
def hostile_payload(draw: st.DrawFn) -> bytes:
    """Not a payload at all, or one built to cost: size, depth, keys, digits."""
    ts = draw(timestamps)
    choice = draw(st.integers(0, 11))
    if choice == 0:
        return draw(st.binary(max_size=64))
    if choice == 1:
        return _deep(
            draw(st.sampled_from([10, 200, 1000, 100_000])), draw(st.sampled_from([b"[", b"{"]))
        )
    if choice == 2:  # 10,000 value keys: a series each, were they accepted
        n = draw(st.sampled_from([25, 1000, 10_000]))
        values = {f"q{i}": 1.0 for i in range(n)}
        return json.dumps({"ts": ts, "seq": 1, "values": values}).encode()
    if choice == 3:  # a string as large as the limit, or over it
        size = draw(
            st.sampled_from([1000, LIMITS.max_payload_bytes - 40, LIMITS.max_payload_bytes + 1])
        )
        return json.dumps({"state": "ok", "error": "x" * size, "ts": ts}).encode()
    if choice == 4:  # an integer of thousands of digits
        digits = draw(st.sampled_from([20, 400, 4400, 100_000]))
        return b'{"ts":%d,"seq":%s,"values":{}}' % (ts, b"9" * digits)
    if choice == 5:  # the same key many times
        return (
            b'{"ts":%d,"seq":1,"values":{' % ts
            + b",".join([b'"active_power_kw":1.0'] * 5000)
            + b"}}"
        )
    if choice == 6:
        return b"\xef\xbb\xbf" + json.dumps({"ts": ts}).encode()
    if choice == 7:
        return json.dumps(draw(valid_payload())).encode("utf-16")
    if choice == 8:
        return b" " * draw(st.sampled_from([0, 100, LIMITS.max_payload_bytes])) + b"{}"
    if choice == 9:
        return json.dumps([draw(valid_payload())]).encode()
    if choice == 10:
        return b'{"ts":%d,"seq":1,"values":{"active_power_kw":1.0},"ts":"x"}' % ts
    return json.dumps(
        draw(
            st.recursive(
                st.none() | finite | st.text(),
                lambda k: st.lists(k) | st.dictionaries(st.text(), k),
            )
        )
    ).encode()


valid_bytes = valid_payload().map(lambda d: json.dumps(d).encode())
payloads = st.one_of(
    valid_bytes, valid_bytes, near_valid_payload(), near_valid_payload(), hostile_payload()
)


@st.composite
def variants(draw: st.DrawFn) -> list[bytes]:
    """A drawn payload, cut short at a drawn byte, and with a drawn byte changed."""
    payload = draw(payloads)
    cut = draw(st.integers(0, max(0, len(payload) - 1)))
    byte = draw(st.integers(0, 255))
    changed = payload[:cut] + bytes([byte]) + payload[cut + 1 :]
    return [payload, payload[:cut], changed]


#: Each drawn payload goes to every contract topic; now and then to a refused one.
messages = st.tuples(variants(), st.sampled_from(BAD_TOPICS) | st.none())


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
    # (random generation reached an over-limit body in most runs, not all).
    @example(([b" " * LIMITS.max_payload_bytes + b"{}"], None))
    @example(([b'{"ts":%d,"seq":1,"values":{"active_power_kw":NaN}}' % NOW], None))
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
