"""The config's ``report:`` section: strict, every problem with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError
from agent.config.load import parse_config

BASE = """\
site: {id: plant-a, timezone: Asia/Shanghai}
gateway: {id: gw-01}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 502}}]
devices:
  - {id: main, bus: bus-1, unit: 1,
     registers: [{quantity: energy_import_kwh, table: input, address: 0, type: float64}]}
report:
"""


def test_a_full_section_loads() -> None:
    config = parse_config(
        BASE
        + """\
  tariff: tariffs/jiangsu.yaml
  lines: [{id: l1, name: Line 1, devices: [main]}]
  baseline: {label: "2020", figures: {tce: 120.5, co2_t: 300}, value_added: 800}
  targets: {energy_pct: 13.5, co2_pct: 18}
  value_added: {"2026-11": 75.5}
""",
        "plant.yaml",
    )
    rep = config.report
    assert rep.lines[0].devices == ("main",)
    assert rep.baseline is not None and rep.baseline.figures is not None
    assert rep.baseline.figures.tce == 120.5
    assert rep.value_added == {"2026-11": 75.5}
    assert rep.tariff_path(Path("/etc/energy/plant.yaml")) == Path(
        "/etc/energy/tariffs/jiangsu.yaml"
    )


@pytest.mark.parametrize(
    ("section", "words", "line"),
    [
        ("  lines: [{id: l1, devices: [mian]}]\n", "unknown device 'mian'", 8),
        ("  lines: [{id: l1}]\n", "give `devices` (its meters) or `counters`", 8),
        ("  baseline: {period: 2025-11, figures: {tce: 1, co2_t: 1}}\n", "exactly one", 8),
        ("  baseline: {period: last-year}\n", "'last-year' is not a period", 8),
        ('  value_added: {"Nov": 3}\n', "'Nov' is not a period", 8),
        ("  targets: {energy_pct: 135}\n", "less than or equal to 100", 8),
        ("  tarif: example-cn-tou\n", "unknown key", 8),
    ],
)
def test_wrong_sections_name_line_and_fix(section: str, words: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + section, "plant.yaml")
    text = str(info.value)
    assert words in text, text
    assert f"plant.yaml:{line}:" in text, text
