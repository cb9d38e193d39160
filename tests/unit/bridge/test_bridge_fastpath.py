"""The bridge's fast validation path gives the strict (pydantic) path's verdict, always.

:func:`check_strict` is the definition; :class:`Validator` only adds a hand-written
shortcut for well-formed ``measurements`` and ``energy`` messages. Generated
payloads -- near-valid ones with one thing wrong, and wild ones -- must get the
same verdict from both: same reason and detail when rejected, same lines when
accepted.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.bridge.validate import Accepted, Limits, Validator, check_strict
from agent.contract import Carrier, encode, energy_payload, energy_ranges, measurements_payload
from agent.contract.models import EnergyModel, MeasurementsModel
from agent.contract.plausible import SEQ_MAX, TS_MIN_MS, VALUE_RANGES

NOW = 1_750_000_000_000
LIMITS = Limits(max_payload_bytes=4096, max_past_s=86400, max_future_s=300)
#: A window reaching back before 2000, so the contract's own floor on ts is what decides.
WIDE = Limits(max_payload_bytes=4096, max_past_s=60 * 365 * 86400, max_future_s=300)
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


def edges(bounds: tuple[float, float]) -> list[float]:
    """Each bound, and the nearest floats on either side of it."""
    out = []
    for b in bounds:
        out += [b, math.nextafter(b, math.inf), math.nextafter(b, -math.inf)]
    return out


#: Every plausible-range edge of the contract: values, and energy fields at each interval.
RANGE_EDGES = sorted(
    {e for r in VALUE_RANGES.values() for e in edges(r)}
    | {e for i in (60, 300, 3600, 86400) for r in energy_ranges(i).values() for e in edges(r)}
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -0.0, 2**53, 2**53 + 1, -(2**53) - 1, 1e308, 5e-324, True, False]),
    st.sampled_from(RANGE_EDGES),
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
VALID_KEYS = ["active_power_kw", "voltage_l1_v", "power_factor", "energy_import_kwh"]
value_keys = st.one_of(
    st.sampled_from(sorted(VALUE_RANGES)),
    st.sampled_from(["seq", "ts", "1abc", "A", "a b", "a=1", "a\n", "", "x" * 65, "_x", "a"]),
    st.sampled_from(["voltage_l1_v\n", "Voltage_l1_v", "implausible"]),
    st.text(max_size=6),
)
#: What a field is changed to: mostly plausible JSON types, near the bounds.
mutations = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=3),
    st.booleans(),
    numbers,
    st.sampled_from([2**63 - 1, 2**63, 2**64, SEQ_MAX, SEQ_MAX + 1, 86400, 86401]),
    json_any,
)
timestamps = st.one_of(
    st.integers(min_value=NOW - 86_400_000 - 2, max_value=NOW + 300_001),
    st.sampled_from([0, -1, 1, 10**14, 10**14 + 1, NOW, NOW + 0.5, True, str(NOW)]),
    st.sampled_from([TS_MIN_MS - 1, TS_MIN_MS, TS_MIN_MS + 1]),
)
#: What ``implausible`` is set to: names, wrong names, repeats, wrong types.
named = st.one_of(
    st.none(),
    st.lists(st.sampled_from(VALID_KEYS), max_size=3),
    st.lists(value_keys, max_size=2),
    json_any,
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
        root="false",
        parent="main",
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
            valid = st.dictionaries(st.sampled_from(VALID_KEYS), numbers | st.none())
            doc["values"] = {
                **draw(valid),
                **draw(st.dictionaries(value_keys, mutations, max_size=2)),
            }
        elif key == "implausible":
            doc[key] = draw(named)
        else:
            doc[key] = draw(timestamps if key == "ts" else mutations)
    topic = draw(st.just(f"{T}/press-1/{kind}") | st.sampled_from(TOPICS))
    text = json.dumps(doc, allow_nan=True, separators=draw(st.sampled_from([None, (",", ":")])))
    return topic, text.encode()


def verdicts(topic: str, payload: bytes, limits: Limits = LIMITS) -> tuple[object, object]:
    return Validator(limits).check(topic, payload, NOW), check_strict(topic, payload, limits, NOW)


def energy_with(**changes: object) -> bytes:
    return json.dumps({**good_energy(NOW), **changes}).encode()


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
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":%d,"values":{}}' % (NOW, 2**64)))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"voltage_l1_v":-1.0}}' % NOW))
@example((f"{T}/d/measurements", b'{"ts":%d,"seq":1,"values":{"a":1.0}}' % NOW))
@example((f"{T}/d/energy", energy_with(energy_kwh=-1e6)))
@example((f"{T}/d/energy", energy_with(energy_kwh=1e300)))
@example((f"{T}/d/measurements", b'{"ts":0,"seq":1,"values":{}}'))
def test_the_fast_path_agrees_with_the_models(case: tuple[str, bytes]) -> None:
    fast, strict = verdicts(*case)
    assert fast == strict
    fast, strict = verdicts(*case, limits=WIDE)
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
    2**64,
    10**14,
    10**14 + 1,
    -1e6,
    1e300,
    1e8,
    1.7e6,
    float("nan"),
    float("inf"),
    "1.5",
    "measured",
    "electricity",
    "true",
    "false",
    "main",
    "Main",
    "a,b=c",
    "x" * 65,
    [],
    {},
]


def test_every_key_at_every_edge() -> None:
    """Each field of each kind set to each edge value, or removed: the same verdict."""
    for topic, doc in (
        (f"{T}/press-1/measurements", good_measurements(NOW)),
        (f"{T}/press-1/energy", good_energy(NOW)),
    ):
        keys = [*doc, "volume_m3", "units", "unmetered_kwh", "implausible", "extra"]
        for key in keys:
            changed = [{**doc, key: edge} for edge in [*EDGES, *RANGE_EDGES]]
            changed.append({k: v for k, v in doc.items() if k != key})
            for d in changed:
                payload = json.dumps(d, allow_nan=True).encode()
                fast, strict = verdicts(topic, payload)
                assert fast == strict, (key, d)


def test_every_quantity_at_its_range_edges() -> None:
    """Accepted exactly inside the range, bounds included, by both paths, as floats and
    as whole numbers; one float past either bound is refused."""
    topic = f"{T}/press-1/measurements"
    for key, (lo, hi) in VALUE_RANGES.items():
        for value in edges((lo, hi)):
            for v in {value, int(value)} if value.is_integer() else {value}:
                payload = encode(measurements_payload(NOW, 1, {}) | {"values": {key: v}})
                fast, strict = verdicts(topic, payload)
                assert fast == strict, (key, v)
                assert isinstance(fast, Accepted) == (lo <= v <= hi), (key, v, fast)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(TOPICS),
    st.binary(max_size=64) | json_any.map(lambda v: json.dumps(v).encode()),
)
def test_any_bytes_get_the_same_verdict(topic: str, payload: bytes) -> None:
    fast, strict = verdicts(topic, payload)
    assert fast == strict


@st.composite
def plausible_values(draw: st.DrawFn) -> dict[str, float | None]:
    """Any canonical quantities, each with a value inside its range or null."""
    keys = draw(st.lists(st.sampled_from(sorted(VALUE_RANGES)), max_size=8, unique=True))
    out: dict[str, float | None] = {}
    for k in keys:
        lo, hi = VALUE_RANGES[k]
        out[k] = draw(st.floats(min_value=lo, max_value=hi) | st.sampled_from([lo, hi, None]))
    return out


@given(
    plausible_values(),
    st.integers(min_value=0, max_value=SEQ_MAX),
    st.lists(st.sampled_from(sorted(VALUE_RANGES)), max_size=3, unique=True),
)
def test_well_formed_measurements_take_the_fast_path(
    values: dict[str, Any], seq: int, implausible: list[str]
) -> None:
    """Not vacuous: what the agent publishes is accepted without asking pydantic."""
    values = {**values, **dict.fromkeys(implausible)}
    payload = encode(measurements_payload(NOW, seq, values, implausible))
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


def test_the_tree_tags_take_the_fast_path_and_a_root_has_no_parent_tag() -> None:
    """A child: ``parent=main,root=false``; a root: ``root=true`` and no parent; an older
    gateway's record: neither. Tags in sorted order, as the strict path writes them."""
    v = Validator(LIMITS)
    root = {k: x for k, x in good_energy(NOW).items() if k != "parent"} | {"root": "true"}
    old = {k: x for k, x in good_energy(NOW).items() if k not in ("parent", "root")}
    heads = {
        "child": (good_energy(NOW), ",gateway=gw-01,parent=main,quality=measured,root=false,site="),
        "root": (root, ",gateway=gw-01,quality=measured,root=true,site="),
        "old": (old, ",gateway=gw-01,quality=measured,site="),
    }
    for doc, tags in heads.values():
        payload = encode(doc)
        fast = v._fast(f"{T}/press-1/energy", payload, NOW)
        assert fast == check_strict(f"{T}/press-1/energy", payload, LIMITS, NOW)
        assert isinstance(fast, Accepted)
        assert tags in fast.lines[0], fast.lines[0]
