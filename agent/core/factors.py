"""Emission factors at the time of use: static, a schedule, or live with a fallback.

A factor is resolved once per interval and carrier, from the interval's start
in the site's local time (schedules) or the newest live value received no later
than the interval's end and not older than ``max_age_s`` (live). The factor used
is written into every record, so a report can always be recomputed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime

from agent.config.models import Carbon
from agent.core.calendar import SiteCalendar
from agent.payloads import Carrier


@dataclass(frozen=True)
class Factor:
    """kg CO2 per native unit of the carrier (kWh for electricity, m3 for gas)."""

    value: float
    origin: str  # "static", "schedule", "live"


@dataclass
class _Live:
    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


class EmissionFactors:
    def __init__(self, carbon: Carbon, calendar: SiteCalendar) -> None:
        self.carbon = carbon
        self.calendar = calendar
        self._live: dict[Carrier, _Live] = {Carrier.ELECTRICITY: _Live()}
        self._cache: dict[tuple[Carrier, int], Factor] = {}

    def update_live(self, carrier: Carrier, value: float, ts_ms: int) -> None:
        """Record a live factor received over MQTT (kept in time order)."""
        live = self._live.setdefault(carrier, _Live())
        i = bisect.bisect_right(live.times, ts_ms)
        live.times.insert(i, ts_ms)
        live.values.insert(i, value)
        # Factors already resolved for intervals after this value may change.
        self._cache = {k: v for k, v in self._cache.items() if k[1] < ts_ms}
        if len(live.times) > 10_000:
            del live.times[:5_000], live.values[:5_000]

    def at(self, carrier: Carrier, start_ms: int, end_ms: int) -> Factor:
        key = (carrier, end_ms)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._resolve(carrier, start_ms, end_ms)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _resolve(self, carrier: Carrier, start_ms: int, end_ms: int) -> Factor:
        if carrier is Carrier.NATURAL_GAS:
            return Factor(self.carbon.natural_gas.kg_per_m3, "static")
        if carrier is Carrier.PRODUCTION:
            return Factor(0.0, "static")
        el = self.carbon.electricity
        if el.live is not None:
            live = self._live.get(Carrier.ELECTRICITY)
            if live is not None and live.times:
                i = bisect.bisect_right(live.times, end_ms) - 1
                if i >= 0 and end_ms - live.times[i] <= el.live.max_age_s * 1000:
                    return Factor(live.values[i], "live")
        if el.schedule:
            local = datetime.fromtimestamp(start_ms / 1000, self.calendar.tz)
            for rule in el.schedule:
                if rule.matches(local.hour, local.weekday(), local.month):
                    return Factor(rule.kg_per_kwh, "schedule")
        return Factor(el.kg_per_kwh, "static")
