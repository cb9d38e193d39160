"""Pydantic models for the whole config shape of DESIGN.md.

Unknown keys are errors everywhere: a misspelt ``intreval_s`` silently taking
its default is how a plant ends up polling once a minute for a year.
Cross-references (bus names, profiles, parents) are checked in
:mod:`agent.config.load`, which can report all of them at once with lines.

What a device is (kind, carrier, register map, the quantity that counts it)
needs its profile, so it is not a field: :meth:`AgentConfig.resolved` works it
out once per profile library, by the rules of :mod:`agent.config.kinds`, and
every part of the agent reads that answer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

# The bridge's models and the shared ones live apart, importable without drivers;
# their names stay importable from here.
from agent.config.alarms import Alarms
from agent.config.bridge import BridgeConfig as BridgeConfig
from agent.config.bridge import BridgeSettings as BridgeSettings
from agent.config.bridge import Influx as Influx
from agent.config.common import ID_PATTERN as ID_PATTERN
from agent.config.common import ID_RX as ID_RX
from agent.config.common import Id as Id
from agent.config.common import Mqtt as Mqtt
from agent.config.common import SecretFiles
from agent.config.common import Strict as _Strict
from agent.config.common import TlsSettings as TlsSettings
from agent.config.kinds import CARRIER, UNIT, kind_of, main_quantity
from agent.config.report import ReportSettings
from agent.contract.vocab import Carrier
from drivers.endpoint import Endpoint, Framing, Timing
from drivers.profile import DeviceKind, PlausibleRange, ProfileLibrary, ReadLimits, RegisterMap
from drivers.quantities import Quantity
from drivers.registers import RatioRegister, RegisterSpec


class Site(_Strict):
    id: Id
    timezone: str = "UTC"
    name: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # OSError: "Asia" is a directory of the zone database, a 300-letter name too
            # long for a file name; both raised past ZoneInfoNotFoundError before.
            raise ValueError(
                f"unknown time zone '{v}' (use an IANA name such as 'Asia/Shanghai' or "
                "'Europe/Berlin')"
            ) from None
        return v


class Gateway(_Strict):
    id: Id


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_ranges(text: str, lo: int, hi: int, names: tuple[str, ...] = ()) -> frozenset[int]:
    """``"8-11,13-17"`` -> {8..11, 13..17}; ``"mon-fri"`` with day names. Inclusive ranges."""

    def one(tok: str) -> int:
        tok = tok.strip().lower()
        if tok in names:
            return names.index(tok) + lo
        if not tok.isdigit() or not lo <= int(tok) <= hi:
            allowed = f"{lo}..{hi}" + (f" or {', '.join(names)}" if names else "")
            raise ValueError(f"'{tok}' is not in {allowed}")
        return int(tok)

    out: set[int] = set()
    for part in text.split(","):
        a, sep, b = part.partition("-")
        first = one(a)
        last = one(b) if sep else first
        if last < first:
            raise ValueError(f"range '{part.strip()}' runs backwards")
        out.update(range(first, last + 1))
    return frozenset(out)


class FactorRule(_Strict):
    """One line of a factor schedule; unset fields match everything. First match wins."""

    kg_per_kwh: Annotated[float, Field(ge=0, le=5)]
    hours: str | None = None  # local hours, "8-11,13-17" (an hour h covers h:00-h:59)
    weekdays: str | None = None  # "mon-fri", "sat,sun"
    months: str | None = None  # "6-9"

    @model_validator(mode="after")
    def _parse(self) -> FactorRule:
        if self.hours is not None:
            parse_ranges(self.hours, 0, 23)
        if self.weekdays is not None:
            parse_ranges(self.weekdays, 0, 6, _DAYS)
        if self.months is not None:
            parse_ranges(self.months, 1, 12)
        return self

    def matches(self, hour: int, weekday: int, month: int) -> bool:
        return (
            (self.hours is None or hour in parse_ranges(self.hours, 0, 23))
            and (self.weekdays is None or weekday in parse_ranges(self.weekdays, 0, 6, _DAYS))
            and (self.months is None or month in parse_ranges(self.months, 1, 12))
        )


class LiveFactor(_Strict):
    """A factor published over MQTT (JSON ``{"kg_per_kwh": x, "ts": ms}`` or a bare number)."""

    topic: str = Field(min_length=1)
    #: Older than this, the live value is stale and the schedule/static factor applies.
    max_age_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 3600


class ElectricityFactor(_Strict):
    kg_per_kwh: Annotated[float, Field(ge=0, le=5)]
    source: str | None = None
    schedule: tuple[FactorRule, ...] = ()
    live: LiveFactor | None = None


class GasFactor(_Strict):
    kg_per_m3: Annotated[float, Field(ge=0, le=20)]
    #: Net calorific value in kWh per m3, to report gas in kWh next to electricity.
    #: 10.81 = 38.931 MJ/m3 (China's NDRC default NCV) / 3.6. At least 0.2 (blast-furnace
    #: gas is about 0.9): with kg_per_m3 at most 20, a gas record's factor stays within the
    #: contract's 100 kg/kWh ceiling, so the bridge never refuses it as implausible.
    kwh_per_m3: Annotated[float, Field(ge=0.2, le=50)] = 10.81
    source: str | None = None


class Carbon(_Strict):
    """Emission factors per carrier, kg CO2 per unit. Defaults are China's published values."""

    electricity: ElectricityFactor = ElectricityFactor(
        kg_per_kwh=0.5703, source="MEE 2022 national grid average (ETS reporting)"
    )
    natural_gas: GasFactor = GasFactor(
        kg_per_m3=2.162, source="NDRC default: 389.31 GJ/1e4 m3 x 15.3 kgC/GJ x 99% x 44/12"
    )


