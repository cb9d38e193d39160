"""drivers.exact: what a register holds, every digit, checked by hand arithmetic."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest

from drivers.exact import exact_values, format_exact, shortest_float32
from drivers.profile import RegisterMap
from drivers.quantities import Quantity as Q
from drivers.registers import RatioRegister, RegisterSpec


def f32(x: float) -> float:
    """``x`` rounded to float32 and widened back, as the decoder hands it on."""
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (230.60637, "230.60637"),  # float64 of it: 230.6063690185547
        (0.1, "0.1"),  # float64 of it: 0.10000000149011612
        (16777217.0, "16777216"),  # 2**24 + 1 is no float32; 2**24 is
        (1002.8598, "1002.8598"),
        (-0.946, "-0.946"),
        (3.4028234663852886e38, "3.4028235E+38"),  # float32's largest: 8 digits suffice
    ],
)
def test_float32_shortest_round_trip(value: float, shown: str) -> None:
    wide = f32(value)
    got = shortest_float32(wide)
    assert str(got) == shown
    assert f32(float(got)) == wide  # reads back as the same float32


def test_nine_digits_when_eight_do_not_round_trip() -> None:
    # 16777.217 and 16777.219 differ in the 8th digit; float32 spacing at 2**14 is
    # 2**-9 = 0.001953125, so 16777.2168 (9 digits) is needed to name one of them.
    wide = f32(16777.216796875)
    assert wide == 16777.216796875  # exactly a float32
    assert str(shortest_float32(wide)) == "16777.217"
    nxt = wide + 2**-9  # 16777.218750
    assert str(shortest_float32(nxt)) == "16777.219"


def _map(*specs: RegisterSpec, ratios: dict[str, RatioRegister] | None = None) -> RegisterMap:
    return RegisterMap(registers=specs, ratios=ratios or {})


def test_uint64_counter_near_wrap_keeps_every_digit() -> None:
    spec = RegisterSpec(
        quantity=Q.ENERGY_IMPORT_KWH, table="holding", address=100, type="uint64", scale=0.01
    )
    # 0xFFFF_FFFF_FFFF_FFFE = 2**64 - 2 = 18446744073709551614 hundredths of a kWh
    words = [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]
    got = exact_values(_map(spec), {(1, 3, 100): words}, unit=1)[Q.ENERGY_IMPORT_KWH]
    assert got == Decimal("184467440737095516.14")
    assert format_exact(got, grouped=True) == "184,467,440,737,095,516.14"
    assert format_exact(got, grouped=False) == "184467440737095516.14"
    # a float64 cannot: its nearest is 184467440737095520 (ulp 32 at 1.8e17)
    assert float(got) == 184467440737095520.0


def test_word_order_offset_ratio_and_block_slicing() -> None:
    cur = RegisterSpec(
        quantity=Q.CURRENT_L1_A,
        table="input",
        address=12,
        type="int32",
        word_order="little",
        scale=0.001,
        ratios=("ct",),
    )
    temp = RegisterSpec(
        quantity=Q.VOLTAGE_L1_V, table="input", address=16, type="uint16", offset=-0.5
    )
    ct = RatioRegister(table="holding", address=0, type="float32")
    regmap = _map(cur, temp, ratios={"ct": ct})
    # one block 10..16: registers 12,13 hold -1234 as CDAB: low word 0xFB2E, high 0xFFFF
    block = [0, 0, 0xFB2E, 0xFFFF, 0, 0, 231]
    ratio = list(struct.unpack(">2H", struct.pack(">f", 40.0)))
    got = exact_values(regmap, {(1, 4, 10): block, (1, 3, 0): ratio}, unit=1)
    # -1234 * 0.001 * 40 = -49.36 A; 231 - 0.5 = 230.5 V
    assert got[Q.CURRENT_L1_A] == Decimal("-49.360")
    assert got[Q.VOLTAGE_L1_V] == Decimal("230.5")


def test_unread_register_or_other_unit_is_none() -> None:
    spec = RegisterSpec(quantity=Q.FREQUENCY_HZ, table="input", address=70, type="float32")
    nan = list(struct.unpack(">2H", struct.pack(">f", float("nan"))))
    assert exact_values(_map(spec), {(2, 4, 70): [0x4248, 0]}, unit=1) == {Q.FREQUENCY_HZ: None}
    assert exact_values(_map(spec), {(1, 4, 70): nan}, unit=1) == {Q.FREQUENCY_HZ: None}
    # 0x4248_0000 is float32 50.0
    assert exact_values(_map(spec), {(1, 4, 70): [0x4248, 0]}, unit=1) == {
        Q.FREQUENCY_HZ: Decimal("50")
    }
