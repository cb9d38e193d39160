"""A meter's register memory: what a real device would answer to a read.

Shared by the simulator (served over Modbus) and the fake transport (served
in-process to unit tests), so both answer exactly alike: unmapped registers
read as zero, registers inside a declared hole answer "illegal data address",
and reads longer than the meter's limit are refused as real meters do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from drivers.decode import Value, encode_value
from drivers.errors import ExceptionCode
from drivers.profile import Hole, RegisterMap
from drivers.quantities import Quantity
from drivers.registers import Table


class IllegalRead(Exception):
    """The image refuses the read; carries the Modbus exception code to answer with."""

    def __init__(self, code: ExceptionCode) -> None:
        self.code = code
        super().__init__(code.name)


class RegisterImage:
    def __init__(self, holes: Iterable[Hole] = (), max_registers: int = 125) -> None:
        self._tables: dict[Table, dict[int, int]] = {Table.INPUT: {}, Table.HOLDING: {}}
        self._holes = list(holes)
        self.max_registers = max_registers

    def set_words(self, table: Table, address: int, words: Sequence[int]) -> None:
        regs = self._tables[table]
        for i, w in enumerate(words):
            regs[address + i] = w & 0xFFFF

    def read(self, table: Table, address: int, count: int) -> list[int]:
        if not 1 <= count <= self.max_registers or address + count > 0x10000:
            raise IllegalRead(ExceptionCode.ILLEGAL_DATA_VALUE)
        for h in self._holes:
            if h.table is table and h.start < address + count and address < h.end:
                raise IllegalRead(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        regs = self._tables[table]
        return [regs.get(a, 0) for a in range(address, address + count)]

    @classmethod
    def of(
        cls,
        regmap: RegisterMap,
        values: Mapping[Quantity, Value],
        ratios: Mapping[str, float] | None = None,
    ) -> RegisterImage:
        image = cls(regmap.limits.unreadable, regmap.limits.max_registers)
        image.update(regmap, values, ratios)
        return image

    def update(
        self,
        regmap: RegisterMap,
        values: Mapping[Quantity, Value],
        ratios: Mapping[str, float] | None = None,
    ) -> None:
        """Write canonical values (and the ratio registers) the way the meter would hold them."""
        ratios = dict(ratios or {})
        for name, reg in regmap.ratios.items():
            self.set_words(reg.table, reg.address, encode_value(reg, ratios.get(name, 1.0)))
        for spec in regmap.registers:
            if spec.quantity in values:
                words = encode_value(
                    spec, values[spec.quantity], ratios, wrap=spec.quantity.is_counter
                )
                self.set_words(spec.table, spec.address, words)
