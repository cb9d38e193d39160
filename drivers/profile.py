"""Meter profiles: device knowledge as data, validated strictly on load.

A profile is one YAML file per meter model in ``drivers/profiles/``. It names
the maker's published register map, serial defaults, what the meter tolerates
per read, and for every canonical quantity where it lives and how to scale it.
Transport settings (host, port, unit id of a real device) never live here.
Adding a meter must never need code.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from confdoc.errors import Problem
from confdoc.yamldoc import (
    YamlDocument,
    format_path,
    parse_yaml,
    read_document,
    validation_problems,
)
from drivers.errors import ProfileError
from drivers.quantities import PLAUSIBLE, Quantity
from drivers.registers import Address, DataType, RatioRegister, RegisterSpec, Table

PROFILE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+$")

#: Modbus allows at most 125 registers in one read response (256-byte RTU frame).
MODBUS_MAX_READ = 125


class DeviceKind(StrEnum):
    """What a device meters; decides which counter is its main flow."""

    ELECTRICITY = "electricity"
    GAS = "gas"
    PRODUCTION = "production"


class Trust(StrEnum):
    MANUFACTURER = "manufacturer"
    OPEN_SOURCE = "open-source"
    COMMUNITY = "community"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: str = Field(min_length=3)
    url: str | None = None
    trust: Trust


class SerialDefaults(_Strict):
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class Hole(_Strict):
    """Registers a meter refuses to read; a gap-filling read must never cross them."""

    table: Table
    start: Address
    count: Annotated[int, Field(ge=1, le=0x10000)]
    note: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.count


class ReadLimits(_Strict):
    max_registers: Annotated[int, Field(ge=1, le=MODBUS_MAX_READ)] = MODBUS_MAX_READ
    max_gap: Annotated[int, Field(ge=0, le=MODBUS_MAX_READ)] = 0
    unreadable: tuple[Hole, ...] = ()


_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Ratings(_Strict):
    """The largest flow the maker rates the meter for, from its datasheet, with the source.

    The agent derives the glitch limit of the meter's counter from it (docs/core.md,
    "Which limit applies"): a step the meter cannot have measured is a glitch.
    Electricity: ``phases`` x ``voltage_v`` (nominal, phase to neutral) x
    ``max_current_a`` (Imax per phase), or ``max_power_kw``; gas: ``max_flow_m3_h``
    (Qmax). Where the counter's register is scaled by ratio registers (PT, CT),
    these are the meter's own (secondary-side) ratings: the ratios read from the
    meter scale them like the counter.
    """

    phases: Literal[1, 3] | None = None
    voltage_v: _Positive | None = None
    max_current_a: _Positive | None = None
    max_power_kw: _Positive | None = None
    max_flow_m3_h: _Positive | None = None
    source: Source
    note: str | None = None

    @model_validator(mode="after")
    def _one_rating(self) -> Ratings:
        vi = {"phases": self.phases, "voltage_v": self.voltage_v}
        vi["max_current_a"] = self.max_current_a
        missing = [name for name, v in vi.items() if v is None]
        if 0 < len(missing) < len(vi):
            raise ValueError(
                f"{' and '.join(missing)} missing: give phases, voltage_v and max_current_a "
                "together"
            )
        forms = [not missing, self.max_power_kw is not None]
        forms.append(self.max_flow_m3_h is not None)
        if sum(forms) != 1:
            raise ValueError(
                "give one rating: phases, voltage_v and max_current_a, or max_power_kw "
                "(electricity), or max_flow_m3_h (gas)"
            )
        return self

    @property
    def kind(self) -> DeviceKind:
        """What the rating is of: electric power or a gas flow."""
        return DeviceKind.GAS if self.max_flow_m3_h is not None else DeviceKind.ELECTRICITY

    @property
    def max_per_h(self) -> float:
        """The rated maximum in the counter's unit per hour (kW, m3/h)."""
        if self.max_flow_m3_h is not None:
            return self.max_flow_m3_h
        if self.max_power_kw is not None:
            return self.max_power_kw
        assert self.phases and self.voltage_v and self.max_current_a  # _one_rating
        return self.phases * self.voltage_v * self.max_current_a / 1000.0


