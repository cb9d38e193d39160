"""The contract room: the one definition of what the agent publishes.

Message kinds (topic, scope, retain, QoS, outbox class, InfluxDB measurement)
are in :mod:`~agent.contract.kinds`; every record's fields, as rows of data, in
:mod:`~agent.contract.records`; the words (carriers, qualities, windows,
quantities, ids) in :mod:`~agent.contract.vocab`; plausible ranges in
:mod:`~agent.contract.plausible`. Made from them: the payload builders
(:mod:`~agent.contract.build`), the bridge's pydantic models
(:mod:`~agent.contract.models`), its line protocol and fast path (which read the
rows), the Telegraf configuration (``python -m agent.contract.telegraf``) and
the docs' tables (``python -m agent.contract.docs``).

A field: one row in its record in records.py (and the test of the producer that
fills it in); then run the two generators. A kind: a :class:`MessageKind`
member and its :class:`KindSpec` in kinds.py, and its record in records.py.
tests/unit/contract/ checks that every row says enough and that the generated
files are current.

Pure data and pure functions: the core, the runtime, the replay and the bridge
import it; it imports nothing of theirs (only drivers' quantity vocabulary).
"""

from agent.contract.build import (
    DIGITS,
    alarm_payload,
    build,
    device_status_payload,
    encode,
    energy_payload,
    event_payload,
    gateway_status_payload,
    intensity_payload,
    measurements_payload,
    num,
    opt,
    ratio,
    window_values,
)
from agent.contract.kinds import (
    KINDS,
    KindSpec,
    Message,
    MessageKind,
    OutboxClass,
    Scope,
    TopicError,
    TopicRef,
    Topics,
    parse_topic,
    subscription_filters,
)
from agent.contract.records import WINDOW_RANGES, energy_ranges
from agent.contract.vocab import (
    DEFAULT_PREFIX,
    ID,
    ID_RX,
    WINDOWS,
    Carrier,
    Correction,
    Quality,
    Window,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DIGITS",
    "ID",
    "ID_RX",
    "KINDS",
    "WINDOWS",
    "WINDOW_RANGES",
    "Carrier",
    "Correction",
    "KindSpec",
    "Message",
    "MessageKind",
    "OutboxClass",
    "Quality",
    "Scope",
    "TopicError",
    "TopicRef",
    "Topics",
    "Window",
    "alarm_payload",
    "build",
    "device_status_payload",
    "encode",
    "energy_payload",
    "energy_ranges",
    "event_payload",
    "gateway_status_payload",
    "intensity_payload",
    "measurements_payload",
    "num",
    "opt",
    "parse_topic",
    "ratio",
    "subscription_filters",
    "window_values",
]
