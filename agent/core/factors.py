"""Emission factors at the time of use: static, a schedule, or live with a fallback.

A factor is resolved once per interval and carrier, from the interval's start
in the site's local time (schedules) or the newest live value received no later
than the interval's end and not older than ``max_age_s`` (live). The factor used
is written into every record, so a report can always be recomputed.

A live value comes from whoever may publish on the factor topic, so
:func:`parse_live_factor` takes exactly two shapes and nothing near them: a
wrong factor reaches every CO2 figure of the site, while a refused one only
leaves the static or scheduled factor in force.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from datetime import datetime

from agent.config.models import Carbon
from agent.contract.vocab import Carrier
from agent.core.calendar import SiteCalendar

#: The largest plausible grid factor (kg CO2/kWh): coal-only grids are ~1.2.
LIVE_MAX_KG_PER_KWH = 5.0
#: Live factor timestamps (Unix ms) must lie in 2000-01-01 .. 2100-01-01 UTC.
LIVE_TS_MIN_MS = 946_684_800_000
LIVE_TS_MAX_MS = 4_102_444_800_000
#: A factor message is ~50 bytes; anything much larger is not one (and bounds the parse).
LIVE_MAX_BYTES = 1024


class FactorError(ValueError):
    """A live factor message that is refused; ``str()`` is the reason, fit for a log line."""


@dataclass(frozen=True)
class LiveValue:
    """A live factor as received: kg CO2/kWh and when it applies from (Unix ms)."""

    kg_per_kwh: float
    ts_ms: int


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

    def static(self, carrier: Carrier) -> float | None:
        """The factor of every interval, when no time changes it (no schedule, no live
        value): a batch of intervals then needs no lookup each (replay's bulk lane)."""
        el = self.carbon.electricity
        if carrier is Carrier.ELECTRICITY and (el.live is not None or el.schedule):
            return None
        return self._resolve(carrier, 0, 0).value

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


def parse_live_factor(payload: bytes, now_ms: int) -> LiveValue:
    """``{"kg_per_kwh": number, "ts": int ms}``, ``{"kg_per_kwh": number}`` or a bare JSON
    number (the last two apply from ``now_ms``: publishers that never sent a time keep
    working, as the README has always allowed).

    Nothing else: no other keys, no duplicate keys, no strings that look like
    numbers, no ``true`` (Python's bool is an int, JSON's is not a number), no
    NaN/Infinity or numbers that overflow to them (``1e400``), a ``ts`` that is an
    integer between 2000 and 2100, and a value in 0..``LIVE_MAX_KG_PER_KWH``.
    Raises :class:`FactorError` with the reason.
    """
    if len(payload) > LIVE_MAX_BYTES:
        raise FactorError(f"{len(payload)} bytes, more than {LIVE_MAX_BYTES}")
    try:
        doc = json.loads(payload, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise FactorError("nested too deeply to be a factor") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, ints over 4300 digits
        raise FactorError(f"not JSON ({exc})") from None
    if isinstance(doc, dict):
        if set(doc) not in ({"kg_per_kwh", "ts"}, {"kg_per_kwh"}):
            keys = ", ".join(sorted(doc)) or "none"
            raise FactorError(f'keys must be "kg_per_kwh" and optionally "ts", not {keys}')
        value, ts = doc["kg_per_kwh"], doc.get("ts", now_ms)
        if "ts" in doc and type(ts) is not int:
            raise FactorError(f'"ts" must be an integer (Unix ms), not {_shown(ts)}')
        if "ts" in doc and not LIVE_TS_MIN_MS <= ts < LIVE_TS_MAX_MS:
            raise FactorError(f'"ts" {_shown(ts)} is not a Unix ms time in 2000..2100')
    else:
        value, ts = doc, now_ms
    if type(value) not in (int, float):
        raise FactorError(f"kg_per_kwh must be a number, not {_shown(value)}")
    # Compared before float(): an integer of 400 digits is valid JSON and overflows it.
    if not (0 <= value <= LIVE_MAX_KG_PER_KWH and math.isfinite(value)):
        raise FactorError(f"{_shown(value)} kg/kWh is not plausible (0..{LIVE_MAX_KG_PER_KWH})")
    return LiveValue(float(value), ts)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate keys")
    return doc


def _shown(value: object) -> str:
    """A rejected value for the log: JSON spelling, cut short (it may be anything)."""
    text = json.dumps(value)  # inf shows as Infinity
    return text if len(text) <= 40 else text[:37] + "..."
