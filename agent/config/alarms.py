"""The ``alarms:`` section: rules the gateway judges itself, and where it says so.

One model per condition, told apart by ``condition`` (pydantic's discriminated
union names the one that was meant, so a misspelt key gets one error, not six).
Each rule has its own ``id``: the alarm's name on the broker (``rule`` of an
alarm message), in the database (a tag) and in a webhook's body.

What needs the whole document (the devices a rule names exist, ids are unique)
is checked by :func:`alarm_problems`, called by :mod:`agent.config.load` with
the others, so one ``check`` lists every problem with its line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from agent.config.common import ID_RX, Id
from agent.config.common import Strict as _Strict
from confdoc.errors import Problem
from confdoc.yamldoc import YamlDocument

#: A week: a longer wait is not an alarm any more.
MINUTES_MAX = 7 * 24 * 60
Minutes = Annotated[float, Field(gt=0, le=MINUTES_MAX, allow_inf_nan=False)]
#: A power limit: as large as the contract's plausible power.
Kw = Annotated[float, Field(ge=-1e7, le=1e7, allow_inf_nan=False)]


class _Rule(_Strict):
    id: Id


class OfflineRule(_Rule):
    """A meter that has not answered for ``minutes`` (each device listed, or every one)."""

    condition: Literal["offline"]
    minutes: Minutes
    #: Empty: every configured device, each an alarm of its own.
    devices: tuple[Id, ...] = ()


class PowerRule(_Rule):
    """Active power above (or below) ``limit_kw`` for ``minutes`` without a break.

    Per device (each listed one judged alone), or, with ``line: true``, the sum of
    the listed devices judged as one (a production line's meters); the alarm's
    subject is then the rule's id. A device without a power reading (offline, or
    not an electricity meter) makes the condition false: ``offline`` says that.
    """

    condition: Literal["power_above", "power_below"]
    limit_kw: Kw
    minutes: Minutes
    devices: tuple[Id, ...] = Field(min_length=1)
    line: bool = False


class CoverageRule(_Rule):
    """A closed interval whose root meters measured less than ``percent`` of it.

    Judged once per closed energy interval (``publish.energy_interval_s``): raised
    by one below the limit, cleared by the next at or above it.
    """

    condition: Literal["coverage_below"]
    percent: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class OutboxRule(_Rule):
    """The oldest message waiting to be sent is older than ``minutes``."""

    condition: Literal["outbox_age"]
    minutes: Minutes


class LedgerRule(_Rule):
    """The history or the ledger cannot be written (or is off for a fault) for ``minutes``."""

    condition: Literal["ledger_failure"]
    minutes: Annotated[float, Field(ge=0, le=MINUTES_MAX, allow_inf_nan=False)] = 0


_MODELS: dict[str, type[_Rule]] = {
    "offline": OfflineRule,
    "power_above": PowerRule,
    "power_below": PowerRule,
    "coverage_below": CoverageRule,
    "outbox_age": OutboxRule,
    "ledger_failure": LedgerRule,
}
CONDITIONS = tuple(_MODELS)


def _tag(v: Any) -> str | None:
    """The union member for a rule, by its ``condition`` (capitalised: the config loader
    leaves such names out of an error's path, which then reads ``alarms.rules[2].minutes``)."""
    condition = v.get("condition") if isinstance(v, dict) else getattr(v, "condition", None)
    model = _MODELS.get(condition) if isinstance(condition, str) else None
    return None if model is None else model.__name__


Rule = Annotated[
    Annotated[OfflineRule, Tag("OfflineRule")]
    | Annotated[PowerRule, Tag("PowerRule")]
    | Annotated[CoverageRule, Tag("CoverageRule")]
    | Annotated[OutboxRule, Tag("OutboxRule")]
    | Annotated[LedgerRule, Tag("LedgerRule")],
    Discriminator(
        _tag,
        custom_error_type="unknown_condition",
        custom_error_message="`condition` must be one of: " + ", ".join(_MODELS),
    ),
]


class Webhook(_Strict):
    """Each raise and clear POSTed as JSON (the alarm message's payload) to ``url``.

    Sent by a task of its own from a bounded queue, so a slow or dead receiver
    never holds up polling; a failed POST is retried with a capped backoff, and
    when the queue is full the oldest waiting one is dropped (and counted).
    """

    url: Annotated[str, Field(pattern=r"^https?://")]
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    #: Attempts per alarm message before it is given up (and counted).
    attempts: Annotated[int, Field(ge=1, le=100)] = 8
    #: The longest wait between attempts.
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    queue: Annotated[int, Field(ge=1, le=10_000)] = 100


class Alarms(_Strict):
    rules: tuple[Rule, ...] = ()
    webhook: Webhook | None = None


def alarm_problems(doc: YamlDocument, dev_ids: dict[str, int]) -> list[Problem]:
    """Rule ids used twice, devices a rule names that the config does not have, and an
    offline limit that a device's own polling interval would trip."""
    data = doc.data if isinstance(doc.data, dict) else {}
    section = data.get("alarms")
    rules = section.get("rules") if isinstance(section, dict) else None
    if not isinstance(rules, list):
        return []
    out: list[Problem] = []
    seen: dict[str, int] = {}
    known = ", ".join(sorted(dev_ids)) or "none defined"
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        rid = rule.get("id")
        if isinstance(rid, str) and seen.setdefault(rid, i) != i:
            out.append(
                doc.problem(
                    ("alarms", "rules", i, "id"),
                    f"alarm rule id '{rid}' is used twice (also alarms.rules[{seen[rid]}]); "
                    "each rule needs its own",
                )
            )
        out += _device_problems(doc, i, rule.get("devices"), dev_ids, known)
        if rule.get("condition") == "offline":
            out += _offline_problems(doc, i, rule, _intervals(data))
    return out


def _intervals(data: dict[str, Any]) -> dict[str, float]:
    """Each device's polling interval (s), as the raw document gives it."""
    devices = data.get("devices")
    out: dict[str, float] = {}
    for d in devices if isinstance(devices, list) else []:
        if isinstance(d, dict) and isinstance(d.get("id"), str):
            interval = d.get("interval_s", 1.0)
            if isinstance(interval, int | float) and not isinstance(interval, bool):
                out[d["id"]] = float(interval)
    return out


def _offline_problems(
    doc: YamlDocument, i: int, rule: dict[str, Any], intervals: dict[str, float]
) -> list[Problem]:
    """An offline limit within two polls of a device raises between its polls."""
    minutes, devices = rule.get("minutes"), rule.get("devices") or list(intervals)
    if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
        return []  # the model says what is wrong with it
    slow = [d for d in devices if isinstance(d, str) and intervals.get(d, 0) * 2 > minutes * 60]
    if not slow:
        return []
    worst = max(slow, key=lambda d: intervals[d])
    return [
        doc.problem(
            ("alarms", "rules", i, "minutes"),
            f"{minutes:g} min is less than two polls of '{worst}' (interval_s "
            f"{intervals[worst]:g}): the alarm would be raised between its polls; give at "
            f"least {intervals[worst] * 2 / 60:g}",
        )
    ]


def _device_problems(
    doc: YamlDocument, i: int, devices: Any, dev_ids: dict[str, int], known: str
) -> list[Problem]:
    if not isinstance(devices, list):
        return []
    return [
        doc.problem(
            ("alarms", "rules", i, "devices", j),
            f"unknown device '{d}' (devices: {known})",
        )
        for j, d in enumerate(devices)
        if isinstance(d, str) and ID_RX.match(d) and d not in dev_ids
    ]
