"""Load a config file and report every problem with its path, line and fix.

The order: YAML syntax (with duplicate keys), ``${ENV}`` expansion, the
pydantic models, then cross-references that need the whole document (bus
names, profiles, parents, unit ids). Cross-references are checked on the raw
data too, so one run of ``check`` lists every problem, not the first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config.alarms import alarm_problems
from agent.config.bridge import BridgeConfig, bridge_config
from agent.config.bridge import load_bridge_config as load_bridge_config
from agent.config.bridge import parse_bridge_config as parse_bridge_config
from agent.config.document import ConfigError as ConfigError
from agent.config.document import (
    dedupe,
    expand_env,
    parse_document,
    read_config_text,
    referenced_files,
)
from agent.config.kinds import kind_of, nothing_to_count
from agent.config.models import (
    ID_RX,
    SEAL_DEFAULT_MARGIN_S,
    SEAL_MIN_MARGIN_S,
    SHARED_REGISTERS,
    AgentConfig,
)
from confdoc.errors import Problem
from confdoc.yamldoc import YamlDocument, validation_problems
from drivers.errors import ProfileError
from drivers.profile import (
    DeviceKind,
    Profile,
    ProfileLibrary,
    locate_problems,
    unknown_profile_message,
)
from drivers.quantities import Quantity


def parse_config(
    text: str,
    file: str = "",
    *,
    env: Mapping[str, str] | None = None,
    profiles: ProfileLibrary | None = None,
) -> AgentConfig:
    """Validate a config document; raise ConfigError with every problem."""
    return agent_config(*parse_document(text, file), env=env, profiles=profiles)


def agent_config(
    doc: YamlDocument,
    problems: list[Problem],
    *,
    env: Mapping[str, str] | None = None,
    profiles: ProfileLibrary | None = None,
    files: bool = False,
) -> AgentConfig:
    """The model of a parsed document; with ``files``, also the files it names (secrets).

    Files are checked once the document is valid: a path in a broken section may
    not be the one that will be used.
    """
    problems = problems + expand_env(doc, os.environ if env is None else env)
    library = profiles or ProfileLibrary()
    config: AgentConfig | None = None
    try:
        config = AgentConfig.model_validate(doc.data, context={SHARED_REGISTERS: {}})
    except ValidationError as exc:
        problems += locate_problems(doc, validation_problems(doc, exc))
    problems += cross_reference_problems(doc, library)
    if problems:
        raise ConfigError(dedupe(problems))
    assert config is not None
    if files:
        referenced_files(doc, config)
    return config


def load_config(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    profiles: ProfileLibrary | None = None,
    files: bool = True,
) -> AgentConfig:
    """`run -c FILE`: read and validate, and the files it names unless ``files=False``."""
    doc, problems = parse_document(read_config_text(path), str(Path(path)))
    return agent_config(doc, problems, env=env, profiles=profiles, files=files)


def _items(data: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    seq = data.get(key) if isinstance(data, dict) else None
    if not isinstance(seq, list):
        return []
    return [(i, d) for i, d in enumerate(seq) if isinstance(d, dict)]


_KINDS = {k.value: k for k in DeviceKind}


def _once(
    doc: YamlDocument, seen: dict[str, int], section: str, i: int, ident: str
) -> list[Problem]:
    """Record ``ident`` as the id of ``section[i]``; a problem if an earlier entry has it."""
    first = seen.setdefault(ident, i)
    if first == i:
        return []
    kind = {"buses": "bus", "devices": "device"}[section]
    return [
        doc.problem(
            (section, i, "id"), f"{kind} id '{ident}' is used twice (also {section}[{first}])"
        )
    ]


def cross_reference_problems(doc: YamlDocument, library: ProfileLibrary) -> list[Problem]:
    data = doc.data
    out: list[Problem] = []
    buses = _items(data, "buses")
    devices = _items(data, "devices")
    bus_ids: dict[str, int] = {}
    serial_buses: set[str] = set()
    for i, bus_data in buses:
        bid = bus_data.get("id")
        if isinstance(bid, str):
            out += _once(doc, bus_ids, "buses", i, bid)
            if "rtu" in bus_data or "rtu_over_tcp" in bus_data:
                serial_buses.add(bid)
    dev_ids: dict[str, int] = {}
    units: dict[tuple[str, int], int] = {}
    parents: dict[str, str] = {}
    known_profiles = library.ids()
    for i, dev in devices:
        did = dev.get("id")
        if isinstance(did, str):
            out += _once(doc, dev_ids, "devices", i, did)
        bus = dev.get("bus")
        if isinstance(bus, str) and ID_RX.match(bus) and bus not in bus_ids:
            known = ", ".join(sorted(bus_ids)) or "none defined"
            out.append(doc.problem(("devices", i, "bus"), f"unknown bus '{bus}' (buses: {known})"))
        out += _unit_problems(doc, i, dev, units, serial_buses)
        profile = dev.get("profile")
        if isinstance(profile, str):
            out += _profile_problems(doc, i, dev, library, known_profiles)
        regs = dev.get("registers")
        if isinstance(regs, list) and profile is None:
            out += _inline_problems(doc, i, dev, regs)
        parent = dev.get("parent")
        if isinstance(parent, str) and isinstance(did, str):
            parents[did] = parent
    for i, dev in devices:
        out += _parent_problems(doc, i, dev, dev_ids, parents)
    out += _seal_delay_problems(doc)
    out += alarm_problems(doc, dev_ids)
    out += _report_problems(doc, dev_ids)
    return out


def _report_problems(doc: YamlDocument, dev_ids: dict[str, int]) -> list[Problem]:
    """A line or product that names a device the config does not have."""
    data = doc.data if isinstance(doc.data, dict) else {}
    report = data.get("report")
    out: list[Problem] = []
    if not isinstance(report, dict):
        return out
    for section in ("lines", "products"):
        for i, group in _items(report, section):
            for field in ("devices", "counters"):
                ids = group.get(field)
                if not isinstance(ids, list):
                    continue
                for j, did in enumerate(ids):
                    if isinstance(did, str) and ID_RX.match(did) and did not in dev_ids:
                        out.append(
                            doc.problem(
                                ("report", section, i, field, j),
                                f"unknown device '{did}' (it must be the id of a device)",
                            )
                        )
    return out


def _seal_delay_problems(doc: YamlDocument) -> list[Problem]:
    """The ledger seals a period after the site hold, or its entries miss late records."""
    data = doc.data if isinstance(doc.data, dict) else {}
    ledger, core = data.get("ledger"), data.get("core")
    delay = ledger.get("seal_delay_s") if isinstance(ledger, dict) else None
    hold = core.get("site_hold_s", 120) if isinstance(core, dict) else 120
    numbers = (int, float)
    if not isinstance(delay, numbers) or not isinstance(hold, numbers):
        return []
    if isinstance(delay, bool) or delay >= hold + SEAL_MIN_MARGIN_S:
        return []
    return [
        doc.problem(
            ("ledger", "seal_delay_s"),
            f"{delay} s is too soon: a period's records may still come up to core.site_hold_s "
            f"({hold} s) after its end; give at least {hold + SEAL_MIN_MARGIN_S:g} or leave it "
            f"out (default: site_hold_s + {SEAL_DEFAULT_MARGIN_S:g})",
        )
    ]


def _unit_problems(
    doc: YamlDocument,
    i: int,
    dev: dict[str, Any],
    units: dict[tuple[str, int], int],
    serial_buses: set[str],
) -> list[Problem]:
    """A unit id taken twice on one bus, or out of range on a serial line; ``units`` learns it."""
    bus, unit = dev.get("bus"), dev.get("unit")
    if not isinstance(bus, str) or not isinstance(unit, int) or isinstance(unit, bool):
        return []
    out = []
    if (bus, unit) in units:
        out.append(
            doc.problem(
                ("devices", i, "unit"),
                f"unit {unit} on bus '{bus}' is already "
                f"devices[{units[(bus, unit)]}]; each meter needs its own"
                " unit id",
            )
        )
    units.setdefault((bus, unit), i)
    if bus in serial_buses and not 1 <= unit <= 247:
        out.append(
            doc.problem(("devices", i, "unit"), f"unit {unit} is not a valid RTU address (1..247)")
        )
    return out


def _profile_problems(
    doc: YamlDocument, i: int, dev: dict[str, Any], library: ProfileLibrary, known: list[str]
) -> list[Problem]:
    """The device's profile is unknown or broken, or nothing in it counts the device."""
    profile = dev["profile"]
    at = ("devices", i, "profile")
    if profile not in known:
        return [doc.problem(at, unknown_profile_message(profile, known))]
    try:
        prof = library.get(profile)
    except ProfileError as exc:
        return [doc.problem(at, f"built-in profile '{profile}' is broken: {exc}")]
    return _uncounted(doc, at, dev, prof, set(prof.quantities))


