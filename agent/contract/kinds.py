"""The kinds of message: topic, scope, retain, QoS, outbox class, InfluxDB measurement.

:data:`KINDS` is the one list. Topics are built (:class:`Topics`) and read back
(:func:`parse_topic`, the bridge) from it; a :class:`Message` carries its kind
from where it is built, so nobody takes a topic apart to learn what it is.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from agent.contract import records
from agent.contract.schema import Record
from agent.contract.vocab import DEFAULT_PREFIX, ID, ID_RX


class MessageKind(StrEnum):
    GATEWAY_STATUS = "gateway_status"
    DEVICE_STATUS = "device_status"
    MEASUREMENTS = "measurements"
    ENERGY = "energy"
    INTENSITY = "intensity"
    EVENTS = "events"
    LEDGER = "ledger"
    ALARM = "alarm"

    @property
    def spec(self) -> KindSpec:
        return KINDS[self]


class Scope(StrEnum):
    """Whose message it is: ``{site}/{gateway}/...`` or ``{site}/{gateway}/{device}/...``."""

    GATEWAY = "gateway"
    DEVICE = "device"


class OutboxClass(StrEnum):
    """What the gateway's outbox does with a kind when it is full (agent/runtime/outbox
    ``Kind`` has a member of each name, and decides the drop order)."""

    MEASUREMENT = "measurement"
    INTENSITY = "intensity"
    STATUS = "status"
    ENERGY = "energy"
    LEDGER = "ledger"


@dataclass(frozen=True)
class KindSpec:
    #: The topic's last level.
    suffix: str
    scope: Scope
    record: Record
    #: The InfluxDB measurement its points go to.
    measurement: str
    outbox: OutboxClass
    #: For the docs: how often one is published.
    published: str
    #: For the docs: what one InfluxDB point stands for.
    point: str
    retained: bool = False
    #: The gateway's MQTT last will is a message of this kind.
    will: bool = False
    qos: int = 1
    #: Telegraf writes it too. Not the ledger: its point holds fields only the bridge
    #: derives, and only the bridge verifies entries.
    telegraf: bool = True
    #: For the docs: the fields its point holds that are worked out, not copied.
    derived: str = ""


KINDS: Mapping[MessageKind, KindSpec] = MappingProxyType(
    {
        MessageKind.GATEWAY_STATUS: KindSpec(
            "status",
            Scope.GATEWAY,
            records.GATEWAY_STATUS,
            "status",
            OutboxClass.STATUS,
            published="on connect and at exit",
            point="status message",
            retained=True,
            will=True,
        ),
        MessageKind.DEVICE_STATUS: KindSpec(
            "status",
            Scope.DEVICE,
            records.DEVICE_STATUS,
            "status",
            OutboxClass.STATUS,
            published="when the device's state changes",
            point="status message",
            retained=True,
        ),
        MessageKind.MEASUREMENTS: KindSpec(
            "measurements",
            Scope.DEVICE,
            records.MEASUREMENTS,
            "measurements",
            OutboxClass.MEASUREMENT,
            published="one per poll",
            point="poll of a device",
        ),
        MessageKind.ENERGY: KindSpec(
            "energy",
            Scope.DEVICE,
            records.ENERGY,
            "energy",
            OutboxClass.ENERGY,
            published="one per closed interval",
            point="closed interval of a device (`ts` = interval end)",
        ),
        MessageKind.INTENSITY: KindSpec(
            "intensity",
            Scope.GATEWAY,
            records.INTENSITY,
            "intensity",
            OutboxClass.INTENSITY,
            published="one per closed interval, for the site",
            point="site publication and window",
        ),
        MessageKind.EVENTS: KindSpec(
            "events",
            Scope.DEVICE,
            records.EVENTS,
            "events",
            # Kept like energy records: they are the audit trail of what the numbers omit.
            OutboxClass.ENERGY,
            published="one per correction of a device's readings (wrap, glitch, reset, rebaseline)",
            point="correction (`ts` = the reading's, or the new baseline's)",
        ),
        MessageKind.LEDGER: KindSpec(
            "ledger",
            Scope.GATEWAY,
            records.LEDGER,
            "ledger",
            OutboxClass.LEDGER,
            published="one per sealed period (docs/ledger.md)",
            point="ledger entry, at its period's end; later covers and verdicts join it",
            telegraf=False,
            derived="`covers`, `energy_records`, `hash48`, `prev48`, `covered_by` (integers, "
            "from the entry: docs/ledger.md); the bridge's verdict `verified`, `records`, "
            "`reason` (integers)",
        ),
        MessageKind.ALARM: KindSpec(
            "alarms",
            Scope.GATEWAY,
            records.ALARM,
            "alarm",
            # Kept like a status: retained, and the latest one says every raised alarm.
            OutboxClass.STATUS,
            published="when an alarm is raised or cleared (README, Alarms)",
            point="raise or clear of an alarm",
            retained=True,
        ),
    }
)


def by_measurement() -> dict[str, list[KindSpec]]:
    """The kinds of each InfluxDB measurement (status: both statuses), in the contract's order."""
    out: dict[str, list[KindSpec]] = {}
    for spec in KINDS.values():
        out.setdefault(spec.measurement, []).append(spec)
    return out