#: What a rating of the wrong kind is told, by the profile's kind.
_RATING_FOR = {
    DeviceKind.ELECTRICITY: "ratings: an electricity meter is rated by phases, voltage_v and "
    "max_current_a, or max_power_kw (max_flow_m3_h is a gas meter's)",
    DeviceKind.GAS: "ratings: a gas meter is rated by max_flow_m3_h",
    DeviceKind.PRODUCTION: "ratings: a production counter has no rating (it counts whatever "
    "the plant counts); give the device max_units_per_h in the config instead",
}


class Probe(_Strict):
    """How `scan` recognises this meter: a quantity whose value must fall in a range."""

    quantity: Quantity
    min: float
    max: float


def _lowest_first(bounds: tuple[float, float]) -> tuple[float, float]:
    if not bounds[0] < bounds[1]:
        raise ValueError(
            f"[{bounds[0]:g}, {bounds[1]:g}] is not a range: give the lowest plausible "
            "value first, then a higher one"
        )
    return bounds


#: ``[min, max]``, both included: where a reading of one quantity can lie on this meter.
PlausibleRange = Annotated[tuple[FiniteFloat, FiniteFloat], AfterValidator(_lowest_first)]


class RegisterMap(_Strict):
    """Registers plus the limits and ratios they need: shared by profiles and inline configs."""

    limits: ReadLimits = ReadLimits()
    ratios: dict[str, RatioRegister] = {}
    registers: tuple[RegisterSpec, ...] = Field(min_length=1)
    #: Narrower (or, for a special installation, wider) plausible ranges than the
    #: defaults in :data:`drivers.quantities.PLAUSIBLE`, per quantity.
    plausible: dict[Quantity, PlausibleRange] = {}

    @model_validator(mode="after")
    def _consistent(self) -> RegisterMap:
        problems = register_map_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def spec(self, quantity: Quantity) -> RegisterSpec | None:
        for r in self.registers:
            if r.quantity is quantity:
                return r
        return None

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        return tuple(r.quantity for r in self.registers)

    def plausible_range(self, quantity: Quantity) -> tuple[float, float]:
        """``(min, max)``, both included: this map's own range, else the default."""
        return self.plausible.get(quantity) or PLAUSIBLE[quantity]


def register_map_problems(m: RegisterMap) -> list[str]:
    """Cross-field checks; each message names the register so it can be found."""
    out: list[str] = []
    seen: dict[Quantity, int] = {}
    spans: list[tuple[Table, int, int, str]] = []
    for i, r in enumerate(m.registers):
        name = f"registers[{i}] ({r.quantity.value})"
        if r.quantity in seen:
            out.append(f"{name}: quantity defined twice (also registers[{seen[r.quantity]}])")
        seen[r.quantity] = i
        if r.end > 0x10000:
            out.append(f"{name}: {r.type.value} at {r.address} runs past address 65535")
        if r.words > m.limits.max_registers:
            out.append(
                f"{name}: {r.words} registers exceed limits.max_registers "
                f"({m.limits.max_registers})"
            )
        for ratio_name in r.ratios:
            if ratio_name not in m.ratios:
                known = ", ".join(sorted(m.ratios)) or "none defined"
                out.append(f"{name}: unknown ratio '{ratio_name}' (ratios: {known})")
        spans.append((r.table, r.address, r.end, name))
    for key, ratio in m.ratios.items():
        spans.append((ratio.table, ratio.address, ratio.end, f"ratios.{key}"))
    for q in m.plausible:
        if q not in seen:
            out.append(f"plausible.{q.value}: '{q.value}' is not in registers")
    spans.sort(key=lambda s: (s[0].value, s[1]))
    # Compare each value with the one reaching furthest so far, so a wide value that
    # overlaps several later ones is reported against each of them.
    widest = None
    for b in spans:
        if widest is not None and widest[0] is b[0] and b[1] < widest[2]:
            out.append(
                f"{b[3]}: {b[0].value} registers {b[1]}..{b[2] - 1} overlap {widest[3]} "
                f"({widest[1]}..{widest[2] - 1})"
            )
        if widest is None or widest[0] is not b[0] or b[2] > widest[2]:
            widest = b
    for hole in m.limits.unreadable:
        for table, start, end, name in spans:
            if table is hole.table and start < hole.end and hole.start < end:
                out.append(
                    f"{name}: lies in an unreadable hole ({hole.table.value} "
                    f"{hole.start}..{hole.end - 1})"
                )
    return out


