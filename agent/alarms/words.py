"""An alarm in words, and the message that says it was raised or cleared.

The message's ``text`` is English (the contract's language, like the logs);
``status`` and the page say the same in the reader's language from the same
catalogue (agent/i18n/*/alarms.json), filled with the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from agent.alarms.evaluate import Alarm, Change
from agent.contract.build import alarm_payload
from agent.contract.kinds import Message, MessageKind, Topics
from agent.i18n import Translator


def figure(x: float | None) -> str:
    """A value as people read it: whole minutes and kW to one decimal, at most."""
    if x is None:
        return "?"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}".removesuffix(".0")


def describe(alarm: Alarm, lang: str | None = "en") -> str:
    t = Translator(lang)
    return t(
        f"alarms.{alarm.condition}",
        subject=alarm.subject,
        value=figure(alarm.value),
        limit=figure(alarm.limit),
    )


def describe_change(change: Change, lang: str | None = "en") -> str:
    """A raise says what is wrong; a clear says which alarm ended (its value is the one
    that cleared it, which the raise's sentence would contradict)."""
    if change.state == "raised":
        return describe(change.alarm, lang)
    a = change.alarm
    return Translator(lang)("alarms.cleared_text", rule=a.rule, subject=a.subject)


def alarm_message(topics: Topics, change: Change, active: Sequence[Alarm]) -> Message:
    """The retained message of one change: the change, and every alarm raised after it."""
    state: Literal["raised", "cleared"] = "raised" if change.state == "raised" else "cleared"
    payload = alarm_payload(
        change.ts,
        change.alarm.row(),
        state,
        describe_change(change),
        [a.row() for a in active],
    )
    return topics.message(MessageKind.ALARM, payload)
