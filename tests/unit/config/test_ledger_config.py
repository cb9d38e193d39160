"""The ledger's and the history's settings: defaults, and mistakes named with their line."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse_config

BASE = """\
site: {id: plant-a}
gateway: {id: gw-01}
buses: [{id: b, tcp: {host: 127.0.0.1}}]
devices: [{id: m1, bus: b, unit: 1, profile: eastron-sdm630}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "gw.yaml")
    return [str(p) for p in e.value.problems]


def test_defaults_an_hour_and_the_site_hold_plus_thirty_seconds() -> None:
    config = parse_config(BASE, "gw.yaml")
    assert config.ledger.period_s == 3600
    assert config.seal_delay_s == 120 + 30
    assert (config.history.retention_months, config.history.max_mb) == (25, 2048)
    custom = parse_config(BASE + "core: {site_hold_s: 5}\nledger: {period_s: 60}\n", "gw.yaml")
    assert (custom.ledger.period_s, custom.seal_delay_s) == (60, 35)


@pytest.mark.parametrize("period", [59, 7, 700, 100_000])
def test_a_period_that_does_not_divide_a_day_or_is_too_short_is_refused(period: int) -> None:
    (problem,) = problems(BASE + f"ledger: {{period_s: {period}}}\n")
    assert problem.startswith("gw.yaml:5: ledger.period_s: "), problem


def test_a_seal_delay_shorter_than_the_site_hold_is_refused_with_its_line() -> None:
    text = BASE + "core: {site_hold_s: 60}\nledger:\n  period_s: 60\n  seal_delay_s: 30\n"
    (problem,) = problems(text)
    assert problem.startswith("gw.yaml:8: ledger.seal_delay_s: 30 s is too soon"), problem
    assert "give at least 65" in problem
    parse_config(text.replace("seal_delay_s: 30", "seal_delay_s: 65"), "gw.yaml")
