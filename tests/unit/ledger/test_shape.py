"""The energy record's compiled canonical line is the general path's, byte for byte.

The ledger's hash of a period is over these lines: a compiled line one byte off
would make every entry fail against the bridge's and any third party's
recomputation, and a compiled line that accepted what the general path refuses
would let a changed record through. So over arbitrary payloads (well-formed,
odd numbers, wrong types, missing and extra keys) both give the same line or
both refuse the record.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.contract import MessageKind, TopicRef
from agent.contract.points import PointError
from agent.contract.schema import Store
from agent.ledger.canonical import Line, lines_of, lines_of_general
from agent.ledger.jcs import CanonicalError
from agent.ledger.shape import SHAPES, float_text, int_text

REFUSED = (PointError, CanonicalError)
FIELDS = [f for f in MessageKind.ENERGY.spec.record.fields if f.store is not Store.NOT_STORED]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, -0.0, 0.0, 1e-7, 1e21, 1e16, 2**53, 2**53 + 1, 10**400, 5e-324]),
)
odd = st.one_of(st.none(), st.booleans(), st.text(max_size=6), st.lists(st.integers(), max_size=2))
texts = st.text(max_size=8)  # any code point, lone surrogates included


def value_for(f: Any) -> st.SearchStrategy[Any]:
    if f.store is Store.TAG:
        return st.one_of(texts, numbers, odd)
    return st.one_of(numbers, numbers, odd)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for f in FIELDS:
        if draw(st.integers(0, 3)) == 0:
            continue  # left out
        obj[f.name] = draw(value_for(f)) if f.name != "ts" else draw(st.one_of(numbers, odd))
    if draw(st.booleans()):
        obj[draw(st.sampled_from(["site", "kind", "device", "rev", "extra"]))] = draw(texts)
    return obj


def outcome(fn: Any, ref: TopicRef, obj: dict[str, Any]) -> list[Line] | str:
    try:
        result: list[Line] = fn(ref, obj)
    except REFUSED:
        return "refused"
    return result


refs = st.builds(
    TopicRef,
    st.just(MessageKind.ENERGY),
    st.text(min_size=1, max_size=6),
    st.text(min_size=1, max_size=6),
    st.one_of(st.none(), st.text(min_size=1, max_size=6)),
)


def test_the_energy_record_is_compiled() -> None:
    assert MessageKind.ENERGY in SHAPES


@settings(max_examples=1500, deadline=None)
@given(ref=refs, obj=payloads())
def test_compiled_line_equals_the_general_path_or_both_refuse(
    ref: TopicRef, obj: dict[str, Any]
) -> None:
    assert outcome(lines_of, ref, obj) == outcome(lines_of_general, ref, obj)


@settings(max_examples=500, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_is_ecmascripts(x: float) -> None:
    from agent.ledger.jcs import number

    assert float_text(x) == number(x)


@given(i=st.integers(min_value=-(2**53), max_value=2**53))
def test_int_text_is_ecmascripts(i: int) -> None:
    from agent.ledger.jcs import number

    assert int_text(i) == number(i)


def test_a_typical_record_and_its_refusals() -> None:
    ref = TopicRef(MessageKind.ENERGY, "plant-a", "gw-01", "m001")
    good = {"ts": 60000, "interval_s": 60, "carrier": "electricity", "energy_kwh": 0.51,
            "co2_kg": 0.290853, "avg_power_kw": 30.6, "ef_kg_per_kwh": 0.5703,
            "quality": "measured", "unmetered_kwh": None, "extra": 1}  # fmt: skip
    assert lines_of(ref, good)[0].text == (
        '{"avg_power_kw":30.6,"carrier":"electricity","co2_kg":0.290853,"device":"m001",'
        '"ef_kg_per_kwh":0.5703,"energy_kwh":0.51,"gateway":"gw-01","interval_s":60,'
        '"kind":"energy","quality":"measured","site":"plant-a","ts":60000}'
    )
    for bad in ({"energy_kwh": math.inf}, {"energy_kwh": "0.5"}, {"interval_s": 10**400},
                {"interval_s": math.inf}, {"energy_kwh": True}, {"ts": None}):  # fmt: skip
        assert outcome(lines_of, ref, {**good, **bad}) == "refused", bad
