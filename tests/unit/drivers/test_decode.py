"""Decoding registers to canonical numbers, and the inverse the simulator uses."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.decode import (
    BlockDecoder,
    DecodeError,
    EncodeError,
    decode_value,
    encode_value,
    resolution,
)
from drivers.quantities import Quantity as Q
from drivers.registers import DataType, Missing, RatioRegister, RegisterSpec, Table, WordOrder

BIG, LITTLE = WordOrder.BIG, WordOrder.LITTLE

# Written out here, not taken from DataType, so a wrong table in the code shows up.
STRUCT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
BITS = {
    DataType.INT16: 16,
    DataType.UINT16: 16,
    DataType.INT32: 32,
    DataType.UINT32: 32,
    DataType.INT64: 64,
    DataType.UINT64: 64,
    DataType.FLOAT32: 32,
    DataType.FLOAT64: 64,
}
INTS = [t for t in DataType if t not in (DataType.FLOAT32, DataType.FLOAT64)]
UNSIGNED = [DataType.UINT16, DataType.UINT32, DataType.UINT64]
SIGNED = [DataType.INT16, DataType.INT32, DataType.INT64]


def mk(
    type_: DataType,
    order: WordOrder = BIG,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    ratios: tuple[str, ...] = (),
    missing: Missing = Missing.STANDARD,
    address: int = 0,
    quantity: Q = Q.ACTIVE_POWER_KW,
) -> RegisterSpec:
    return RegisterSpec(
        quantity=quantity,
        table=Table.INPUT,
        address=address,
        type=type_,
        word_order=order,
        scale=scale,
        offset=offset,
        ratios=ratios,
        missing=missing,
    )


def words_of(fmt: str, value: float, order: WordOrder = BIG) -> list[int]:
    """Registers by hand: pack big-endian, split into 16-bit words, reverse for CDAB."""
    data = struct.pack(">" + fmt, value)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if order is LITTLE else words


def int_range(t: DataType) -> tuple[int, int]:
    bits = BITS[t]
    if t in SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def representable(t: DataType, missing: Missing) -> st.SearchStrategy[float]:
    """Canonical values (floats) a register of this type holds exactly, sentinels excluded."""
    if t is DataType.FLOAT32:
        return st.floats(width=32, allow_nan=False, allow_infinity=False)
    if t is DataType.FLOAT64:
        return st.floats(allow_nan=False, allow_infinity=False)
    lo, hi = int_range(t)
    if missing is Missing.STANDARD:
        # "not available": all ones (unsigned), the largest and the smallest value (signed)
        hi -= 1
        if t in SIGNED:
            lo += 1
    if BITS[t] == 64:
        # canonical values are float64: integers beyond 2**53 do not survive float()
        lo, hi = max(lo, -(2**53)), min(hi, 2**53)
    boundaries = st.sampled_from(sorted({lo, hi, 0, 1, -1 if lo < 0 else 0}))
    return st.one_of(boundaries, st.integers(lo, hi)).map(float)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("missing", list(Missing))
@pytest.mark.parametrize("order", [BIG, LITTLE])
@pytest.mark.parametrize("type_", list(DataType))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip(
    type_: DataType, order: WordOrder, missing: Missing, data: st.DataObject
) -> None:
    value = data.draw(representable(type_, missing))
    spec = mk(type_, order, missing=missing)
    words = encode_value(spec, value)
    assert len(words) == BITS[type_] // 16
    assert all(0 <= w <= 0xFFFF for w in words)
    assert words == words_of(STRUCT[type_], value if type_.is_float else int(value), order)
    assert decode_value(spec, words) == value


@pytest.mark.parametrize("type_", [t for t in DataType if BITS[t] > 16])
def test_little_word_order_reverses_the_words(type_: DataType) -> None:
    value = 12345.0 if type_.is_float else 0x1234_5678
    big = encode_value(mk(type_, BIG), value)
    assert encode_value(mk(type_, LITTLE), value) == big[::-1]
    assert decode_value(mk(type_, LITTLE), big[::-1]) == value


# --- known patterns, by hand ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "order", "words", "expected"),
    [
        (DataType.FLOAT32, BIG, [0x4366, 0x8000], 230.5),
        (DataType.FLOAT32, LITTLE, [0x8000, 0x4366], 230.5),
        (DataType.FLOAT32, BIG, [0x4248, 0x0000], 50.0),
        (DataType.FLOAT32, BIG, [0xC2C8, 0x0000], -100.0),
        (DataType.INT16, BIG, [0xFFFE], -2.0),
        (DataType.INT16, BIG, [0x8001], -32767.0),
        (DataType.UINT16, BIG, [0x8000], 32768.0),
        (DataType.INT32, BIG, [0xFFFF, 0xFFFE], -2.0),
        (DataType.INT32, LITTLE, [0xFFFE, 0xFFFF], -2.0),
        (DataType.INT32, LITTLE, [0x5678, 0x1234], float(0x1234_5678)),
        (DataType.UINT32, BIG, [0x0001, 0x0000], 65536.0),
        (DataType.UINT32, LITTLE, [0x0000, 0x0001], 65536.0),
        (DataType.UINT64, BIG, [0, 0, 1, 0], 65536.0),
        (DataType.UINT64, LITTLE, [0, 1, 0, 0], 65536.0),
        (DataType.INT64, BIG, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1.0),
        (DataType.FLOAT64, BIG, [0x3FF0, 0, 0, 0], 1.0),
        (DataType.FLOAT64, LITTLE, [0, 0, 0, 0x3FF0], 1.0),
    ],
)
def test_known_patterns(
    type_: DataType, order: WordOrder, words: list[int], expected: float
) -> None:
    assert decode_value(mk(type_, order), words) == expected
    assert encode_value(mk(type_, order), expected) == words


def test_float32_pattern_matches_struct() -> None:
    assert words_of("f", 230.5) == [0x4366, 0x8000]
    assert words_of("f", 230.5, LITTLE) == [0x8000, 0x4366]


# --- scale, offset, ratios -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    raw=st.integers(-(2**31) + 1, 2**31 - 2),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, -1.0, 0.5]),
    offset=st.sampled_from([0.0, -5.0, 273.15, 1e3]),
    ct=st.sampled_from([1.0, 5.0, 40.0, 1000.0]),
    pt=st.sampled_from([1.0, 10.0, 100.0]),
)
def test_scale_offset_ratios(raw: int, scale: float, offset: float, ct: float, pt: float) -> None:
    spec = mk(DataType.INT32, scale=scale, offset=offset, ratios=("ct", "pt"))
    got = decode_value(spec, words_of("i", raw), {"ct": ct, "pt": pt})
    expected = (raw * scale + offset) * ct * pt
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_scale_offset_ratios_example() -> None:
    # 1234 * 0.1 = 123.4; -5 -> 118.4; x CT 40 x PT 10 = 47360
    spec = mk(DataType.INT16, scale=0.1, offset=-5.0, ratios=("ct", "pt"))
    assert decode_value(spec, [1234], {"ct": 40, "pt": 10}) == pytest.approx(47360.0)


def test_missing_ratio_gives_none_not_a_wrong_number() -> None:
    spec = mk(DataType.INT16, ratios=("ct",))
    assert decode_value(spec, [100]) is None
    assert decode_value(spec, [100], {"pt": 10}) is None


def test_ratio_register_ignores_offsets_and_ratios() -> None:
    reg = RatioRegister(table=Table.HOLDING, address=0, type=DataType.UINT16, scale=0.1)
    assert decode_value(reg, [400]) == pytest.approx(40.0)
    assert encode_value(reg, 40.0) == [400]


@pytest.mark.parametrize(
    ("scale", "offset", "ratios", "value"),
    [(0.1, 0.0, {}, 230.1), (0.01, -40.0, {}, 21.37), (0.001, 0.0, {"ct": 40.0}, 123.4)],
)
def test_encode_inverts_scale_offset_ratios(
    scale: float, offset: float, ratios: dict[str, float], value: float
) -> None:
    spec = mk(DataType.INT32, scale=scale, offset=offset, ratios=tuple(ratios))
    words = encode_value(spec, value, ratios)
    raw = struct.unpack(">i", struct.pack(">2H", *words))[0]
    assert raw == round((value / math.prod(ratios.values()) - offset) / scale)
    assert decode_value(spec, words, ratios) == pytest.approx(value, abs=scale)


# --- not available -------------------------------------------------------------------------


@pytest.mark.parametrize("order", [BIG, LITTLE])
@pytest.mark.parametrize("type_", [DataType.FLOAT32, DataType.FLOAT64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_none(type_: DataType, order: WordOrder, bad: float) -> None:
    words = words_of(STRUCT[type_], bad, order)
    assert decode_value(mk(type_, order), words) is None
    # also under Missing.NAN: a non-finite float is never a number
    assert decode_value(mk(type_, order, missing=Missing.NAN), words) is None


@pytest.mark.parametrize("type_", UNSIGNED)
def test_unsigned_all_ones_is_none(type_: DataType) -> None:
    words = [0xFFFF] * (BITS[type_] // 16)
    assert decode_value(mk(type_), words) is None
    assert decode_value(mk(type_, missing=Missing.NAN), words) == float(int_range(type_)[1])


@pytest.mark.parametrize("order", [BIG, LITTLE])
@pytest.mark.parametrize("end", ["max", "min"])
@pytest.mark.parametrize("type_", SIGNED)
def test_signed_extremes_are_none_only_under_standard(
    type_: DataType, end: str, order: WordOrder
) -> None:
    # ABB says "not available" with 0x7FFF.., Schneider with 0x8000..
    lo, hi = int_range(type_)
    extreme = hi if end == "max" else lo
    words = words_of(STRUCT[type_], extreme, order)
    assert words[0 if order is BIG else -1] == (0x7FFF if end == "max" else 0x8000)
    assert decode_value(mk(type_, order), words) is None
    assert decode_value(mk(type_, order, missing=Missing.NAN), words) == float(extreme)
    # one step inside is a number either way
    inside = extreme - 1 if end == "max" else extreme + 1
    inside_words = words_of(STRUCT[type_], inside, order)
    assert decode_value(mk(type_, order), inside_words) == float(inside)


@pytest.mark.parametrize("type_", list(DataType))
def test_none_encodes_to_not_available(type_: DataType) -> None:
    spec = mk(type_)
    assert decode_value(spec, encode_value(spec, None)) is None


def test_value_overflowing_after_ratios_is_none() -> None:
    spec = mk(DataType.FLOAT64, ratios=("ct",))
    assert decode_value(spec, words_of("d", 1e308), {"ct": 1e10}) is None


# --- BlockDecoder --------------------------------------------------------------------------

_QUANTITIES = list(Q)


_FIELD = st.tuples(
    st.sampled_from(list(DataType)),
    st.sampled_from([BIG, LITTLE]),
    st.sampled_from([1.0, 0.1, 0.001, 100.0]),  # scale
    st.sampled_from([0.0, -3.5]),  # offset
    st.sampled_from(list(Missing)),
    st.integers(0, 5),  # gap after the value
)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[int, int, list[RegisterSpec], list[int]]:
    start = draw(st.integers(0, 1000))
    pos = start + draw(st.integers(0, 3))
    specs = []
    fields = draw(st.lists(_FIELD, min_size=1, max_size=12))
    for q, (type_, order, scale, offset, missing, gap) in zip(_QUANTITIES, fields, strict=False):
        specs.append(
            mk(type_, order, scale=scale, offset=offset, missing=missing, address=pos, quantity=q)
        )
        pos += BITS[type_] // 16 + gap
    count = pos - start
    registers = draw(
        st.lists(
            st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0xFFFF, 0x7FFF, 0x8000, 0x7F80])),
            min_size=count,
            max_size=count,
        )
    )
    order = draw(st.permutations(specs))
    return start, count, list(order), registers


@settings(max_examples=150, deadline=None)
@given(block=blocks())
def test_block_decoder_equals_per_value_decode(
    block: tuple[int, int, list[RegisterSpec], list[int]],
) -> None:
    start, count, specs, registers = block
    got = BlockDecoder(start, count, specs).decode(registers)
    expected = [decode_value(s, registers[s.address - start : s.end - start]) for s in specs]
    assert got == expected


def test_block_decoder_known_block_with_gap() -> None:
    volts = mk(DataType.FLOAT32, address=100, quantity=Q.VOLTAGE_L1_V)
    amps = mk(DataType.INT32, LITTLE, scale=0.001, address=105, quantity=Q.CURRENT_L1_A)
    registers = [0x4366, 0x8000, 0xDEAD, 0xBEEF, 0x1234, 0x3039, 0x0000, 0xFFFF]
    # spec order is kept even when it is not address order
    assert BlockDecoder(100, 8, [amps, volts]).decode(registers) == [pytest.approx(12.345), 230.5]


@pytest.mark.parametrize("length", [0, 3, 5, 100])
def test_wrong_block_length_raises(length: int) -> None:
    dec = BlockDecoder(0, 4, [mk(DataType.FLOAT32, address=1)])
    with pytest.raises(DecodeError, match=f"expected 4 registers, got {length}"):
        dec.decode([0] * length)


@pytest.mark.parametrize("bad", [0x10000, -1])
def test_register_value_out_of_range_raises(bad: int) -> None:
    with pytest.raises(DecodeError):
        BlockDecoder(0, 2, [mk(DataType.UINT32)]).decode([0, bad])


def test_spec_outside_block_or_overlapping_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        BlockDecoder(0, 2, [mk(DataType.FLOAT32, address=1)])
    with pytest.raises(ValueError, match="does not fit"):
        BlockDecoder(5, 4, [mk(DataType.FLOAT32, address=4)])
    with pytest.raises(ValueError, match="does not fit"):
        BlockDecoder(
            0,
            4,
            [
                mk(DataType.FLOAT32, address=0),
                mk(DataType.UINT16, address=1, quantity=Q.FREQUENCY_HZ),
            ],
        )


# --- counters that wrap, values that do not fit --------------------------------------------


@pytest.mark.parametrize("type_", [DataType.UINT16, DataType.UINT32])
@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 3 * 2**32))
def test_wrap_rolls_unsigned_counters_over(type_: DataType, n: int) -> None:
    spec = mk(type_, missing=Missing.NAN, quantity=Q.ENERGY_IMPORT_KWH)
    assert decode_value(spec, encode_value(spec, n, wrap=True)) == n % 2 ** BITS[type_]


def test_wrap_with_scale() -> None:
    # 0.01 kWh steps: the register holds 65536 steps, so 655.37 kWh reads 0.01 kWh
    spec = mk(DataType.UINT16, scale=0.01, quantity=Q.ENERGY_IMPORT_KWH)
    assert encode_value(spec, 655.37, wrap=True) == [1]
    assert decode_value(spec, encode_value(spec, 655.37, wrap=True)) == pytest.approx(0.01)
    with pytest.raises(EncodeError):
        encode_value(spec, 655.37)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (DataType.INT16, 32768),
        (DataType.INT16, -32769),
        (DataType.UINT16, 65536),
        (DataType.UINT16, -1),
        (DataType.INT32, 2**31),
        (DataType.INT32, -(2**31) - 1),
        (DataType.UINT32, 2**32),
        (DataType.UINT32, -1),
        (DataType.INT64, 2**64),
        (DataType.UINT64, 2**65),
    ],
)
def test_encode_out_of_range_int_raises(type_: DataType, value: int) -> None:
    with pytest.raises(EncodeError, match=f"does not fit {type_.value}"):
        encode_value(mk(type_), value)


@pytest.mark.parametrize("type_", SIGNED)
def test_wrap_does_not_apply_to_signed(type_: DataType) -> None:
    with pytest.raises(EncodeError):
        encode_value(mk(type_), int_range(type_)[1] + 1, wrap=True)


def test_encode_scale_shrinks_the_range() -> None:
    # uint16 with scale 0.1 holds at most 6553.5
    spec = mk(DataType.UINT16, scale=0.1)
    assert encode_value(spec, 6553.4) == [65534]
    with pytest.raises(EncodeError):
        encode_value(spec, 6553.6)


@pytest.mark.parametrize("value", [1e39, -1e39])
def test_encode_float32_out_of_range_raises(value: float) -> None:
    with pytest.raises(EncodeError):
        encode_value(mk(DataType.FLOAT32), value)


def test_encode_needs_its_ratios() -> None:
    with pytest.raises(EncodeError, match="ratio 'ct'"):
        encode_value(mk(DataType.INT16, ratios=("ct",)), 10.0)
    with pytest.raises(EncodeError, match="ratio 'ct'"):
        encode_value(mk(DataType.INT16, ratios=("ct",)), 10.0, {"ct": 0.0})


# --- resolution ----------------------------------------------------------------------------


def test_resolution_of_scaled_integers() -> None:
    assert resolution(mk(DataType.INT16, scale=0.1), 230.0) == pytest.approx(0.1)
    spec = mk(DataType.INT32, scale=0.001, ratios=("ct", "pt"))
    assert resolution(spec, 5.0, {"ct": 40.0, "pt": 10.0}) == pytest.approx(0.4)


def test_resolution_of_float32_grows_with_the_value() -> None:
    spec = mk(DataType.FLOAT32)
    # 2**19 <= 1e6 < 2**20: float32 has 23 fraction bits, so steps of 2**(19-23)
    assert resolution(spec, 1e6) == 2.0**-4
    assert resolution(spec, 1.0) == 2.0**-23
    # W register read as kW: 20 kW = 20000 W, 2**14 <= 20000 < 2**15
    assert resolution(mk(DataType.FLOAT32, scale=0.001), 20.0) == pytest.approx(2.0**-9 * 0.001)