#: A topic's last level to its kind, per scope: what the bridge routes on.
_BY_SUFFIX: Mapping[Scope, Mapping[str, MessageKind]] = MappingProxyType(
    {s: {spec.suffix: k for k, spec in KINDS.items() if spec.scope is s} for s in Scope}
)
#: What stands between the prefix and the suffix, per scope.
_SHAPES = {Scope.GATEWAY: ("site", "gateway"), Scope.DEVICE: ("site", "gateway", "device")}
_SCOPE_OF_LEVELS = {len(levels) + 1: s for s, levels in _SHAPES.items()}
_EXPECTED = " or ".join(
    "/".join(f"{{{level}}}" for level in _SHAPES[s]) + "/" + "|".join(_BY_SUFFIX[s]) for s in Scope
)


class Message(NamedTuple):
    """One message as built: its kind, topic and payload (and its device, if any).

    A named tuple: immutable, and the cheapest object to make (a replay makes one
    per reading)."""

    kind: MessageKind
    topic: str
    payload: dict[str, Any]
    device: str | None = None
    #: The payload already written as compact JSON, when the producer wrote it so
    #: (replay's bulk lane, agent/core/bulk.py: then ``payload`` is empty and only a
    #: writer of JSON lines takes such messages).
    text: str | None = None

    def as_json_line(self) -> dict[str, Any]:
        return {"topic": self.topic, "payload": self.payload}

    @classmethod
    def from_json_line(cls, line: Mapping[str, Any], prefix: str = DEFAULT_PREFIX) -> Message:
        """A message read back from `replay`'s output: its topic says what it is."""
        ref = parse_topic(line["topic"], prefix)
        return cls(ref.kind, line["topic"], line["payload"], ref.device)


@dataclass(frozen=True)
class Topics:
    """``{prefix}/{site}/{gateway}/...`` for one gateway."""

    prefix: str
    site: str
    gateway: str

    @functools.cached_property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    def topic(self, kind: MessageKind, device: str | None = None) -> str:
        spec = KINDS[kind]
        if (device is None) != (spec.scope is Scope.GATEWAY):
            raise ValueError(f"a {kind} topic is a {spec.scope}'s, device={device!r}")
        if device is None:
            return f"{self.base}/{spec.suffix}"
        return f"{self.base}/{device}/{spec.suffix}"

    def message(
        self, kind: MessageKind, payload: dict[str, Any], device: str | None = None
    ) -> Message:
        return Message(kind, self.topic(kind, device), payload, device)


@dataclass(frozen=True)
class TopicRef:
    """A contract topic taken apart: which payload it carries and whose it is."""

    kind: MessageKind
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
    scope = _SCOPE_OF_LEVELS.get(len(parts))
    kind = _BY_SUFFIX[scope].get(parts[-1]) if scope is not None else None
    if scope is None or kind is None:
        raise TopicError(f"unknown topic (expected {_EXPECTED} under the prefix)")
    for name, value in zip(_SHAPES[scope], parts[:-1], strict=True):
        if not ID_RX.fullmatch(value):
            shown = value if len(value) <= 70 else value[:67] + "..."
            raise TopicError(f"{name} id {shown!r} does not match {ID}")
    return TopicRef(kind, parts[0], parts[1], parts[2] if scope is Scope.DEVICE else None)


def subscription_filters(prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """MQTT filters matching exactly the contract's topic shapes (they never overlap)."""
    return tuple(
        "/".join((prefix, *("+" for _ in levels), suffix))
        for scope, levels in _SHAPES.items()
        for suffix in _BY_SUFFIX[scope]
    )