class Tce(_Strict):
    """Standard-coal coefficients (GB/T 2589-2020), kgce per unit."""

    electricity_kgce_per_kwh: Annotated[float, Field(gt=0, le=1)] = 0.1229
    natural_gas_kgce_per_m3: Annotated[float, Field(gt=0, le=5)] = 1.2143


class CoreSettings(_Strict):
    """How the core treats gaps and waits for late meters."""

    #: A polling gap longer than this is marked interpolated (counters) or not
    #: integrated (power); never shorter than three polls of the device.
    max_gap_s: Annotated[float, Field(gt=0, le=86400)] = 300
    #: How long a site interval waits for a late meter before it is published without it.
    site_hold_s: Annotated[float, Field(ge=0, le=3600)] = 120


class TcpAddress(_Strict):
    host: str = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = 502


class SerialPort(_Strict):
    port: str = Field(min_length=1)
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


#: The most requests ``max_inflight`` lets one Modbus TCP connection carry at once.
MAX_INFLIGHT = 64


class Bus(_Strict):
    """One physical bus: a Modbus TCP endpoint, a serial line, or a serial line behind TCP."""

    id: Id
    tcp: TcpAddress | None = None
    rtu: SerialPort | None = None
    rtu_over_tcp: TcpAddress | None = None
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    #: Pause between requests on a serial line; RS-485 meters need a few ms to turn around.
    inter_frame_delay_ms: Annotated[float, Field(ge=0, le=5000)] | None = None
    #: Modbus TCP: the devices of the bus are polled in this many groups per interval,
    #: each group's polls due at the same instant, instead of one poll every
    #: interval/N (docs/performance.md, Topologies). A serial line polls one at a time.
    poll_slots: Annotated[int, Field(ge=1, le=1000)] | None = None
    #: Modbus TCP: requests in flight on the bus's connection at once, told apart by
    #: transaction id (drivers/pipeline.py); 1 sends one and waits for its answer.
    max_inflight: int | None = None

    @field_validator("max_inflight")
    @classmethod
    def _inflight_range(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= MAX_INFLIGHT:
            raise ValueError(
                f"max_inflight must be 1..{MAX_INFLIGHT} (got {v}): 1 sends one request at a "
                "time; set what the gateway's manual allows, often 4-16 concurrent requests"
            )
        return v

    @model_validator(mode="after")
    def _one_transport(self) -> Bus:
        given = [k for k in ("tcp", "rtu", "rtu_over_tcp") if getattr(self, k) is not None]
        if len(given) != 1:
            have = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of tcp, rtu, rtu_over_tcp (found: {have})")
        if self.poll_slots is not None and self.tcp is None:
            raise ValueError(
                "poll_slots applies to Modbus TCP buses only (a serial line carries one "
                "request at a time): remove it"
            )
        if self.max_inflight is not None and self.tcp is None:
            raise ValueError(
                "max_inflight applies to Modbus TCP buses only (a serial line, also behind a "
                "TCP device server, carries one request at a time): remove it"
            )
        return self

    @property
    def framing(self) -> Framing:
        if self.rtu is not None:
            return Framing.RTU
        if self.rtu_over_tcp is not None:
            return Framing.RTU_OVER_TCP
        return Framing.TCP

    def endpoint(self) -> Endpoint:
        if self.rtu is not None:
            r = self.rtu
            return Endpoint(
                Framing.RTU,
                device=r.port,
                baudrate=r.baudrate,
                parity=r.parity,
                stopbits=r.stopbits,
                bytesize=r.bytesize,
            )
        addr = self.tcp or self.rtu_over_tcp
        assert addr is not None
        return Endpoint(self.framing, host=addr.host, port=addr.port)

    def timing(self) -> Timing:
        delay = self.inter_frame_delay_ms
        if delay is None:
            delay = 20.0 if self.framing is not Framing.TCP else 0.0
        return Timing(
            timeout_s=self.timeout_s,
            retries=self.retries,
            inter_frame_delay_s=delay / 1000.0,
            max_inflight=self.max_inflight or 1,
        )


#: Key of the validation context's dict in which devices share identical inline registers.
SHARED_REGISTERS = "shared_registers"


class Device(_Strict):
    id: Id
    bus: Id
    unit: Annotated[int, Field(ge=0, le=255)]
    profile: str | None = None
    registers: tuple[RegisterSpec, ...] | None = None
    limits: ReadLimits | None = None
    ratios: dict[str, RatioRegister] | None = None
    #: Plausible ranges for inline registers (a profile brings its own), by quantity.
    plausible: dict[Quantity, PlausibleRange] | None = None
    kind: DeviceKind | None = None
    interval_s: Annotated[float, Field(gt=0, le=86400)] = 1.0
    #: The glitch limit (docs/core.md, "Which limit applies"); finite: a device always
    #: has one, and every ``events`` message carries it.
    max_power_kw: Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)] | None = None
    #: Glitch limits for gas and production counters (the equivalent of max_power_kw).
    max_flow_m3_h: Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)] | None = None
    max_units_per_h: Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)] | None = None
    parent: Id | None = None
    name: str | None = None

    @field_validator("registers")
    @classmethod
    def _shared_registers(
        cls, v: tuple[RegisterSpec, ...] | None, info: ValidationInfo
    ) -> tuple[RegisterSpec, ...] | None:
        """Identical inline registers, one tuple: 200 meters of one type hold one copy
        (~13 KB a meter of models otherwise). The loader passes the dict to share in
        (:data:`SHARED_REGISTERS`); ``repr`` tells apart what ``==`` would not (-0.0)."""
        shared = info.context.get(SHARED_REGISTERS) if isinstance(info.context, dict) else None
        if v is None or shared is None:
            return v
        kept: tuple[RegisterSpec, ...] = shared.setdefault(repr(v), v)
        return kept

    @model_validator(mode="after")
    def _profile_or_registers(self) -> Device:
        if (self.profile is None) == (self.registers is None):
            raise ValueError(
                "give either `profile` (a built-in meter) or inline `registers`, "
                "not both and not neither"
            )
        inline_only = (self.limits, self.ratios, self.plausible)
        if self.profile is not None and any(x is not None for x in inline_only):
            raise ValueError(
                "`limits`, `ratios` and `plausible` belong to inline `registers`; "
                "a profile brings its own"
            )
        # Same checks as a profile file: overlaps, duplicate quantities, ratio names.
        self.inline_map()
        return self

    def inline_map(self) -> RegisterMap | None:
        return None if self.registers is None else self._inline_map()

    def _inline_map(self) -> RegisterMap:
        assert self.registers is not None
        return RegisterMap(
            registers=self.registers,
            limits=self.limits or ReadLimits(),
            ratios=self.ratios or {},
            plausible=self.plausible or {},
        )

    def resolve(
        self, library: ProfileLibrary, maps: dict[tuple[int, str], RegisterMap] | None = None
    ) -> ResolvedDevice:
        """This device with its profile's answers filled in (see :mod:`agent.config.kinds`).

        ``maps``: inline register maps already built for other devices; one with the same
        registers (the same tuple, shared by the loader) and the same limits, ratios and
        plausible ranges is reused, so that their readers can share one plan too.
        """
        profile = library.get(self.profile) if self.profile is not None else None
        if profile is not None:
            regmap: RegisterMap | None = profile
        elif maps is None:
            regmap = self.inline_map()
        else:
            key = (id(self.registers), repr((self.limits, self.ratios, self.plausible)))
            regmap = maps.get(key)
            if regmap is None:
                regmap = maps[key] = self._inline_map()
        assert regmap is not None  # the model guarantees a profile or registers
        kind = kind_of(self.kind, profile)
        return ResolvedDevice(self, kind, regmap, main_quantity(kind, regmap.quantities))


