"""Topics and JSON payloads: the MQTT contract, in one module.

The publisher, `replay`, the bridge and the tests all build and read messages
through this module, so the contract has exactly one definition. Payloads are
plain dicts of JSON types; the pydantic models validate what comes in (the
bridge) and document what goes out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.plausible import SEQ_MAX, VALUE_RANGES, WINDOW_RANGES, energy_ranges, outside

DEFAULT_PREFIX = "energy/v1"
#: Shown in messages and given to pydantic, whose (Rust) ``$`` is the end of the text.
ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: For Python's ``re``, where ``$`` also matches before a trailing newline; ``\Z`` does not.
ID_RX = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")

#: The windows of an intensity record; the core's (agent.core.windows) and the
#: IntensityModel's keys are tied to these by tests/unit/test_core_parts.py.
WINDOWS = ("1m", "15m", "1h", "24h", "today", "month")


class Carrier(StrEnum):
    ELECTRICITY = "electricity"
    NATURAL_GAS = "natural_gas"
    PRODUCTION = "production"


@dataclass(frozen=True)
class Topics:
    """``{prefix}/{site}/{gateway}/...`` for one gateway."""

    prefix: str
    site: str
    gateway: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    def status(self) -> str:
        return f"{self.base}/status"

    def device_status(self, device: str) -> str:
        return f"{self.base}/{device}/status"

    def measurements(self, device: str) -> str:
        return f"{self.base}/{device}/measurements"

    def energy(self, device: str) -> str:
        return f"{self.base}/{device}/energy"

    def intensity(self) -> str:
        return f"{self.base}/intensity"

    def ledger(self) -> str:
        return f"{self.base}/ledger"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: dict[str, Any]

    def as_json_line(self) -> dict[str, Any]:
        return {"topic": self.topic, "payload": self.payload}


#: Published numbers are rounded to 1e-9 of their unit (a micro-watt-hour of energy):
#: far below any meter's resolution, and no 0.5999999999999943 in a report.
DIGITS = 9


def num(x: float) -> float:
    return round(x, DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def opt(x: float | None) -> float | None:
    return None if x is None else num(x)


def ratio(num_: float, den: float, scale: float = 1.0) -> float | None:
    """``num/den * scale``, or None (JSON null) when the denominator is zero."""
    if den == 0 or not math.isfinite(den):
        return None
    return num(num_ / den * scale)


# --- builders ------------------------------------------------------------------------------


def gateway_status_payload(
    state: Literal["online", "offline"], ts: int, version: str
) -> dict[str, Any]:
    return {"state": state, "ts": ts, "version": version}


def device_status_payload(
    state: Literal["ok", "error"], error: str | None, ts: int
) -> dict[str, Any]:
    return {"state": state, "error": error, "ts": ts}


def encode(payload: dict[str, Any]) -> bytes:
    """The bytes on the wire: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def measurements_payload(
    ts: int,
    seq: int,
    values: dict[str, float | None],
    implausible: Sequence[str] = (),
) -> dict[str, Any]:
    """One poll. ``implausible`` names the quantities the meter returned outside their
    plausible range (a 3.4e38 V voltage, a power factor of 230): their ``values`` are
    null, and this says why, so a missing value is never mistaken for a meter that
    did not answer. The key is present only when the list is not empty.

    A value outside the contract's own range (:data:`VALUE_RANGES`) is nulled and
    named here too, whatever the profile's limits: the bridge would refuse the whole
    poll for it, losing the good values with the bad one."""
    flagged = set(implausible)
    checked = dict(values)
    for key, value in values.items():
        bounds = VALUE_RANGES.get(key)
        # (NaN and inf are left to encode(), which refuses them: not numbers at all.)
        if value is None or bounds is None or not math.isfinite(value):
            continue
        if not bounds[0] <= value <= bounds[1]:
            checked[key] = None
            flagged.add(key)
    out: dict[str, Any] = {"ts": ts, "seq": seq, "values": checked}
    if flagged:
        out["implausible"] = sorted(flagged)
    return out


def energy_payload(
    *,
    ts: int,
    interval_s: int,
    carrier: Carrier,
    energy_kwh: float,
    co2_kg: float,
    ef_kg_per_kwh: float | None,
    quality: str,
    volume_m3: float | None = None,
    units: float | None = None,
    unmetered_kwh: float | None = None,
    has_children: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": ts,
        "interval_s": interval_s,
        "carrier": carrier.value,
        "energy_kwh": num(energy_kwh),
        "co2_kg": num(co2_kg),
        "avg_power_kw": num(energy_kwh * 3600.0 / interval_s),
        "ef_kg_per_kwh": opt(ef_kg_per_kwh),
        "quality": quality,
    }
    if carrier is Carrier.NATURAL_GAS:
        out["volume_m3"] = opt(volume_m3)
    if carrier is Carrier.PRODUCTION:
        out["units"] = opt(units)
    if has_children:
        out["unmetered_kwh"] = opt(unmetered_kwh)
    return out


