"""What a register holds, to the last digit: for `read`, where an engineer compares digits.

The polling path (:mod:`drivers.decode`) turns every value into a float64: right
for arithmetic, wrong for a commissioning engineer who compares the number with
the meter's display. A uint64 counter in 0.01 kWh near its wrap holds twenty
digits, more than a float64 keeps (17); a float32 voltage of 230.60637 becomes
230.6063690185547 as a float64, digits the meter never had. Here a value is a
:class:`~decimal.Decimal` built from the raw register: integers exactly, a float32
as the shortest decimal that reads back as the same float32 (what the meter's
firmware would print), scale, offset and transformer ratios applied in decimal.

The registers come from the same requests the reader sends: :class:`RecordingTransport`
keeps each answer, so `read` makes one poll and shows both the reader's verdict
(missing, implausible) and the exact numbers behind it.
"""

from __future__ import annotations

import struct
from decimal import Decimal

from drivers.decode import BlockDecoder
from drivers.endpoint import Transport
from drivers.profile import RegisterMap
from drivers.quantities import Quantity
from drivers.registers import READ_CODE, DataType, FunctionCode, RatioRegister, RegisterSpec

#: One answer: (unit, function code, first address) -> the registers.
Blocks = dict[tuple[int, int, int], list[int]]

_F32 = struct.Struct(">f")


def shortest_float32(x: float) -> Decimal:
    """The shortest decimal that reads back as the float32 ``x`` (at most 9 digits do).

    ``230.6063690185547`` (a float32 widened to float64) -> ``230.60637``.
    """
    target = _F32.pack(x)
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        try:
            if _F32.pack(float(text)) == target:
                return Decimal(text)
        except OverflowError:  # rounded up past float32's largest: more digits needed
            continue
    return Decimal(repr(x))  # unreachable for a float32: 9 significant digits always do


def _decimal(x: float) -> Decimal:
    """A scale, offset or ratio as written in the profile (``0.01``, not its binary value)."""
    return Decimal(repr(x)).normalize()


def exact_raw(dtype: DataType, raw: int | float) -> Decimal | None:
    """A raw register value as a decimal; None for NaN and infinities."""
    if isinstance(raw, int):
        return Decimal(raw)
    if raw - raw != 0:
        return None
    return shortest_float32(raw) if dtype is DataType.FLOAT32 else Decimal(repr(raw))


def _raw_of(spec: RegisterSpec | RatioRegister, blocks: Blocks, unit: int) -> int | float | None:
    """The raw value of ``spec`` out of the recorded answer that covers it."""
    code = int(READ_CODE[spec.table])
    for (u, fc, start), words in blocks.items():
        if u == unit and fc == code and start <= spec.address and spec.end <= start + len(words):
            lo = spec.address - start
            decoder = BlockDecoder(spec.address, spec.type.words, [spec])
            return decoder.raw(words[lo : lo + spec.type.words])[0]
    return None


def exact_values(regmap: RegisterMap, blocks: Blocks, unit: int) -> dict[Quantity, Decimal | None]:
    """Every quantity of ``regmap`` exactly, canonical = (raw * scale + offset) * ratios.

    None where the register was not read or holds NaN/infinity. "Not available"
    patterns (all ones) are not recognised here: the caller takes that verdict
    from the reader and uses these numbers only for values the reader kept or
    found implausible.
    """
    ratios: dict[str, Decimal | None] = {}
    for name, ratio in regmap.ratios.items():
        raw = _raw_of(ratio, blocks, unit)
        value = None if raw is None else exact_raw(ratio.type, raw)
        ratios[name] = None if value is None else value * _decimal(ratio.scale)
    out: dict[Quantity, Decimal | None] = {}
    for spec in regmap.registers:
        raw = _raw_of(spec, blocks, unit)
        value = None if raw is None else exact_raw(spec.type, raw)
        if value is not None:
            value = value * _decimal(spec.scale)
            if spec.offset:
                value += _decimal(spec.offset)
            for name in spec.ratios:
                factor = ratios.get(name)
                value = None if factor is None or value is None else value * factor
        out[spec.quantity] = value
    return out


class RecordingTransport:
    """A transport that keeps every answer it passes on, for :func:`exact_values`."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.blocks: Blocks = {}

    async def read(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        words = await self.inner.read(unit, fc, address, count)
        self.blocks[(unit, int(fc), address)] = list(words)
        return words

    async def close(self) -> None:
        await self.inner.close()


def format_exact(value: Decimal, *, grouped: bool) -> str:
    """Positional notation, every digit, never an exponent; ``1,234.5`` when ``grouped``."""
    return format(value, ",f" if grouped else "f")