class Profile(RegisterMap):
    id: str = Field(pattern=PROFILE_ID.pattern)
    manufacturer: str = Field(min_length=1)
    model: str = Field(min_length=1)
    description: str = Field(min_length=1)
    kind: DeviceKind = DeviceKind.ELECTRICITY
    sources: tuple[Source, ...] = Field(min_length=1)
    serial: SerialDefaults = SerialDefaults()
    default_unit: Annotated[int, Field(ge=1, le=247)] = 1
    probe: Probe | None = None
    #: The maker's rated maximum, where a datasheet gives it (the default glitch limit).
    ratings: Ratings | None = None

    @model_validator(mode="after")
    def _probe_known(self, info: ValidationInfo) -> Profile:
        if self.probe is not None and self.spec(self.probe.quantity) is None:
            raise ValueError(f"probe.quantity: '{self.probe.quantity.value}' is not in registers")
        if self.ratings is not None and self.ratings.kind is not self.kind:
            raise ValueError(_RATING_FOR[self.kind])
        expected = (info.context or {}).get("expected_id")
        if expected and self.id != expected:
            raise ValueError(f"id: '{self.id}' must match the file name '{expected}.yaml'")
        return self


def parse_profile(text: str, file: str, expected_id: str | None = None) -> Profile:
    """Validate one profile document; raise ProfileError listing every problem with its line."""
    doc, problems = parse_yaml(text, file)
    if doc is None or problems:
        raise ProfileError(problems)
    try:
        return Profile.model_validate(doc.data, context={"expected_id": expected_id})
    except ValidationError as exc:
        raise ProfileError(locate_problems(doc, validation_problems(doc, exc))) from None


_PREFIX = re.compile(
    r"^((?:registers\[\d+\])|(?:ratios\.\w+)|(?:plausible\.\w+)|id|probe\.quantity|ratings)"
    r"(?: \([a-z0-9_]+\))?: "
)


def locate_problems(doc: YamlDocument, problems: list[Problem]) -> list[Problem]:
    """Cross-field messages name their register ("registers[3] (...): ..."); point at its line."""
    out = []
    for p in problems:
        for msg in p.message.split("\n"):
            m = _PREFIX.match(msg)
            if m is None:
                out.append(Problem(p.path, msg, p.file, p.line))
                continue
            rel = _parse_path(m.group(1))
            base = tuple(_parse_path(p.path)) if p.path else ()
            path = (*base, *rel)
            out.append(Problem(format_path(path), msg[m.end() :], doc.file, doc.line_of(path)))
    return out


def _parse_path(text: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


# --- the built-in library ------------------------------------------------------------------


class ProfileLibrary:
    """Profiles from a directory (built-in by default), loaded once and validated strictly."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory
        self._cache: dict[str, Profile] = {}

    def _files(self) -> dict[str, Path]:
        if self._dir is not None:
            base = self._dir
        else:
            base = Path(str(resources.files("drivers") / "profiles"))
        return {p.stem: p for p in sorted(base.glob("*.yaml"))}

    def ids(self) -> list[str]:
        return sorted(self._files())

    def get(self, profile_id: str) -> Profile:
        if profile_id in self._cache:
            return self._cache[profile_id]
        files = self._files()
        if profile_id not in files:
            raise ProfileError([Problem("profile", unknown_profile_message(profile_id, files))])
        path = files[profile_id]
        text, problems = read_document(path, "the profile")
        if text is None:
            raise ProfileError(problems)
        profile = parse_profile(text, str(path), expected_id=profile_id)
        self._cache[profile_id] = profile
        return profile

    def all(self) -> list[Profile]:
        return [self.get(i) for i in self.ids()]


def unknown_profile_message(profile_id: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(profile_id, known, n=1, cutoff=0.6)
    hint = f" — did you mean '{close[0]}'?" if close else " (see `energy-agent profiles`)"
    return f"unknown profile '{profile_id}'{hint}"


__all__ = [
    "MODBUS_MAX_READ",
    "Address",
    "DataType",
    "DeviceKind",
    "Hole",
    "PlausibleRange",
    "Probe",
    "Profile",
    "ProfileLibrary",
    "Ratings",
    "ReadLimits",
    "RegisterMap",
    "SerialDefaults",
    "Source",
    "Trust",
    "parse_profile",
    "unknown_profile_message",
]