@dataclass(frozen=True)
class ResolvedDevice:
    """A device as the agent counts and shows it: decided once, after profiles are read."""

    device: Device
    kind: DeviceKind
    #: Its registers: the profile's, or the inline ones.
    regmap: RegisterMap
    #: What counts it (:data:`agent.config.kinds.COUNTED_BY`); None when nothing does,
    #: which the loader refuses, so a loaded config has one for every device.
    main: Quantity | None

    @property
    def carrier(self) -> Carrier:
        return CARRIER[self.kind]

    @property
    def unit(self) -> str:
        """The unit its main quantity is shown in."""
        return UNIT[self.main] if self.main is not None else ""

    @property
    def max_rate_per_h(self) -> float | None:
        """Its glitch limit (``max_power_kw``, ``max_flow_m3_h``, ``max_units_per_h``)."""
        d = self.device
        return {
            DeviceKind.ELECTRICITY: d.max_power_kw,
            DeviceKind.GAS: d.max_flow_m3_h,
            DeviceKind.PRODUCTION: d.max_units_per_h,
        }[self.kind]


class Publish(_Strict):
    energy_interval_s: Literal[60, 300, 900, 1800, 3600] = 60


class Buffer(_Strict):
    max_mb: Annotated[float, Field(gt=0, le=100_000)] = 512
    #: Messages per second the outbox is sent at, at most. Live data goes first; a
    #: backlog fills the rest, so an hour of 50 meters (~183,000 messages) drains in
    #: about 90 s at the default. Lower it for a slow uplink or a small central broker.
    replay_per_s: Annotated[int, Field(ge=10, le=100_000)] = 2000
    #: What the polls produce is stored (one outbox transaction) and handed to the
    #: broker link once per tick, however the polls are spread: per-poll side
    #: effects (a transaction, a pump and a paho wake-up each) were most of what the
    #: agent cost with many meters on one bus (docs/performance.md, Topologies).
    #: It adds at most this much to a message's way to the broker.
    tick_s: Annotated[float, Field(ge=0.01, le=1.0)] = 0.2


