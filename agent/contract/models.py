"""The pydantic models the bridge validates with, generated from the record tables.

Each field's row gives its type (strict: ``"1.5"`` is not a number), its
bounds, its vocabulary and whether it may be null or absent; a number with a
plausible range gets a validator that refuses it with the reason
``implausible``. What a row cannot say is written here once, by name: a
measurements payload names each implausible quantity once, and only ones
without a value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic import Field as Constraint
from pydantic_core import PydanticCustomError

from agent.contract import records
from agent.contract.kinds import KINDS, MessageKind
from agent.contract.plausible import outside
from agent.contract.schema import Field, JsonType, Record
from agent.contract.vocab import Vocab


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


def _implausible(problems: list[str]) -> PydanticCustomError:
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return PydanticCustomError("implausible", "; ".join(problems[:3]) + more)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise PydanticCustomError("not_finite", "must be a finite number")
    return v


Finite = Annotated[float, AfterValidator(_finite)]


@functools.cache
def _name_in(vocab: Vocab) -> Any:
    """A key (or item) from ``vocab``: a Literal that lists the names, or, for a long
    vocabulary, a check whose error names its source instead."""
    if vocab.listed:
        return Literal[vocab.names]
    names = frozenset(vocab.names)

    def check(key: str) -> str:
        if key not in names:
            shown = key if len(key) <= 70 else key[:67] + "..."
            raise PydanticCustomError(
                "unknown_name",
                "'{key}' is not a " + vocab.noun + " (" + vocab.source + ")",
                {"key": shown},
            )
        return key

    return Annotated[str, AfterValidator(check)]


def _item_type(f: Field) -> Any:
    if isinstance(f.items, Record):
        item: Any = model_of(f.items)
    elif f.items is JsonType.NUMBER:
        item = Finite
    else:
        item = str
    return item | None if f.items_nullable else item


def _annotation(f: Field) -> Any:
    t: Any
    if f.type is JsonType.INTEGER:
        t = Annotated[int, f.limits] if f.limits is not None else int
    elif f.type is JsonType.NUMBER:
        t = Finite
    elif f.type is JsonType.STRING:
        t = Literal[f.choices] if f.choices else str
        if f.pattern is not None:
            t = Annotated[t, Constraint(pattern=f.pattern)]
    elif f.type is JsonType.OBJECT and f.keys is None:
        assert isinstance(f.items, Record), f.name
        t = model_of(f.items)
    elif f.type is JsonType.OBJECT:
        assert f.keys is not None, f.name
        # fail_fast: one error, not one per key (18,000 unknown keys made 22 MB of them).
        t = Annotated[dict[_name_in(f.keys), _item_type(f)], Constraint(fail_fast=True)]  # type: ignore[misc]
    else:
        item = _name_in(f.keys) if f.keys is not None else _item_type(f)
        t = Annotated[list[item], Constraint(fail_fast=True)]  # type: ignore[valid-type]
    return t | None if f.nullable or not f.required else t


# --- plausible ranges --------------------------------------------------------------------


def _span_rule(record: Record) -> Any:
    """Each number against its range for the record's span (an energy record's interval)."""
    span = record.span

    def check(cls: type[BaseModel], v: float | None, info: ValidationInfo) -> float | None:
        given = info.data.get(span) if span is not None else None
        if v is None or info.field_name is None or (span is not None and given is None):
            return v  # no span: its own error is reported instead
        hours = None if given is None else given / 3600
        problem = outside(info.field_name, v, record.ranges_at(hours)[info.field_name])
        if problem:
            suffix = f" for a {given} s interval" if span is not None else ""
            raise _implausible([problem + suffix])
        return v

    names = [f.name for f in record.fields if f.plausible]
    return field_validator(*names)(classmethod(check))


def _keys_rule(f: Field) -> Any:
    """An object's entries against each key's range, or each record against its span."""
    key_ranges, key_hours, items = f.key_ranges, f.key_hours, f.items

    def problems_of(key: str, value: Any) -> list[str | None]:
        if key_ranges is not None:
            return [None if value is None else outside(f"{f.name}.{key}", value, key_ranges[key])]
        assert isinstance(items, Record) and key_hours is not None
        return [
            outside(f"{f.name}.{key}.{name}", v, bounds)
            for name, bounds in items.ranges_at(key_hours[key]).items()
            if (v := getattr(value, name)) is not None
        ]

    def check(cls: type[BaseModel], entries: dict[str, Any]) -> dict[str, Any]:
        problems = [p for k, v in entries.items() for p in problems_of(k, v) if p]
        if problems:
            raise _implausible(problems)
        return entries

    return field_validator(f.name)(classmethod(check))


# --- rules a row cannot state ------------------------------------------------------------


def _named_once_and_null(self: Any) -> Any:
    """``implausible`` names distinct quantities, each one without a value."""
    named = self.implausible or []
    if len(set(named)) != len(named):
        raise ValueError("implausible: a quantity is named twice")
    numbered = [q for q in named if self.values.get(q) is not None]
    if numbered:
        raise ValueError(f"implausible: {numbered[0]} is named but has a value")
    return self


_RULES: dict[Record, dict[str, Any]] = {
    records.MEASUREMENTS: {
        "named_once_and_null": model_validator(mode="after")(_named_once_and_null)
    },
}


# --- the models --------------------------------------------------------------------------


@functools.cache
def model_of(record: Record) -> type[Strict]:
    """The record's model (made once: a nested record's model is shared)."""
    validators: dict[str, Any] = dict(_RULES.get(record, {}))
    if any(f.plausible for f in record.fields) and record.resolves_own_ranges:
        validators["plausible"] = _span_rule(record)
    for f in record.fields:
        if f.key_ranges is not None or f.key_hours is not None:
            validators[f"plausible_{f.name}"] = _keys_rule(f)
    fields: dict[str, Any] = {
        f.name: (_annotation(f), ... if f.required else None) for f in record.fields
    }
    name = "".join(w.capitalize() for w in record.name.split()) + "Model"
    return create_model(name, __base__=Strict, __validators__=validators, **fields)


#: The model that validates each kind of payload.
MODELS: Mapping[MessageKind, type[Strict]] = {k: model_of(s.record) for k, s in KINDS.items()}

GatewayStatusModel = MODELS[MessageKind.GATEWAY_STATUS]
DeviceStatusModel = MODELS[MessageKind.DEVICE_STATUS]
MeasurementsModel = MODELS[MessageKind.MEASUREMENTS]
EnergyModel = MODELS[MessageKind.ENERGY]
IntensityModel = MODELS[MessageKind.INTENSITY]
EventsModel = MODELS[MessageKind.EVENTS]
LedgerModel = MODELS[MessageKind.LEDGER]
AlarmModel = MODELS[MessageKind.ALARM]
