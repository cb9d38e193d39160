"""A simulated plant described as data: endpoints, and the meters behind each.

Used by ``energy-agent simulate -c FILE`` and by the demo. Strict like every
other document: a misspelt fault name must not silently simulate a healthy meter.
"""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from confdoc.errors import Problem
from confdoc.yamldoc import parse_yaml, validation_problems
from drivers.errors import ProfileError
from drivers.profile import (
    DeviceKind,
    ProfileLibrary,
    ReadLimits,
    RegisterMap,
    unknown_profile_message,
)
from drivers.registers import RatioRegister, RegisterSpec
from drivers.simulator.meter import Faults, MeterModel
from drivers.simulator.server import Clock, SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultSpec(_Strict):
    timeout: Annotated[float, Field(ge=0, le=1)] = 0.0
    exception_code: Annotated[int, Field(ge=0, le=255)] = 0
    exception_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    garbage: Annotated[float, Field(ge=0, le=1)] = 0.0
    reset_after_s: Annotated[float, Field(ge=0)] | None = None
    delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0

    def build(self) -> Faults:
        return Faults(**self.model_dump())


class SimMeter(_Strict):
    unit: Annotated[int, Field(ge=0, le=255)]
    profile: str | None = None
    registers: tuple[RegisterSpec, ...] | None = None
    limits: ReadLimits | None = None
    ratios: dict[str, RatioRegister] | None = None
    kind: DeviceKind | None = None
    seed: int | None = None
    load_kw: float = 20.0
    export: bool = False
    ratio_values: dict[str, float] = {}
    near_wrap: Annotated[float, Field(ge=0)] | None = None
    start_counters: Annotated[float, Field(ge=0)] = 1000.0
    faults: FaultSpec = FaultSpec()

    @model_validator(mode="after")
    def _one(self) -> SimMeter:
        if (self.profile is None) == (self.registers is None):
            raise ValueError("give either `profile` or inline `registers`")
        return self

    def model(self, library: ProfileLibrary, default_seed: int) -> MeterModel:
        if self.profile is not None:
            profile = library.get(self.profile)
            regmap: RegisterMap = profile
            kind = self.kind or profile.kind
        else:
            assert self.registers is not None
            regmap = RegisterMap(
                registers=self.registers,
                limits=self.limits or ReadLimits(),
                ratios=self.ratios or {},
            )
            kind = self.kind or DeviceKind.ELECTRICITY
        return MeterModel(
            regmap,
            kind=kind,
            seed=self.seed if self.seed is not None else default_seed,
            load_kw=self.load_kw,
            ratios=dict(self.ratio_values),
            near_wrap=self.near_wrap,
            start_counters=self.start_counters,
            export=self.export,
            faults=self.faults.build(),
        )


class SimEndpoint(_Strict):
    tcp: str | None = Field(default=None, pattern=r"^[^:]+:\d+$")
    rtu_over_tcp: str | None = Field(default=None, pattern=r"^[^:]+:\d+$")
    rtu: str | None = None
    baudrate: int = 9600
    parity: str = Field(default="N", pattern="^[NEO]$")
    stopbits: int = Field(default=1, ge=1, le=2)
    meters: tuple[SimMeter, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one(self) -> SimEndpoint:
        if sum(x is not None for x in (self.tcp, self.rtu_over_tcp, self.rtu)) != 1:
            raise ValueError("give exactly one of tcp, rtu_over_tcp, rtu")
        units = [m.unit for m in self.meters]
        if len(units) != len(set(units)):
            raise ValueError("two meters on one endpoint share a unit id")
        return self

    def endpoint(self) -> Endpoint:
        if self.rtu is not None:
            return Endpoint(
                Framing.RTU,
                device=self.rtu,
                baudrate=self.baudrate,
                parity=self.parity,
                stopbits=self.stopbits,
            )
        addr = self.tcp or self.rtu_over_tcp
        assert addr is not None
        host, _, port = addr.rpartition(":")
        framing = Framing.TCP if self.tcp else Framing.RTU_OVER_TCP
        return Endpoint(framing, host=host, port=int(port))


class Plant(_Strict):
    endpoints: tuple[SimEndpoint, ...] = Field(min_length=1)

    def servers(self, library: ProfileLibrary, clock: Clock | None = None) -> list[SimulatorServer]:
        out = []
        seed = 1
        for ep in self.endpoints:
            devices = []
            for m in ep.meters:
                devices.append(SimulatedDevice(m.unit, m.model(library, seed)))
                seed += 1
            out.append(SimulatorServer(ep.endpoint(), devices, clock=clock or time.time))
        return out


def parse_plant(text: str, file: str, library: ProfileLibrary) -> Plant:
    doc, problems = parse_yaml(text, file)
    if doc is None or problems:
        raise ProfileError(problems)
    try:
        plant = Plant.model_validate(doc.data)
    except ValidationError as exc:
        raise ProfileError(validation_problems(doc, exc)) from None
    bad = []
    for i, ep in enumerate(plant.endpoints):
        for j, m in enumerate(ep.meters):
            if m.profile is not None and m.profile not in library.ids():
                bad.append(
                    Problem(
                        f"endpoints[{i}].meters[{j}].profile",
                        unknown_profile_message(m.profile, library.ids()),
                        file,
                        doc.line_of(("endpoints", i, "meters", j, "profile")),
                    )
                )
    if bad:
        raise ProfileError(bad)
    return plant