class HistorySettings(_Strict):
    """The gateway's own history of records (``state_dir/history.db``, docs/ledger.md)."""

    #: Records older than this many months are pruned (25: two years and the month
    #: an annual carbon report is due).
    retention_months: Annotated[int, Field(ge=1, le=240)] = 25
    #: The file's bound: at it, the oldest days are pruned first; a warning from 80 %
    #: and whenever the bound cannot hold ``retention_months`` at the gateway's rate.
    max_mb: Annotated[float, Field(gt=0, le=1_000_000)] = 2048


class LedgerSettings(_Strict):
    """The signed, hash-chained ledger of the history (docs/ledger.md)."""

    #: One entry per period; a divisor of a day, at least a minute.
    period_s: Annotated[int, Field(ge=60, le=86400)] = 3600
    #: How long after a period's end its entry is sealed: late meters and the site
    #: hold publish first. Default: ``core.site_hold_s`` + 30 s; never less than
    #: ``core.site_hold_s`` + 5 s.
    seal_delay_s: Annotated[float, Field(ge=0, le=86400)] | None = None

    @field_validator("period_s")
    @classmethod
    def _divides_a_day(cls, v: int) -> int:
        if 86400 % v:
            raise ValueError(
                f"{v} s does not divide a day: use a divisor of 86400 such as 60, 300, 900, "
                "3600 or 86400"
            )
        return v


