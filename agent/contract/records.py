"""Every record of the contract, field by field: the one table to edit.

A row's order is the payload's key order and the order the bridge writes the
fields in. Adding a field to a record is adding its row here (and a test of the
producer that fills it in); the builders, models, the bridge, Telegraf and the
docs follow (agent/contract/__init__.py; tests/unit/contract/test_contract_one_edit.py
does it for an ``export_kwh``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from types import MappingProxyType

from annotated_types import Interval

from agent.contract.plausible import (
    EF_MAX_KG_PER_KWH,
    GAS_FLOW_MAX_M3_H,
    INTENSITY_MAX_G_PER_KWH,
    PER_UNIT_MAX,
    POWER_MAX_KW,
    SEQ_MAX,
    TCE_MAX_T_PER_KWH,
    UNITS_COUNTER_MAX,
    UNITS_MAX_PER_H,
    VALUE_RANGES,
    WINDOW_HOURS,
    PerHour,
    Range,
)
from agent.contract.schema import Field, JsonType, Record, Store
from agent.contract.vocab import ID, QUANTITY_VOCAB, WINDOW_VOCAB, Carrier, Correction, Quality
from drivers.quantities import Quantity

INTEGER, NUMBER, STRING = JsonType.INTEGER, JsonType.NUMBER, JsonType.STRING
OBJECT, ARRAY = JsonType.OBJECT, JsonType.ARRAY

#: The largest ``ts``: far inside int64, and a float64 holds every such integer.
TS_MAX_MS = 10**14

#: An interval's energy at the power ceiling: the scale of every per-hour bound.
_E = PerHour(POWER_MAX_KW)

TS = Field(
    "ts",
    INTEGER,
    "Unix ms, UTC; an energy or intensity record's is its interval's end",
    unit="ms",
    store=Store.TIME,
    limits=Interval(ge=0, le=TS_MAX_MS),
)

GATEWAY_STATUS = Record(
    "gateway status",
    (
        Field(
            "state",
            STRING,
            "`offline` is also the gateway's last will",
            choices=("online", "offline"),
            column="up",
            codes=MappingProxyType({"online": 1, "offline": 0}),
        ),
        TS,
        Field("version", STRING, "the agent's version", store=Store.NOT_STORED),
    ),
)

DEVICE_STATUS = Record(
    "device status",
    (
        Field(
            "state",
            STRING,
            "whether the last poll was answered",
            choices=("ok", "error"),
            column="up",
            codes=MappingProxyType({"ok": 1, "error": 0}),
        ),
        Field(
            "error",
            STRING,
            "why the last poll failed",
            nullable=True,
            store=Store.NOT_STORED,
        ),
        TS,
    ),
)

MEASUREMENTS = Record(
    "measurements",
    (
        TS,
        Field(
            "seq",
            INTEGER,
            "the device's poll counter: a gap is a lost poll",
            limits=Interval(ge=0, le=SEQ_MAX),
        ),
        Field(
            "values",
            OBJECT,
            "what the meter read; null: not available or implausible",
            keys=QUANTITY_VOCAB,
            items=NUMBER,
            items_nullable=True,
            key_ranges=VALUE_RANGES,
            store=Store.KEYS_AS_FIELDS,
        ),
        Field(
            "implausible",
            ARRAY,
            "the quantities nulled for a reading outside their plausible range",
            when="a value outside its plausible range was nulled",
            keys=QUANTITY_VOCAB,
            items=STRING,
            store=Store.NOT_STORED,
        ),
    ),
)

#: When the coverage fields and ``rev`` are present: agents before them sent neither,
#: and a bridge takes their records as they are.
_COVERAGE = "the agent reports coverage"

ENERGY = Record(
    "energy",
    (
        TS,
        Field(
            "interval_s",
            INTEGER,
            "the interval's length",
            unit="s",
            limits=Interval(gt=0, le=86400),
        ),
        Field(
            "carrier",
            STRING,
            "what the device meters",
            choices=tuple(c.value for c in Carrier),
            store=Store.TAG,
        ),
        Field(
            "energy_kwh",
            NUMBER,
            "energy in the interval (gas: its energy content; production: 0)",
            unit="kWh",
            plausible=(0.0, _E),
        ),
        Field(
            "export_kwh",
            NUMBER,
            "energy exported in the interval (its export counter, or its active power"
            " integrated where negative; not in energy_kwh, no CO2)",
            unit="kWh",
            when="an electricity meter with an export counter, or counted by its power",
            plausible=(0.0, _E),
        ),
        Field(
            "co2_kg",
            NUMBER,
            "CO2 of that energy at the interval's emission factor",
            unit="kg",
            plausible=(0.0, PerHour(POWER_MAX_KW, EF_MAX_KG_PER_KWH)),
        ),
        Field(
            "avg_power_kw",
            NUMBER,
            "energy_kwh over the interval",
            unit="kW",
            plausible=(0.0, POWER_MAX_KW),
        ),
        Field(
            "ef_kg_per_kwh",
            NUMBER,
            "the emission factor used; null for production",
            unit="kg/kWh",
            nullable=True,
            plausible=(0.0, EF_MAX_KG_PER_KWH),
        ),
        Field(
            "quality",
            STRING,
            "how the number came about (docs/core.md)",
            choices=tuple(q.value for q in Quality),
            store=Store.TAG,
        ),
        Field(
            "measured_share",
            NUMBER,
            "share of the interval measured by readings at the normal polling rate",
            when=_COVERAGE,
            plausible=(0.0, 1.0),
        ),
        Field(
            "interpolated_share",
            NUMBER,
            "share spread across a polling gap",
            when=_COVERAGE,
            plausible=(0.0, 1.0),
        ),
        Field(
            "missing_share",
            NUMBER,
            "share with no data (before the first reading, a power gap, a reset)",
            when=_COVERAGE,
            plausible=(0.0, 1.0),
        ),
        Field(
            "volume_m3",
            NUMBER,
            "gas volume in the interval",
            unit="m3",
            nullable=True,
            when="natural gas",
            plausible=(0.0, PerHour(GAS_FLOW_MAX_M3_H)),
        ),
        Field(
            "units",
            NUMBER,
            "units produced in the interval",
            nullable=True,
            when="production",
            plausible=(0.0, PerHour(UNITS_MAX_PER_H)),
        ),
        Field(
            "unmetered_kwh",
            NUMBER,
            "own energy minus the children's; null unless it and every child covered the"
            " whole interval",
            unit="kWh",
            nullable=True,
            when="a meter with children",
            plausible=(-_E, _E),
        ),
        # The device's place in the meter tree, as tags: a site total or peak sums
        # `root == "true"` only (a child's energy is inside its parent's). Optional: an
        # older gateway's records have neither, and are not counted as roots.
        Field(
            "root",
            STRING,
            "`true`: the device has no parent (its energy is part of the site's total)",
            when="the agent writes it (older agents leave it out)",
            choices=("true", "false"),
            store=Store.TAG,
        ),
        Field(
            "parent",
            STRING,
            "the id of the meter this one is inside of",
            when="a meter with a parent",
            pattern=ID,
            store=Store.TAG,
        ),
        Field(
            "incomplete_children",
            INTEGER,
            "children that did not cover the whole interval (late, silent, started in it);"
            " unmetered_kwh is null unless 0 and the meter covered it itself",
            when="a meter with children (agents that report coverage)",
            limits=Interval(ge=0, le=SEQ_MAX),
        ),
    ),
    span="interval_s",
)

WINDOW = Record(
    "intensity window",
    (
        Field(
            "energy_kwh",
            NUMBER,
            "the root meters' energy (electricity and gas)",
            unit="kWh",
            plausible=(0.0, _E),
        ),
        Field(
            "net_import_kwh",
            NUMBER,
            "the root electricity meters' import minus their export (negative: the site"
            " exported more); energy_kwh, co2_kg and the intensities stay import only",
            unit="kWh",
            when="a site with a meter that can export, for windows the agent has kept"
            " export sums for (not those begun before an upgrade to them)",
            plausible=(-_E, _E),
        ),
        Field(
            "co2_kg",
            NUMBER,
            "its CO2, each interval at its own factor",
            unit="kg",
            plausible=(0.0, PerHour(POWER_MAX_KW, EF_MAX_KG_PER_KWH)),
        ),
        Field(
            "output_units",
            NUMBER,
            "units produced",
            plausible=(0.0, PerHour(UNITS_MAX_PER_H)),
        ),
        Field(
            "kwh_per_unit",
            NUMBER,
            "energy per unit; null without output",
            unit="kWh",
            nullable=True,
            plausible=(0.0, PER_UNIT_MAX),
        ),
        Field(
            "kgco2_per_unit",
            NUMBER,
            "CO2 per unit; null without output",
            unit="kg",
            nullable=True,
            plausible=(0.0, PER_UNIT_MAX),
        ),
        Field(
            "intensity_g_per_kwh",
            NUMBER,
            "CO2 per kWh; null without energy",
            unit="g/kWh",
            nullable=True,
            plausible=(0.0, INTENSITY_MAX_G_PER_KWH),
        ),
        Field(
            "tce",
            NUMBER,
            "tonnes of standard coal equivalent",
            unit="t",
            plausible=(0.0, PerHour(POWER_MAX_KW, TCE_MAX_T_PER_KWH)),
        ),
        Field(
            "measured_share",
            NUMBER,
            "share of the window's time, over the counted meters, that readings measured",
            plausible=(0.0, 1.0),
            when=_COVERAGE,
        ),
        Field(
            "interpolated_share",
            NUMBER,
            "share interpolated across a gap in the readings",
            plausible=(0.0, 1.0),
            when=_COVERAGE,
        ),
        Field(
            "missing_share",
            NUMBER,
            "share with no data (yet): 1 - measured - interpolated",
            plausible=(0.0, 1.0),
            when=_COVERAGE,
        ),
        Field(
            "missing_count",
            INTEGER,
            "how many counted meters miss some of the window",
            limits=Interval(ge=0, le=SEQ_MAX),
            when=_COVERAGE,
        ),
        Field(
            "missing_devices",
            ARRAY,
            "the first five of them, by device id",
            items=STRING,
            pattern=ID,
            store=Store.NOT_STORED,
            when=_COVERAGE,
        ),
    ),
)

INTENSITY = Record(
    "intensity",
    (
        TS,
        Field(
            "rev",
            INTEGER,
            "0 when first published; one more each time late data changed it (same ts)",
            limits=Interval(ge=0, le=SEQ_MAX),
            store=Store.NOT_STORED,
            when=_COVERAGE,
        ),
        Field(
            "windows",
            OBJECT,
            "the site's rolling and calendar windows, root meters only",
            keys=WINDOW_VOCAB,
            items=WINDOW,
            key_hours=WINDOW_HOURS,
            store=Store.KEYS_AS_POINTS,
            column="window",
        ),
    ),
)


#: The largest glitch limit a config may set (``max_power_kw`` and its kin, le=1e15).
LIMIT_MAX_PER_H = 1e15
#: What the core counts a device by (its channel): the quantity of an event's value.
COUNTED = (
    Quantity.ENERGY_IMPORT_KWH,
    Quantity.ENERGY_EXPORT_KWH,
    Quantity.GAS_VOLUME_M3,
    Quantity.OUTPUT_UNITS,
    Quantity.ACTIVE_POWER_KW,
)

EVENTS = Record(
    "events",
    (
        dataclasses.replace(
            TS, meaning="Unix ms, UTC: the reading's; a reset's or rebaseline's, the new baseline's"
        ),
        Field(
            "event",
            STRING,
            "what the core did (docs/core.md, corrections)",
            choices=tuple(c.value for c in Correction),
            store=Store.TAG,
        ),
        Field(
            "quantity",
            STRING,
            "what the device is counted by: the unit of `value`",
            choices=tuple(q.value for q in COUNTED),
            store=Store.TAG,
        ),
        Field(
            "value",
            NUMBER,
            "the reading (reset, rebaseline: the new baseline); null outside the "
            "quantity's plausible range",
            nullable=True,
            plausible=(-POWER_MAX_KW, UNITS_COUNTER_MAX),
        ),
        Field(
            "limit_per_h",
            NUMBER,
            "the glitch limit in force: the quantity's unit per hour (kW for kWh and for power)",
            plausible=(0.0, LIMIT_MAX_PER_H),
        ),
    ),
)


# --- alarms (README, "Alarms") ------------------------------------------------------------

#: What an alarm rule watches: its ``condition`` (agent/config/alarms.py has one model each).
CONDITIONS = (
    "offline",
    "power_above",
    "power_below",
    "coverage_below",
    "outbox_age",
    "ledger_failure",
)
_ALARM_MS = Interval(ge=0, le=TS_MAX_MS)
#: A measured value or a limit, in kW (an exporting meter's is negative), % or minutes.
_ALARM_RANGE = (-POWER_MAX_KW, LIMIT_MAX_PER_H)

_ALARM_ID = (
    Field(
        "rule", STRING, "the rule's id (config `alarms.rules[].id`)", pattern=ID, store=Store.TAG
    ),
    Field(
        "condition",
        STRING,
        "what the rule watches",
        choices=CONDITIONS,
        store=Store.TAG,
    ),
    Field(
        "subject",
        STRING,
        "what it is about: a device's id, a line's (the rule's id), `site`, `outbox`, `ledger`",
        pattern=ID,
        store=Store.TAG,
    ),
)
_ALARM_VALUES = (
    Field(
        "value",
        NUMBER,
        "what was measured, in the condition's unit (kW; %; minutes); null: nothing to show",
        nullable=True,
        plausible=_ALARM_RANGE,
    ),
    Field(
        "limit", NUMBER, "the rule's limit, in the same unit", nullable=True, plausible=_ALARM_RANGE
    ),
    Field(
        "since_ms",
        INTEGER,
        "when the condition began (a meter's last answer, the oldest waiting message, "
        "the interval's end, or the first bad reading)",
        unit="ms",
        limits=_ALARM_MS,
    ),
)

#: One raised alarm in an alarm message's ``active`` list.
ACTIVE_ALARM = Record("active alarm", (*_ALARM_ID, *_ALARM_VALUES))

ALARM = Record(
    "alarm",
    (
        dataclasses.replace(TS, meaning="Unix ms, UTC: when the alarm was raised or cleared"),
        *_ALARM_ID,
        Field(
            "state",
            STRING,
            "the change this message reports",
            choices=("raised", "cleared"),
            column="raised",
            codes=MappingProxyType({"raised": 1, "cleared": 0}),
        ),
        *_ALARM_VALUES,
        Field("text", STRING, "the alarm in English words", store=Store.NOT_STORED),
        Field(
            "active",
            ARRAY,
            "every alarm raised after this change (the first 100, in the config's rule "
            "order): a retained message tells a new subscriber what is raised",
            items=ACTIVE_ALARM,
            store=Store.NOT_STORED,
        ),
    ),
)


# --- the ledger (docs/ledger.md) ----------------------------------------------------------

#: Lowercase hex of a SHA-256; standard base64 of an Ed25519 public key (32 bytes) and of
#: a signature (64 bytes); a key id: the first 16 hex digits of the key's SHA-256.
SHA256_HEX = r"^[0-9a-f]{64}$"
KEY_B64 = r"^[A-Za-z0-9+/]{43}=$"
SIG_B64 = r"^[A-Za-z0-9+/]{86}==$"
KEY_ID = r"^[0-9a-f]{16}$"
_MS = Interval(ge=0, le=TS_MAX_MS)
_COUNT = Interval(ge=0, le=SEQ_MAX)
_NOT = Store.NOT_STORED

DIGEST = Record(
    "ledger digest",
    (
        Field("records", INTEGER, "the number of canonical lines hashed", limits=_COUNT),
        Field("hash", STRING, "SHA-256 of the lines, each with a newline", pattern=SHA256_HEX),
    ),
)

COVER = Record(
    "ledger cover",
    (
        Field("start", INTEGER, "the period's start", unit="ms", limits=_MS),
        Field("end", INTEGER, "the period's end", unit="ms", limits=_MS),
        Field("energy", OBJECT, "the period's device energy records", items=DIGEST),
        Field("site", OBJECT, "the period's other records, every revision", items=DIGEST),
    ),
)

CERT = Record(
    "ledger key certificate",
    (
        Field("seq", INTEGER, "the entry that announced the key", limits=_COUNT),
        Field("key", STRING, "the new public key", pattern=KEY_B64),
        Field("key_id", STRING, "its id", pattern=KEY_ID),
        Field("signer", STRING, "the id of the key it replaces, which signed this", pattern=KEY_ID),
        Field("sig", STRING, "Ed25519 signature by the signer", pattern=SIG_B64),
    ),
)

#: A ledger entry. Its database point (measurement ``ledger``) holds more than its rows
#: say: fields the bridge derives and its verdict (agent/ledger/points.py, docs/ledger.md).
LEDGER = Record(
    "ledger entry",
    (
        Field("version", INTEGER, "the entry's format", limits=Interval(ge=1, le=1), store=_NOT),
        Field("site", STRING, "the site id (the topic's)", pattern=ID, store=_NOT),
        Field("gateway", STRING, "the gateway id (the topic's)", pattern=ID, store=_NOT),
        Field("seq", INTEGER, "the entry's number: 0 first, no gaps", limits=_COUNT),
        Field("period_start", INTEGER, "the start of the period it seals", unit="ms", limits=_MS),
        Field(
            "period_end",
            INTEGER,
            "the end of that period: the entry's time",
            unit="ms",
            store=Store.TIME,
            limits=_MS,
        ),
        Field(
            "covers",
            ARRAY,
            "that period's records and older periods' again, each a full set",
            items=COVER,
            store=_NOT,
        ),
        Field("prev", STRING, "SHA-256 of the previous entry", pattern=SHA256_HEX, store=_NOT),
        Field("key", STRING, "the public key that signed it", pattern=KEY_B64, store=_NOT),
        Field("key_id", STRING, "that key's id", pattern=KEY_ID, store=_NOT),
        Field("certs", ARRAY, "how each key took over", items=CERT, store=_NOT),
        Field(
            "next_key",
            OBJECT,
            "the key that signs from the next entry on",
            items=CERT,
            when="a key rotation",
            store=_NOT,
        ),
        Field("sealed_ms", INTEGER, "when it was sealed", unit="ms", limits=_MS, store=_NOT),
        Field("sig", STRING, "Ed25519 over the entry without sig", pattern=SIG_B64, store=_NOT),
    ),
)


@functools.lru_cache(maxsize=64)
def energy_ranges(interval_s: int) -> Mapping[str, Range]:
    """An energy record's ranges scale with its interval (an average power, not a total)."""
    return ENERGY.ranges_at(interval_s / 3600)


#: Each window's ranges, by window name.
WINDOW_RANGES: Mapping[str, Mapping[str, Range]] = MappingProxyType(
    {w: WINDOW.ranges_at(h) for w, h in WINDOW_HOURS.items()}
)