def _inline_problems(
    doc: YamlDocument, i: int, dev: dict[str, Any], regs: list[Any]
) -> list[Problem]:
    """Nothing in the inline registers counts the device (the model judges each register)."""
    named = set()
    for r in regs:
        if isinstance(r, dict) and r.get("quantity") in Quantity.__members__.values():
            named.add(Quantity(r["quantity"]))
    if not named:
        return []
    return _uncounted(doc, ("devices", i, "registers"), dev, None, named)


def _uncounted(
    doc: YamlDocument,
    at: tuple[str | int, ...],
    dev: dict[str, Any],
    profile: Profile | None,
    quantities: set[Quantity],
) -> list[Problem]:
    """The rule of :mod:`agent.config.kinds`, on raw data: a problem if nothing counts ``dev``."""
    declared = dev.get("kind")
    if declared is not None and not (isinstance(declared, str) and declared in _KINDS):
        return []  # the model says what is wrong with the kind
    kind = kind_of(None if declared is None else _KINDS[declared], profile)
    missing = nothing_to_count(kind, quantities)
    return [doc.problem(at, missing)] if missing else []


def _parent_problems(
    doc: YamlDocument, i: int, dev: dict[str, Any], dev_ids: dict[str, int], parents: dict[str, str]
) -> list[Problem]:
    """The parent is the device itself, unknown, or on a loop back to the device."""
    did, parent = dev.get("id"), dev.get("parent")
    if not isinstance(parent, str) or not isinstance(did, str):
        return []
    if parent == did:
        return [doc.problem(("devices", i, "parent"), "a device cannot be its own parent")]
    if parent not in dev_ids:
        return [
            doc.problem(
                ("devices", i, "parent"),
                f"unknown parent '{parent}' (it must be the id of another device)",
            )
        ]
    chain = [did]
    cur: str | None = parent
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = parents.get(cur)
    # Report the devices on a loop; one whose chain only runs into a loop
    # elsewhere is not wrong itself, and is fixed when that loop is.
    if cur != did:
        return []
    return [
        doc.problem(
            ("devices", i, "parent"),
            f"parent chain of '{did}' loops back to itself "
            f"({' -> '.join([*chain, did])}); a meter tree must end at a root",
        )
    ]


def is_bridge_config(data: object) -> bool:
    """A bridge config has ``influx:`` or ``bridge:`` and no ``devices:``."""
    return (
        isinstance(data, dict) and "devices" not in data and ("influx" in data or "bridge" in data)
    )


def load_any_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, files: bool = True
) -> AgentConfig | BridgeConfig:
    """`check -c FILE`: the gateway's or the bridge's config, told apart by its sections.

    The same loading as `run` and `bridge` (``files`` included): what passes here
    starts there.
    """
    doc, problems = parse_document(read_config_text(path), str(Path(path)))
    if is_bridge_config(doc.data):
        return bridge_config(doc, problems, env=env, files=files)
    return agent_config(doc, problems, env=env, files=files)


def run_refusal(config: AgentConfig) -> str | None:
    """Why `run` refuses a valid config, or None: `check` warns with the same words."""
    if config.mqtt is None:
        return (
            "`run` needs an `mqtt:` section (host, port, credentials); without one the "
            "config serves `replay` only"
        )
    return None
