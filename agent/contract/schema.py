"""How the contract describes a record: each field as a row of data.

A record is a tuple of :class:`Field` rows in the order a payload lists them.
Everything that reads or writes a payload works from these rows: the builder
(:mod:`agent.contract.build`), the pydantic models (:mod:`agent.contract.models`),
the bridge's line protocol and fast path, the Telegraf configuration and the
docs' tables. So a new field is one new row.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from annotated_types import Interval

from agent.contract.plausible import Bounds, PerHour, Range, resolve
from agent.contract.vocab import Vocab


class JsonType(StrEnum):
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    OBJECT = "object"
    ARRAY = "array"


class Store(StrEnum):
    """What InfluxDB gets of a field (docs/influxdb.md)."""

    #: The point's timestamp (ms).
    TIME = "time"
    TAG = "tag"
    #: A field of the point; ``null`` is left out, never written as 0.
    FIELD = "field"
    #: An object whose every non-null entry is a field of the point, named by its key.
    KEYS_AS_FIELDS = "a field per key"
    #: An object whose every entry is a point of its own, its key a tag (``column``).
    KEYS_AS_POINTS = "a point per key"
    #: Stays in MQTT (a retained status's text, a list of names).
    NOT_STORED = "not stored"


@dataclass(frozen=True)
class Field:
    """One field of a record."""

    name: str
    type: JsonType
    #: One line: what the number is, for the docs.
    meaning: str
    unit: str = ""
    #: The value may be JSON ``null``.
    nullable: bool = False
    #: When the key is present, for the docs ("natural gas"); empty: always.
    when: str = ""
    store: Store = Store.FIELD
    #: An integer's bounds; outside is ``invalid`` (a type error, not a reading).
    limits: Interval | None = None
    #: A number's plausible range; outside is ``implausible`` (agent/contract/plausible.py).
    plausible: Bounds | None = None
    #: The values a string may take.
    choices: tuple[str, ...] = ()
    #: An object's keys, or an array's items, are names from this vocabulary.
    keys: Vocab | None = None
    #: What an object's values are: a number, or a record of their own. An object
    #: without ``keys`` whose items are a record *is* that record (fixed keys), as
    #: an array's items may be records too (a ledger entry's covers).
    items: JsonType | Record | None = None
    items_nullable: bool = False
    #: Each key's plausible range (an object of numbers).
    key_ranges: Mapping[str, Range] | None = None
    #: Each key's span in hours (an object of records with per-hour bounds).
    key_hours: Mapping[str, float] | None = None
    #: The name in InfluxDB when it is not ``name``: the tag of KEYS_AS_POINTS, status's ``up``.
    column: str = ""
    #: A string written as an integer field (status ``state`` -> ``up``).
    codes: Mapping[str, int] | None = None
    #: A regular expression a string must match whole (a hash, a key, an id).
    pattern: str | None = None

    @property
    def required(self) -> bool:
        return not self.when

    @property
    def db_name(self) -> str:
        return self.column or self.name


@dataclass(frozen=True, eq=False)
class Record:
    """A payload's fields, in the order the payload lists them.

    Compared and hashed by identity: each record is one constant of
    :mod:`agent.contract.records`, and what is worked out from it is cached by it.
    """

    name: str
    fields: tuple[Field, ...]
    #: The integer field giving, in seconds, the time the record covers: its per-hour
    #: bounds scale with it (an energy record's ``interval_s``).
    span: str | None = None

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a field is listed twice")
        if self.span is not None and self.span not in names:
            raise ValueError(f"{self.name}: span {self.span!r} is not a field")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def time(self) -> Field:
        """The field that is the point's time (``ts``; a ledger entry's ``period_end``)."""
        for f in self.fields:
            if f.store is Store.TIME:
                return f
        raise KeyError(f"{self.name} has no time field")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    def stored(self, *types: JsonType) -> tuple[Field, ...]:
        """The fields written as InfluxDB fields of the point, optionally of these types."""
        return tuple(
            f for f in self.fields if f.store is Store.FIELD and (not types or f.type in types)
        )

    @property
    def resolves_own_ranges(self) -> bool:
        """Its ranges are fixed or scale with its own span; otherwise they scale with a
        span its parent gives (an intensity window's hours)."""
        return self.span is not None or not any(
            isinstance(b, PerHour) for f in self.fields if f.plausible for b in f.plausible
        )

    def ranges_at(self, hours: float | None) -> Mapping[str, Range]:
        """Each number's plausible range for a record covering ``hours``."""
        return _ranges(self, hours)


@functools.lru_cache(maxsize=256)
def _ranges(record: Record, hours: float | None) -> Mapping[str, Range]:
    return MappingProxyType(
        {f.name: resolve(f.plausible, hours) for f in record.fields if f.plausible}
    )
