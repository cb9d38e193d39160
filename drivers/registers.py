"""What one value on the wire is: table, address, type, word order, scaling.

Profiles and a config's inline ``registers:`` use exactly these models, so a
meter without a built-in profile is described the same way as one with.
"""

from __future__ import annotations

import math
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.quantities import Quantity


class Table(StrEnum):
    """Modbus register tables the agent reads. Only read access exists here."""

    INPUT = "input"
    HOLDING = "holding"


class FunctionCode(IntEnum):
    """The only function codes the agent ever sends outside `simulate`: reads (1-4)."""

    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4


READ_CODE = {
    Table.HOLDING: FunctionCode.READ_HOLDING_REGISTERS,
    Table.INPUT: FunctionCode.READ_INPUT_REGISTERS,
}


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def words(self) -> int:
        return _WORDS[self]

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)

    @property
    def is_signed(self) -> bool:
        return self in (DataType.INT16, DataType.INT32, DataType.INT64)

    @property
    def struct_code(self) -> str:
        return _STRUCT[self]

    @property
    def bits(self) -> int:
        return self.words * 16


_WORDS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}
_STRUCT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}


class WordOrder(StrEnum):
    """Order of the 16-bit words of a multi-register value. Bytes in a word are big-endian.

    ``big`` = ABCD, most significant word first (Eastron, CHINT, Janitza, Schneider, ABB);
    ``little`` = CDAB, least significant word first (Carlo Gavazzi INT32).
    """

    BIG = "big"
    LITTLE = "little"


class Missing(StrEnum):
    """Which raw patterns mean "not available" rather than a number.

    ``standard``: all ones for unsigned integers, the largest and the smallest
    value for signed integers (ABB's 0x7FFF.., Schneider's 0x8000..), NaN and
    infinities for floats.
    ``nan``: only NaN and infinities (for counters whose all-ones value is real).
    """

    STANDARD = "standard"
    NAN = "nan"


Address = Annotated[int, Field(ge=0, le=0xFFFF)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class RegisterSpec(_Strict):
    """One quantity: where it lives and how raw becomes canonical.

    canonical = (raw * scale + offset) * product of the named ratios.
    """

    quantity: Quantity
    table: Table
    address: Address
    type: DataType
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    offset: float = 0.0
    ratios: tuple[str, ...] = ()
    missing: Missing = Missing.STANDARD
    note: str | None = None

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0 or not math.isfinite(v):
            raise ValueError("scale must be a finite, non-zero number")
        return v

    @property
    def words(self) -> int:
        return self.type.words

    @property
    def end(self) -> int:
        """First address after this value."""
        return self.address + self.type.words


class RatioRegister(_Strict):
    """A register holding a transformer ratio that scales other values (PT/CT)."""

    table: Table
    address: Address
    type: DataType
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    note: str | None = None

    @property
    def end(self) -> int:
        return self.address + self.type.words
