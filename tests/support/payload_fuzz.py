"""Hypothesis strategies for what gateways (and attackers) publish: valid payloads,
valid ones with a few things changed, and hostile JSON.

Shared by the validator's fuzz test (tests/unit/bridge/test_bridge_fuzz.py) and its
real-bridge leg (tests/integration/test_bridge_contract.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

from agent.bridge.validate import Limits
from agent.contract import (
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
