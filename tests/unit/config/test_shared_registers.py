"""Devices with identical inline registers share one copy of them (issue 18: memory per meter).

200 meters of one type configured inline held 200 copies of 14 register models
(~13 KB a meter); the loader now keeps one, and the resolved devices one register
map, so that their readers share one plan (tests/unit/drivers/test_reader.py).
What differs in any field, even the sign of a zero, is not shared.
"""

from __future__ import annotations

from agent.config import parse_config
from agent.config.models import AgentConfig
from drivers.profile import ProfileLibrary

LIBRARY = ProfileLibrary()
REGS = "[{quantity: active_power_kw, table: input, address: 0, type: float32, offset: 0.0}]"
NEG_ZERO = "[{quantity: active_power_kw, table: input, address: 0, type: float32, offset: -0.0}]"
CONFIG = f"""
site: {{id: plant-a, timezone: UTC}}
gateway: {{id: gw-01}}
buses: [{{id: b, tcp: {{host: 127.0.0.1, port: 502}}}}]
devices:
  - {{id: m1, bus: b, unit: 1, max_power_kw: 50, registers: {REGS}}}
  - {{id: m2, bus: b, unit: 2, max_power_kw: 50, registers: {REGS}}}
  - {{id: m3, bus: b, unit: 3, max_power_kw: 50, registers: {REGS}, limits: {{max_gap: 4}}}}
  - {{id: m4, bus: b, unit: 4, max_power_kw: 50, registers: {NEG_ZERO}}}
  - {{id: m5, bus: b, unit: 5, profile: eastron-sdm630}}
  - {{id: m6, bus: b, unit: 6, profile: eastron-sdm630}}
"""


def config() -> AgentConfig:
    return parse_config(CONFIG, "t.yaml", profiles=LIBRARY)


def test_identical_inline_registers_are_one_copy() -> None:
    m1, m2, m3, m4, *_ = config().devices
    assert m1.registers is m2.registers is m3.registers
    assert m1.registers == m4.registers  # equal as values: 0.0 == -0.0 ...
    assert m1.registers is not m4.registers  # ... but not the same registers
    assert m4.registers is not None
    assert repr(m4.registers[0].offset) == "-0.0"


def test_identical_register_maps_are_one_map() -> None:
    m1, m2, m3, m4, m5, m6 = config().resolved(LIBRARY)
    assert m1.regmap is m2.regmap
    assert m3.regmap is not m1.regmap  # other limits: another plan
    assert m3.regmap.limits.max_gap == 4 and m1.regmap.limits.max_gap == 0
    assert m4.regmap is not m1.regmap
    assert m5.regmap is m6.regmap is LIBRARY.get("eastron-sdm630")
