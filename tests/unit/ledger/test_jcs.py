"""RFC 8785 (JCS): numbers as ECMAScript writes them, strings, key order, refusals."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ledger import jcs

#: RFC 8785, Appendix B: IEEE 754 bit patterns and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_appendix_b_numbers(bits: str, text: str) -> None:
    (x,) = struct.unpack(">d", bytes.fromhex(bits))
    assert jcs.number(x) == text


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (1.0, "1"),
        (60, "60"),
        (100000.0, "100000"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.1, "0.1"),
        (123.456, "123.456"),
        (-0.0, "0"),
        (2**53, "9007199254740992"),
    ],
)
def test_numbers_python_writes_otherwise(x: float, text: str) -> None:
    """Where Python's repr or json differ from ECMAScript (1.0, 1e+20, 1e-07)."""
    assert jcs.number(x) == text


def test_the_rfcs_example_of_the_whole_transformation() -> None:
    """RFC 8785 section 3.2.4."""
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    want = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert jcs.text(json.loads(source)) == want
    assert jcs.canonical(json.loads(source)) == want.encode("utf-8")


def test_keys_are_sorted_by_utf16_code_units() -> None:
    """RFC 8785 section 3.2.3: an emoji (a surrogate pair, 0xD83D...) sorts before U+FB33,
    though its code point is larger."""
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = jcs.text({k: 0 for k in keys})
    order = [json.loads(f"[{part.split(':')[0]}]")[0] for part in out[1:-1].split(",")]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 2**53 + 1, -(2**53) - 1, "\ud800", b"x", {1: 2}]
)
def test_what_jcs_cannot_write_is_refused_not_rounded(value: object) -> None:
    with pytest.raises(jcs.CanonicalError):
        jcs.text(value)


def _quote_json_string(s: str) -> str:
    """ECMA-262's QuoteJSONString, written out as the spec says it, character by character."""
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"'}
    out = ['"']
    for ch in s:
        c = ord(ch)
        if c in short:
            out.append(short[c])
        elif c == 0x5C:
            out.append("\\\\")
        elif c < 0x20:
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


@settings(max_examples=2000, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_strings_are_written_as_ecmascript_quotes_them(s: str) -> None:
    assert jcs.string(s) == _quote_json_string(s)


@given(st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), st.integers(0, 9)))
def test_keys_sort_by_utf16_whatever_their_characters(value: dict[str, int]) -> None:
    keys = list(json.loads(jcs.text(value)))
    assert keys == sorted(value, key=lambda k: k.encode("utf-16-be"))


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(jcs.CanonicalError):
        jcs.string("a\ud800b")
