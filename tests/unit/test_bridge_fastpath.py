"""The bridge's fast validation path gives the strict (pydantic) path's verdict, always.

:func:`check_strict` is the definition; :class:`Validator` only adds a hand-written
shortcut for well-formed ``measurements`` and ``energy`` messages. Generated
payloads -- near-valid ones with one thing wrong, and wild ones -- must get the
same verdict from both: same reason and detail when rejected, same lines when
accepted.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.bridge.validate import Accepted, Limits, Validator, check_strict
from agent.payloads import (
    Carrier,
    EnergyModel,
    MeasurementsModel,
    encode,
    energy_payload,
    measurements_payload,
)

NOW = 1_750_000_000_000
LIMITS = Limits(max_payload_bytes=4096, max_past_s=86400, max_future_s=300)
T = "energy/v1/plant-a/gw-01"

TOPICS = [
    f"{T}/press-1/measurements",
    f"{T}/press-1/energy",
    f"{T}/status",
    f"{T}/press-1/status",
    f"{T}/intensity",
    f"{T}/Press/measurements",
    f"{T}/press-1\n/energy",
    "energy/v2/plant-a/gw-01/d/measurements",
]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -0.0, 2**53, 2**53 + 1, -(2**53) - 1, 1e308, 5e-324, True, False]),
)
json_leaf = st.one_of(
    st.none(),
    numbers,
    st.text(max_size=8),
    st.sampled_from(["electricity", "natural_gas", "coal", "measured", "gap", "partial", ""]),
)
json_any = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=6,
)
VALID_KEYS = ["active_power_kw", "a", "_x", "x" * 64]
value_keys = st.one_of(
    st.sampled_from(VALID_KEYS),
    st.sampled_from(["seq", "ts", "1abc", "A", "a b", "a=1", "a\n", "", "x" * 65]),
    st.text(max_size=6),
)
#: What a field is changed to: mostly plausible JSON types, near the bounds.
mutations = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=3),
    st.booleans(),
    numbers,
    st.sampled_from([2**63 - 1, 2**63, 86400, 86401]),
    json_any,
)
timestamps = st.one_of(
    st.integers(min_value=NOW - 86_400_000 - 2, max_value=NOW + 300_001),
    st.sampled_from([0, -1, 10**14, 10**14 + 1, NOW, NOW + 0.5, True, str(NOW)]),
)

#: The keys each model knows (the spec), not the fast path's own lists.
MEAS_KEYS = tuple(MeasurementsModel.model_fields)
ENERGY_KEYS = tuple(EnergyModel.model_fields)


def good_measurements(ts: int) -> dict[str, Any]:
    return measurements_payload(ts, 7, {"active_power_kw": 12.5, "voltage_l1_v": 230.1})


def good_energy(ts: int) -> dict[str, Any]:
    return energy_payload(
        ts=ts,
        interval_s=60,
        carrier=Carrier.NATURAL_GAS,
        energy_kwh=1.25,
        co2_kg=0.25,
        ef_kg_per_kwh=0.2,
        quality="measured",
        volume_m3=0.125,
    )


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid payload with a few keys changed, removed or added."""
    kind = draw(st.sampled_from(["measurements", "energy"]))
    ts = draw(st.integers(min_value=NOW - 86_400_000, max_value=NOW + 300_000))
    doc = good_measurements(ts) if kind == "measurements" else good_energy(ts)
    keys = MEAS_KEYS if kind == "measurements" else ENERGY_KEYS
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        key = draw(st.sampled_from([*keys, "extra"]))
        action = draw(st.sampled_from(["set", "drop", "values"]))
        if action == "drop":
            doc.pop(key, None)
        elif action == "values" and kind == "measurements":
            valid = st.dictionaries(st.sampled_from(VALID_KEYS), st.floats() | st.none())
            doc["values"] = {
                **draw(valid),
                **draw(st.dictionaries(value_keys, mutations, max_size=2)),
            }
        else:
            doc[key] = draw(timestamps if key == "ts" else mutations)
    topic = draw(st.just(f"{T}/press-1/{kind}") | st.sampled_from(TOPICS))
    text = json.dumps(doc, allow_nan=True, separators=draw(st.sampled_from([None, (",", ":")])))
    return topic, text.encode()


def verdicts(topic: str, payload: bytes) -> tuple[object, object]:
    return Validator(LIMITS).check(topic, payload, NOW), check_strict(topic, payload, LIMITS, NOW)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid())
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"a":1.0,"a":null}}' % NOW))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"ts":2,"values":{}}' % NOW))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"seq":2.0}}' % NOW))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"1a":2.0}}' % NOW))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"a":1E400}}' % NOW))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"a":-0.0}}' % NOW))
@example((f"{T}/d/measurements", encode(good_measurements(NOW)).decode().encode("utf-16")))
@example((f"{T}/d/measurements", b"\xef\xbb\xbf" + encode(good_measurements(NOW))))
@example((f"{T}/d/measurements", b"[" * 3000 + b"]" * 3000))
def test_the_fast_path_agrees_with_the_models(case: tuple[str, bytes]) -> None:
    fast, strict = verdicts(*case)
    assert fast == strict


EDGES: list[object] = [
    None,
    True,
    0,
    -1,
    1,
    0.5,
    86400,
    86401,
    2**53 + 1,
    2**63,
    10**14,
    10**14 + 1,
    float("nan"),
    float("inf"),
    "1.5",
    "measured",
    "electricity",
    [],
    {},
]


def test_every_key_at_every_edge() -> None:
    """Each field of each kind set to each edge value, or removed: the same verdict."""
    for topic, doc in (
        (f"{T}/press-1/measurements", good_measurements(NOW)),
        (f"{T}/press-1/energy", good_energy(NOW)),
    ):
        keys = [*doc, "volume_m3", "units", "unmetered_kwh", "extra"]
        for key in keys:
            changed = [{**doc, key: edge} for edge in EDGES]
            changed.append({k: v for k, v in doc.items() if k != key})
            for d in changed:
                payload = json.dumps(d, allow_nan=True).encode()
                fast, strict = verdicts(topic, payload)
                assert fast == strict, (key, d)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(TOPICS),
    st.binary(max_size=64) | json_any.map(lambda v: json.dumps(v).encode()),
)
def test_any_bytes_get_the_same_verdict(topic: str, payload: bytes) -> None:
    fast, strict = verdicts(topic, payload)
    assert fast == strict


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True).filter(lambda k: k != "seq"),
        st.floats(allow_nan=False, allow_infinity=False) | st.none(),
        max_size=8,
    ),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_well_formed_measurements_take_the_fast_path(values: dict[str, Any], seq: int) -> None:
    """Not vacuous: what the agent publishes is accepted without asking pydantic."""
    payload = encode(measurements_payload(NOW, seq, values))
    topic = f"{T}/press-1/measurements"
    v = Validator(LIMITS)
    fast = v._fast(topic, payload, NOW)  # raises if it steps aside
    assert fast == check_strict(topic, payload, LIMITS, NOW)
    assert isinstance(fast, Accepted)
    assert fast.lines[0].count(",") == 3 + len([x for x in values.values() if x is not None])


def test_well_formed_energy_takes_the_fast_path() -> None:
    v = Validator(LIMITS)
    for carrier in Carrier:
        doc = {**good_energy(NOW), "carrier": carrier.value}
        payload = encode(doc)
        fast = v._fast(f"{T}/press-1/energy", payload, NOW)
        assert fast == check_strict(f"{T}/press-1/energy", payload, LIMITS, NOW)
        assert isinstance(fast, Accepted)
        assert f"carrier={carrier.value}," in fast.lines[0]
