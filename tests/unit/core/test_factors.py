"""Emission factors at the time of use: schedules in local time, live with a fallback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from agent.config.models import Carbon, ElectricityFactor, FactorRule, GasFactor, LiveFactor
from agent.contract import Carrier
from agent.core.calendar import SiteCalendar
from agent.core.factors import EmissionFactors

EL = Carrier.ELECTRICITY
MIN = 60_000
H = 3_600_000


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def factors(
    *rules: FactorRule,
    static: float = 0.5,
    live: LiveFactor | None = None,
    zone: str = "Asia/Shanghai",
) -> EmissionFactors:
    carbon = Carbon(
        electricity=ElectricityFactor(kg_per_kwh=static, schedule=rules, live=live),
        natural_gas=GasFactor(kg_per_m3=2.0, kwh_per_m3=10.0),
    )
    return EmissionFactors(carbon, SiteCalendar(zone))


def el_at(f: EmissionFactors, start: int, interval_ms: int = 5 * MIN) -> tuple[float, str]:
    got = f.at(EL, start, start + interval_ms)
    return got.value, got.origin


# --- schedules ---------------------------------------------------------------------------


def test_static_without_schedule() -> None:
    assert el_at(factors(), utc_ms(2024, 1, 15, 3)) == (0.5, "static")


def test_hours_match_in_local_time() -> None:
    # Peak 0.8 for local hours 8..20 (08:00-20:59), else the static 0.5.
    # Shanghai is UTC+8: local 08:00 = 00:00 UTC, local 21:00 = 13:00 UTC.
    f = factors(FactorRule(hours="8-20", kg_per_kwh=0.8))
    day = (2024, 1, 15)  # a Monday
    assert el_at(f, utc_ms(*day, 0, 0) - 5 * MIN) == (0.5, "static")  # local 07:55
    assert el_at(f, utc_ms(*day, 0, 0)) == (0.8, "schedule")  # local 08:00
    assert el_at(f, utc_ms(*day, 12, 55)) == (0.8, "schedule")  # local 20:55
    assert el_at(f, utc_ms(*day, 13, 0)) == (0.5, "static")  # local 21:00


def test_interval_resolved_by_its_local_start() -> None:
    # Kolkata is UTC+5:30, so hour-long intervals (aligned to UTC) run hh:30-hh:30 local.
    # The interval 02:00-03:00 UTC is 07:30-08:30 local: it starts at 07, off-peak,
    # although its second half lies in the peak hours.
    f = factors(FactorRule(hours="8-20", kg_per_kwh=0.8), zone="Asia/Kolkata")
    assert el_at(f, utc_ms(2024, 1, 15, 2), H) == (0.5, "static")
    assert el_at(f, utc_ms(2024, 1, 15, 3), H) == (0.8, "schedule")  # 08:30 local


def test_weekdays_match_the_local_day() -> None:
    # Sunday 2024-01-14 16:30 UTC is already Monday 00:30 in Shanghai.
    f = factors(
        FactorRule(weekdays="sat,sun", kg_per_kwh=0.3),
        FactorRule(weekdays="mon-fri", kg_per_kwh=0.7),
    )
    assert el_at(f, utc_ms(2024, 1, 14, 15, 55)) == (0.3, "schedule")  # Sun 23:55 local
    assert el_at(f, utc_ms(2024, 1, 14, 16, 30)) == (0.7, "schedule")  # Mon 00:30 local
    assert el_at(f, utc_ms(2024, 1, 19, 15, 55)) == (0.7, "schedule")  # Fri 23:55 local
    assert el_at(f, utc_ms(2024, 1, 19, 16, 0)) == (0.3, "schedule")  # Sat 00:00 local


def test_months_match_the_local_month() -> None:
    # Summer tariff June-September; 2024-05-31 16:00 UTC is June 1 00:00 in Shanghai.
    f = factors(FactorRule(months="6-9", kg_per_kwh=0.9))
    assert el_at(f, utc_ms(2024, 5, 31, 15, 55)) == (0.5, "static")
    assert el_at(f, utc_ms(2024, 5, 31, 16, 0)) == (0.9, "schedule")
    assert el_at(f, utc_ms(2024, 9, 30, 15, 55)) == (0.9, "schedule")
    assert el_at(f, utc_ms(2024, 9, 30, 16, 0)) == (0.5, "static")  # Oct 1 local


def test_first_matching_rule_wins() -> None:
    rules = (
        FactorRule(hours="10-11", weekdays="mon-fri", kg_per_kwh=0.9),  # weekday peak
        FactorRule(hours="8-20", kg_per_kwh=0.6),  # day
        FactorRule(kg_per_kwh=0.4),  # everything else
    )
    f = factors(*rules)
    mon = (2024, 1, 15)
    sat = (2024, 1, 20)
    assert el_at(f, utc_ms(*mon, 2, 30))[0] == 0.9  # Mon 10:30: rules 1, 2, 3 match
    assert el_at(f, utc_ms(*sat, 2, 30))[0] == 0.6  # Sat 10:30: rules 2, 3 match
    assert el_at(f, utc_ms(*mon, 1, 0))[0] == 0.6  # Mon 09:00: rules 2, 3 match
    assert el_at(f, utc_ms(*mon, 14, 0))[0] == 0.4  # Mon 22:00: rule 3 only
    # The same rules in another order give other answers: order is meaning.
    g = factors(*reversed(rules))
    assert el_at(g, utc_ms(*mon, 2, 30))[0] == 0.4


def test_schedule_follows_dst() -> None:
    # Berlin: 08:00 local is 07:00 UTC in winter (+1) and 06:00 UTC in summer (+2).
    f = factors(FactorRule(hours="8-20", kg_per_kwh=0.8), zone="Europe/Berlin")
    assert el_at(f, utc_ms(2024, 3, 30, 7))[0] == 0.8  # Sat 08:00 CET
    assert el_at(f, utc_ms(2024, 3, 30, 6, 55))[0] == 0.5  # 07:55 CET
    assert el_at(f, utc_ms(2024, 3, 31, 6))[0] == 0.8  # Sun 08:00 CEST
    assert el_at(f, utc_ms(2024, 3, 31, 5, 55))[0] == 0.5  # 07:55 CEST


@pytest.mark.parametrize(
    ("field", "text"),
    [("hours", "8-24"), ("hours", "20-8"), ("weekdays", "mon-xyz"), ("months", "0-3")],
)
def test_bad_rules_are_config_errors(field: str, text: str) -> None:
    with pytest.raises(ValidationError):
        FactorRule.model_validate({"kg_per_kwh": 0.5, field: text})


# --- other carriers ----------------------------------------------------------------------


def test_gas_is_static_per_m3_and_production_has_none() -> None:
    f = factors(FactorRule(hours="0-23", kg_per_kwh=0.9))
    t = utc_ms(2024, 1, 15, 3)
    assert f.at(Carrier.NATURAL_GAS, t, t + 5 * MIN).value == 2.0
    assert f.at(Carrier.PRODUCTION, t, t + 5 * MIN).value == 0.0


# --- live factors ------------------------------------------------------------------------


LIVE = LiveFactor(topic="grid/factor", max_age_s=900)


def test_live_factor_used_while_fresh() -> None:
    f = factors(live=LIVE)
    t = utc_ms(2024, 1, 15, 3)
    f.update_live(EL, 0.62, t)
    # interval [t, t+5min): the value arrived at its start, 5 min old at its end
    assert el_at(f, t) == (0.62, "live")
    # interval ending t + 15 min: exactly max_age_s old at the end, still fresh
    assert el_at(f, t + 10 * MIN) == (0.62, "live")
    # ending t + 20 min: 1200 s > 900 s, stale -> the static fallback
    assert el_at(f, t + 15 * MIN) == (0.5, "static")


def test_stale_live_falls_back_to_the_schedule() -> None:
    f = factors(FactorRule(hours="8-20", kg_per_kwh=0.8), live=LIVE)
    t = utc_ms(2024, 1, 15, 3)  # 11:00 local, peak
    f.update_live(EL, 0.62, t - H)
    assert el_at(f, t) == (0.8, "schedule")


def test_newest_value_no_later_than_the_interval_end() -> None:
    f = factors(live=LIVE)
    t = utc_ms(2024, 1, 15, 3)
    f.update_live(EL, 0.61, t - 2 * MIN)
    f.update_live(EL, 0.63, t + 7 * MIN)  # after the end of [t, t+5min)
    assert el_at(f, t) == (0.61, "live")
    assert el_at(f, t + 5 * MIN) == (0.63, "live")  # [t+5, t+10) ends after 0.63 arrived


def test_live_value_arriving_late_replaces_a_resolved_fallback() -> None:
    # A factor resolved (static) for an interval is revised when a live value for that
    # interval arrives afterwards (values may reach the gateway out of order).
    f = factors(live=LIVE)
    t = utc_ms(2024, 1, 15, 3)
    assert el_at(f, t) == (0.5, "static")
    f.update_live(EL, 0.64, t + MIN)
    assert el_at(f, t) == (0.64, "live")
    # an older value arriving later does not replace the newer one
    f.update_live(EL, 0.60, t)
    assert el_at(f, t) == (0.64, "live")


def test_live_ignored_when_not_configured() -> None:
    f = factors()
    t = utc_ms(2024, 1, 15, 3)
    f.update_live(EL, 0.9, t)
    assert el_at(f, t) == (0.5, "static")
