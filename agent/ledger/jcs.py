"""RFC 8785 JSON Canonicalization Scheme (JCS): one byte string per JSON value.

A hash or a signature over JSON needs the same bytes from every implementation
that holds the same value. JCS fixes them: object keys sorted by their UTF-16
code units, no whitespace, strings escaped as ECMAScript's ``JSON.stringify``
does, and numbers written as ECMAScript's ``Number.prototype.toString`` writes
an IEEE 754 double. Python's ``json`` writes other numbers (``1.0`` for 1,
``1e+20`` for 100000000000000000000, ``1e-06`` for 0.000001), so the number
text is built here from the shortest round-trip digits (which Python's ``repr``
finds as ECMAScript does: the fewest digits, the closest to the double when
several qualify) and ECMAScript's placement rules for the point and the
exponent, and tested against RFC 8785's Appendix B.

Integers are numbers like any other: they must be exactly representable as a
double (at most 2^53 in magnitude), or they are refused rather than rounded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

#: Integers beyond this are not exact in a double: refused, never rounded.
MAX_EXACT = 2**53

#: A lone surrogate cannot be encoded as UTF-8: not I-JSON text (RFC 7493).
_SURROGATE = re.compile("[\ud800-\udfff]")


class CanonicalError(ValueError):
    """A value JCS cannot represent (NaN, infinity, a huge integer, a non-JSON type)."""


def number(x: float | int) -> str:
    """ECMAScript's ``Number.prototype.toString`` of the double ``x`` (ECMA-262 7.1.12.1)."""
    if isinstance(x, bool):
        raise CanonicalError("a boolean is not a number")
    if isinstance(x, int):
        if abs(x) > MAX_EXACT:
            raise CanonicalError(f"integer {x} is not exact as a double (|x| > 2^53)")
        x = float(x)
    if not math.isfinite(x):
        raise CanonicalError(f"{x!r} is not a JSON number")
    if x == 0:
        return "0"  # and -0
    r = repr(x)
    if "e" not in r and "n" not in r:
        # Fixed notation (1e-4 <= |x| < 1e16): the same shortest digits as ECMAScript's,
        # which writes them the same way, only without Python's ".0" on a whole number.
        return r[:-2] if r.endswith(".0") else r
    sign = "-" if x < 0 else ""
    # repr gives the shortest digits that round-trip, the closest to x when several
    # would: the digits ECMAScript asks for. Only the digits and exponent are used.
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    every = whole + frac
    digits = every.lstrip("0")
    # n: where the decimal point sits, counted from the first significant digit
    # (x = 0.digits x 10^n), as ECMA-262 numbers it.
    n = len(whole) - (len(every) - len(digits)) + (int(exp) if exp else 0)
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exponent = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    if k == 1:
        return sign + digits + exponent
    return sign + digits[0] + "." + digits[1:] + exponent


def string(s: str) -> str:
    """ECMAScript's ``JSON.stringify`` of a string (ECMA-262 QuoteJSONString).

    Python's own encoder (``json.encoder.encode_basestring``, in C) writes exactly
    those bytes for well-formed text: ``"`` and ``\\`` escaped, ``\\b \\t \\n \\f \\r``
    short, other controls as ``\\u00xx`` in lower case, everything else as is. It was
    a character-by-character loop here, 43 % of a report's verification time.
    """
    if not s.isascii() and _SURROGATE.search(s):
        raise CanonicalError("a lone surrogate is not valid I-JSON text")
    result: str = encode_basestring(s)
    return result


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be")


def text(value: Any) -> str:
    """The canonical JSON text of ``value`` (dict, list, str, int, float, bool, None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise CanonicalError(f"object key {k!r} is not a string")
        # UTF-16 order is code point order but for characters beyond the BMP: ASCII
        # keys (every key of the contract) sort as they are.
        keys = sorted(value) if all(k.isascii() for k in value) else sorted(value, key=_utf16_key)
        return "{" + ",".join(f"{string(k)}:{text(value[k])}" for k in keys) + "}"
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return "[" + ",".join(text(v) for v in value) + "]"
    raise CanonicalError(f"{type(value).__name__} is not a JSON value")


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``: UTF-8 of :func:`text`."""
    return text(value).encode("utf-8")