def window_values(energy_kwh: float, co2_kg: float, units: float, kgce: float) -> dict[str, Any]:
    return {
        "energy_kwh": num(energy_kwh),
        "co2_kg": num(co2_kg),
        "output_units": num(units),
        "kwh_per_unit": ratio(energy_kwh, units),
        "kgco2_per_unit": ratio(co2_kg, units),
        "intensity_g_per_kwh": ratio(co2_kg, energy_kwh, 1000.0),
        "tce": num(kgce / 1000.0),
    }


def intensity_payload(ts: int, windows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"ts": ts, "windows": windows}


# --- validation models (what the bridge accepts) -------------------------------------------


def _implausible(problems: list[str]) -> PydanticCustomError:
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return PydanticCustomError("implausible", "; ".join(problems[:3]) + more)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise PydanticCustomError("not_finite", "must be a finite number")
    return v


def _quantity(key: str) -> str:
    if key not in VALUE_RANGES:
        shown = key if len(key) <= 70 else key[:67] + "..."
        raise PydanticCustomError(
            "unknown_quantity",
            "'{key}' is not a canonical quantity (drivers/quantities.py)",
            {"key": shown},
        )
    return key


Finite = Annotated[float, AfterValidator(_finite)]
Ms = Annotated[int, Field(ge=0, le=10**14)]
QuantityName = Annotated[str, AfterValidator(_quantity)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class GatewayStatusModel(_Strict):
    state: Literal["online", "offline"]
    ts: Ms
    version: str


class DeviceStatusModel(_Strict):
    state: Literal["ok", "error"]
    error: str | None
    ts: Ms


class MeasurementsModel(_Strict):
    ts: Ms
    seq: Annotated[int, Field(ge=0, le=SEQ_MAX)]
    # fail_fast: one error, not one per key (18,000 unknown keys made 22 MB of them).
    values: Annotated[dict[QuantityName, Finite | None], Field(fail_fast=True)]
    implausible: Annotated[list[QuantityName] | None, Field(fail_fast=True)] = None

    @field_validator("values")
    @classmethod
    def _plausible(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        problems = [
            p
            for k, v in values.items()
            if v is not None and (p := outside(f"values.{k}", v, VALUE_RANGES[k]))
        ]
        if problems:
            raise _implausible(problems)
        return values

    @model_validator(mode="after")
    def _named_once_and_null(self) -> MeasurementsModel:
        named = self.implausible or []
        if len(set(named)) != len(named):
            raise ValueError("implausible: a quantity is named twice")
        numbered = [q for q in named if self.values.get(q) is not None]
        if numbered:
            raise ValueError(f"implausible: {numbered[0]} is named but has a value")
        return self


#: The numbers of an energy record, in the order they are written (lineproto.to_lines).
ENERGY_NUMBERS = (
    "energy_kwh",
    "co2_kg",
    "avg_power_kw",
    "ef_kg_per_kwh",
    "volume_m3",
    "units",
    "unmetered_kwh",
)


class EnergyModel(_Strict):
    ts: Ms
    interval_s: Annotated[int, Field(gt=0, le=86400)]
    carrier: Carrier
    energy_kwh: Finite
    co2_kg: Finite
    avg_power_kw: Finite
    ef_kg_per_kwh: Finite | None
    quality: Literal["measured", "integrated", "interpolated", "gap", "reset", "partial"]
    volume_m3: Finite | None = None
    units: Finite | None = None
    unmetered_kwh: Finite | None = None

    @field_validator(*ENERGY_NUMBERS)
    @classmethod
    def _plausible(cls, v: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("interval_s")
        if v is None or interval is None or info.field_name is None:
            return v  # no interval: its own error is reported instead
        problem = outside(info.field_name, v, energy_ranges(interval)[info.field_name])
        if problem:
            raise _implausible([f"{problem} for a {interval} s interval"])
        return v


class WindowModel(_Strict):
    energy_kwh: Finite
    co2_kg: Finite
    output_units: Finite
    kwh_per_unit: Finite | None
    kgco2_per_unit: Finite | None
    intensity_g_per_kwh: Finite | None
    tce: Finite


class IntensityModel(_Strict):
    ts: Ms
    windows: Annotated[
        dict[Literal["1m", "15m", "1h", "24h", "today", "month"], WindowModel],
        Field(fail_fast=True),
    ]

    @field_validator("windows")
    @classmethod
    def _plausible(cls, windows: dict[str, WindowModel]) -> dict[str, WindowModel]:
        problems = []
        for name, w in windows.items():
            for field, bounds in WINDOW_RANGES[name].items():
                v = getattr(w, field)
                if v is not None and (p := outside(f"windows.{name}.{field}", v, bounds)):
                    problems.append(p)
        if problems:
            raise _implausible(problems)
        return windows


#: Lowercase hex of a SHA-256; standard base64 of an Ed25519 public key (32 bytes) and
#: of a signature (64 bytes); the 16 hex digits of a key id (docs/ledger.md).
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
KeyB64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{43}=$")]
SigB64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$")]
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
#: Bounds on a ledger entry's lists: far beyond any real entry, small enough to be cheap.
MAX_COVERS = 10_000
MAX_CERTS = 1_000


class DigestModel(_Strict):
    records: Annotated[int, Field(ge=0, le=SEQ_MAX)]
    hash: Sha256Hex


class CoverModel(_Strict):
    """The full current record set of one period: its two hashes (docs/ledger.md)."""

    start: Ms
    end: Ms
    energy: DigestModel
    site: DigestModel

    @model_validator(mode="after")
    def _forward(self) -> CoverModel:
        if self.end <= self.start:
            raise ValueError("a cover must end after it starts")
        return self


class CertModel(_Strict):
    """A key taking over from another: signed by the key it replaces (``signer``)."""

    seq: Annotated[int, Field(ge=0, le=SEQ_MAX)]
    key: KeyB64
    key_id: KeyId
    signer: KeyId
    sig: SigB64


class LedgerModel(_Strict):
    """One entry of a gateway's ledger; its signature and chain are checked elsewhere."""

    version: Literal[1]
    site: Annotated[str, Field(pattern=ID)]
    gateway: Annotated[str, Field(pattern=ID)]
    seq: Annotated[int, Field(ge=0, le=SEQ_MAX)]
    period_start: Ms
    period_end: Ms
    covers: Annotated[list[CoverModel], Field(max_length=MAX_COVERS)]
    prev: Sha256Hex
    key: KeyB64
    key_id: KeyId
    certs: Annotated[list[CertModel], Field(max_length=MAX_CERTS)]
    next_key: CertModel | None = None
    sealed_ms: Ms
    sig: SigB64

    @property
    def ts(self) -> int:
        """The time the entry is filed under: the end of its period."""
        return self.period_end

    @model_validator(mode="after")
    def _ordered(self) -> LedgerModel:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


# --- topics, read back (what the bridge routes on) -----------------------------------------


class TopicKind(StrEnum):
    GATEWAY_STATUS = "gateway_status"
    DEVICE_STATUS = "device_status"
    MEASUREMENTS = "measurements"
    ENERGY = "energy"
    INTENSITY = "intensity"
    LEDGER = "ledger"


#: The model that validates each kind of payload.
MODELS: dict[TopicKind, type[_Strict]] = {
    TopicKind.GATEWAY_STATUS: GatewayStatusModel,
    TopicKind.DEVICE_STATUS: DeviceStatusModel,
    TopicKind.MEASUREMENTS: MeasurementsModel,
    TopicKind.ENERGY: EnergyModel,
    TopicKind.INTENSITY: IntensityModel,
    TopicKind.LEDGER: LedgerModel,
}

_GATEWAY_LEAVES = {
    "status": TopicKind.GATEWAY_STATUS,
    "intensity": TopicKind.INTENSITY,
    "ledger": TopicKind.LEDGER,
}
_DEVICE_LEAVES = {
    "status": TopicKind.DEVICE_STATUS,
    "measurements": TopicKind.MEASUREMENTS,
    "energy": TopicKind.ENERGY,
}


@dataclass(frozen=True)
class TopicRef:
    """A contract topic taken apart: which payload it carries and whose it is."""

    kind: TopicKind
    site: str
    gateway: str
    device: str | None = None


class TopicError(ValueError):
    """A topic that is not one of the contract's; the message says why."""


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> TopicRef:
    """The inverse of :class:`Topics`; raises TopicError for anything else.

    Ids are checked against :data:`ID` here, before they become database tags:
    a site called ``a,b=c`` must never get near line protocol.
    """
    head = prefix + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic is not under '{prefix}/'")
    parts = topic[len(head) :].split("/")
    if len(parts) == 3 and parts[2] in _GATEWAY_LEAVES:
        kind = _GATEWAY_LEAVES[parts[2]]
    elif len(parts) == 4 and parts[3] in _DEVICE_LEAVES:
        kind = _DEVICE_LEAVES[parts[3]]
    else:
        raise TopicError(
            "unknown topic (expected {site}/{gateway}/status|intensity|ledger or "
            "{site}/{gateway}/{device}/status|measurements|energy under the prefix)"
        )
    for name, value in zip(("site", "gateway", "device"), parts[:-1], strict=False):
        if not ID_RX.fullmatch(value):
            shown = value if len(value) <= 70 else value[:67] + "..."
            raise TopicError(f"{name} id {shown!r} does not match {ID}")
    return TopicRef(kind, parts[0], parts[1], parts[2] if len(parts) == 4 else None)


def subscription_filters(prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """MQTT filters matching exactly the contract's topic shapes (they never overlap)."""
    return (
        f"{prefix}/+/+/status",
        f"{prefix}/+/+/intensity",
        f"{prefix}/+/+/ledger",
        f"{prefix}/+/+/+/status",
        f"{prefix}/+/+/+/measurements",
        f"{prefix}/+/+/+/energy",
    )