#: The seal delay's margin over ``core.site_hold_s`` (the default adds SEAL_DEFAULT_MARGIN_S).
SEAL_MIN_MARGIN_S = 5.0
SEAL_DEFAULT_MARGIN_S = 30.0


class Http(SecretFiles):
    """The gateway's page, /api/state, /events and /metrics.

    Loopback by default: the page shows the plant's live load and which meters
    fail, which is not for everyone on the plant network. Listening elsewhere is
    a deliberate choice; then HTTP basic auth (``username`` + ``password_file``)
    is strongly advised, and :meth:`warnings` says so when it is missing, but it
    is not required: some plants put the gateway on an isolated control network
    behind their own reverse proxy.
    """

    secret_fields = ("password_file",)

    listen: str = "127.0.0.1:8080"
    #: Basic-auth user name; used only together with ``password_file``.
    username: str = "energy"
    #: A file holding the password (the secret-file rule of agent.config.secrets: first
    #: line, whitespace stripped). Read when the config is loaded and never logged; no
    #: inline password, so the config file can be shown to anyone.
    password_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{v}' is not HOST:PORT (e.g. '127.0.0.1:8080')")
        return v

    @field_validator("username")
    @classmethod
    def _no_colon(cls, v: str) -> str:
        # RFC 7617: the user-id cannot contain a colon (it separates user and password).
        if not v or ":" in v:
            raise ValueError("`username` must be non-empty and contain no ':'")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: assume it resolves to a reachable address

    def warnings(self) -> list[str]:
        """What `check` and the agent's log say about this section (not errors)."""
        if not self.loopback and self.password_file is None:
            return [
                f"http.listen: '{self.listen}' is reachable from the network and has no "
                "password: anyone there can see the plant's live values; set "
                "http.password_file (and http.username) for basic auth"
            ]
        return []


class AgentConfig(_Strict):
    """A gateway's config file (`energy-agent run -c FILE`)."""

    site: Site
    gateway: Gateway
    carbon: Carbon = Carbon()
    buses: tuple[Bus, ...] = Field(min_length=1)
    devices: tuple[Device, ...] = Field(min_length=1)
    mqtt: Mqtt | None = None
    publish: Publish = Publish()
    tce: Tce = Tce()
    core: CoreSettings = CoreSettings()
    state_dir: Path = Path("/var/lib/energy-agent")
    buffer: Buffer = Buffer()
    http: Http = Http()
    history: HistorySettings = HistorySettings()
    ledger: LedgerSettings = LedgerSettings()
    alarms: Alarms = Alarms()
    #: `energy-agent report`: lines, products, tariff, baseline, targets (docs/report.md).
    report: ReportSettings = ReportSettings()
    #: The devices resolved with one profile library: (library, devices).
    _resolved: tuple[ProfileLibrary, tuple[ResolvedDevice, ...]] | None = PrivateAttr(None)

    def resolved(self, library: ProfileLibrary) -> tuple[ResolvedDevice, ...]:
        """Every device with its profile's answers, in config order; worked out once."""
        if self._resolved is None or self._resolved[0] is not library:
            maps: dict[tuple[int, str], RegisterMap] = {}
            self._resolved = (library, tuple(d.resolve(library, maps) for d in self.devices))
        return self._resolved[1]

    @property
    def seal_delay_s(self) -> float:
        """When a ledger period is sealed after its end (see LedgerSettings)."""
        given = self.ledger.seal_delay_s
        return self.core.site_hold_s + SEAL_DEFAULT_MARGIN_S if given is None else given

    def bus(self, bus_id: str) -> Bus:
        for b in self.buses:
            if b.id == bus_id:
                return b
        raise KeyError(bus_id)


class Section(StrEnum):
    AGENT = "agent"
    BRIDGE = "bridge"
