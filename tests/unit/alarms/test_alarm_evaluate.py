"""The alarm evaluator against hand-made timelines, one table per condition.

Each row of a timeline is an observation at minute ``m`` (t0 + m minutes) and
the changes it must bring: ``("raised", subject, value)`` or ``("cleared", ...)``.
The arithmetic is in the comments beside the rows.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from agent.alarms import Evaluator, Observation, alarm_message, describe
from agent.config.alarms import Rule
from agent.contract.kinds import Topics
from agent.contract.models import AlarmModel

T0 = 1_750_000_000_000
MIN = 60_000
RULE: TypeAdapter[Rule] = TypeAdapter(Rule)  # type: ignore[arg-type]


def at(m: float) -> int:
    return T0 + int(m * MIN)


def run(
    rule: dict[str, Any], timeline: list[tuple[float, dict[str, Any], list[tuple[Any, ...]]]]
) -> Evaluator:
    ev = Evaluator([RULE.validate_python(rule)], ["a", "b"], started_ms=T0)
    for m, seen, expected in timeline:
        changes = ev.update(Observation(at(m), **seen))
        got = [(c.state, c.alarm.subject, c.alarm.value) for c in changes]
        assert got == expected, f"minute {m}: {got} != {expected}"
    return ev


def test_offline_raises_at_the_limit_counted_from_the_last_answer_and_clears_at_the_next() -> None:
    rule = {"id": "off", "condition": "offline", "minutes": 10}
    ok = {"a": at(0), "b": at(0)}
    run(
        rule,
        [
            (0, {"last_ok_ms": ok}, []),
            (9.99, {"last_ok_ms": ok}, []),  # 9.99 min < 10
            # a answered at minute 5; b has not since 0: 10 - 0 = 10 min >= 10
            (10, {"last_ok_ms": {"a": at(5), "b": at(0)}}, [("raised", "b", 10.0)]),
            (12, {"last_ok_ms": {"a": at(5), "b": at(0)}}, []),  # the value moves on, silently
            # a: 15 - 5 = 10 min; b answered at 14.5: 0.5 min
            (
                15,
                {"last_ok_ms": {"a": at(5), "b": at(14.5)}},
                [("raised", "a", 10.0), ("cleared", "b", 0.5)],
            ),
        ],
    )


def test_a_device_never_heard_from_is_offline_since_the_start() -> None:
    rule = {"id": "off", "condition": "offline", "minutes": 3, "devices": ["a"]}
    ev = run(rule, [(2, {}, []), (3, {}, [("raised", "a", 3.0)])])
    (alarm,) = ev.get()
    assert (alarm.id, alarm.since_ms, alarm.limit) == ("off/a", T0, 3.0)


def test_power_above_needs_the_whole_hold_without_a_break() -> None:
    rule = {
        "id": "hi",
        "condition": "power_above",
        "limit_kw": 50,
        "minutes": 5,
        "devices": ["a"],
    }
    ev = run(
        rule,
        [
            (0, {"power_kw": {"a": 51.0}}, []),  # bad from minute 0
            (4, {"power_kw": {"a": 60.0}}, []),  # 4 min < 5
            (4.5, {"power_kw": {"a": 50.0}}, []),  # 50 is not above 50: the hold restarts
            (5, {"power_kw": {"a": 55.0}}, []),  # bad again from 5
            (9.9, {"power_kw": {"a": 55.0}}, []),  # 4.9 min
            (10, {"power_kw": {"a": 52.5}}, [("raised", "a", 52.5)]),  # 10 - 5 = 5 min
        ],
    )
    (alarm,) = ev.get()
    assert alarm.since_ms == at(5) and alarm.limit == 50.0
    # Unknown power (the meter stopped answering) is not bad: cleared, offline says why.
    assert [(c.state, c.alarm.value) for c in ev.update(Observation(at(11), {"a": None}))] == [
        ("cleared", None)
    ]


def test_a_lines_power_is_the_sum_of_its_meters_and_unknown_if_one_is_missing() -> None:
    rule = {
        "id": "line-1",
        "condition": "power_below",
        "limit_kw": 10,
        "minutes": 2,
        "devices": ["a", "b"],
        "line": True,
    }
    run(
        rule,
        [
            (0, {"power_kw": {"a": 4.0, "b": 5.0}}, []),  # 4 + 5 = 9 < 10: bad from 0
            (2, {"power_kw": {"a": 4.0, "b": 5.5}}, [("raised", "line-1", 9.5)]),  # 2 min
            (3, {"power_kw": {"a": 4.0, "b": None}}, [("cleared", "line-1", None)]),
            (4, {"power_kw": {"a": 4.0, "b": 1.0}}, []),  # 5 < 10 again, from 4
            (6, {"power_kw": {"a": 4.0, "b": 7.0}}, []),  # 11 >= 10: not bad
        ],
    )


def test_coverage_is_judged_once_per_closed_interval() -> None:
    rule = {"id": "cov", "condition": "coverage_below", "percent": 95}
    run(
        rule,
        [
            (0, {}, []),  # no interval closed yet
            (1, {"coverage": (at(1), 100.0)}, []),
            (2, {"coverage": (at(2), 94.9)}, [("raised", "site", 94.9)]),
            (2.5, {"coverage": (at(2), 94.9)}, []),  # the same interval again: no news
            (3, {"coverage": (at(3), 80.0)}, []),  # still raised, value 80
            (4, {"coverage": (at(4), 95.0)}, [("cleared", "site", 95.0)]),  # 95 is not below
        ],
    )


def test_outbox_age_counts_from_the_oldest_message() -> None:
    rule = {"id": "old", "condition": "outbox_age", "minutes": 30}
    run(
        rule,
        [
            (10, {"outbox_oldest_ms": at(-19)}, []),  # 10 + 19 = 29 min
            (11, {"outbox_oldest_ms": at(-19)}, [("raised", "outbox", 30.0)]),  # 30 min
            (12, {"outbox_oldest_ms": None}, [("cleared", "outbox", None)]),  # sent
        ],
    )


def test_a_ledger_failure_raises_after_its_minutes_and_clears_when_it_writes() -> None:
    rule = {"id": "led", "condition": "ledger_failure", "minutes": 2}
    run(
        rule,
        [
            (0, {"ledger_error": "disk full"}, []),
            (1.9, {"ledger_error": "disk full"}, []),
            (2, {"ledger_error": "disk full"}, [("raised", "ledger", None)]),
            (3, {}, [("cleared", "ledger", None)]),
        ],
    )


def test_get_lists_raised_alarms_in_rule_order() -> None:
    rules = [
        RULE.validate_python({"id": "z-old", "condition": "outbox_age", "minutes": 1}),
        RULE.validate_python({"id": "a-off", "condition": "offline", "minutes": 1}),
    ]
    ev = Evaluator(rules, ["b", "a"], started_ms=T0)
    ev.update(Observation(at(2), outbox_oldest_ms=at(0)))
    assert [a.id for a in ev.get()] == ["z-old/outbox", "a-off/a", "a-off/b"]


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_words_fill_in_subject_value_and_limit(lang: str) -> None:
    ev = run(
        {"id": "hi", "condition": "power_above", "limit_kw": 50, "minutes": 1, "devices": ["a"]},
        [
            (0, {"power_kw": {"a": 1234.5}}, []),
            (1, {"power_kw": {"a": 1234.5}}, [("raised", "a", 1234.5)]),
        ],
    )
    text = describe(ev.get()[0], lang)
    assert "a" in text and "1,234" in text and "50" in text


def test_the_message_is_the_contracts_and_lists_every_raised_alarm() -> None:
    rules = [RULE.validate_python({"id": "off", "condition": "offline", "minutes": 1})]
    ev = Evaluator(rules, ["a", "b"], started_ms=T0)
    ok = {"a": at(1), "b": None}
    (change,) = ev.update(Observation(at(1), last_ok_ms=ok))  # b: 1 min since the start
    msg = alarm_message(Topics("energy/v1", "plant-a", "gw-01"), change, ev.get())
    assert msg.topic == "energy/v1/plant-a/gw-01/alarms"
    AlarmModel.model_validate(msg.payload, strict=True)
    assert msg.payload["state"] == "raised" and msg.payload["subject"] == "b"
    assert msg.payload["text"] == "b has not answered for 1 min (limit 1 min)"
    assert [a["subject"] for a in msg.payload["active"]] == ["b"]


def test_alarms_restored_from_a_previous_run_are_kept_or_cleared_at_the_first_look() -> None:
    """After a restart: an alarm still bad stays raised without a second raise; one no
    longer bad, one whose rule is gone and one whose device the rule no longer names
    are cleared (value None: not judged), so no stale "raised" stays retained."""
    rules = [
        RULE.validate_python({"id": "off", "condition": "offline", "minutes": 5, "devices": ["a"]}),
        RULE.validate_python({"id": "old", "condition": "outbox_age", "minutes": 5}),
    ]
    before = Evaluator(
        [*rules, RULE.validate_python({"id": "gone", "condition": "ledger_failure"})],
        ["a", "b"],
        started_ms=T0,
    )
    before.update(Observation(at(0), ledger_error="x"))
    before.update(Observation(at(10), outbox_oldest_ms=at(0), ledger_error="x"))
    raised = before.get()  # off/a, old/outbox, gone/ledger
    stale_b = raised[0].__class__("off", "offline", "b", 9.0, 5.0, T0)  # b is not named now
    after = Evaluator(rules, ["a", "b"], started_ms=at(11))
    after.restore([*raised, stale_b])
    # a answered at minute 11: cleared; the outbox still holds its message: kept.
    changes = after.update(Observation(at(12), last_ok_ms={"a": at(11)}, outbox_oldest_ms=at(0)))
    assert [(c.state, c.alarm.id, c.alarm.value) for c in changes] == [
        ("cleared", "off/a", 1.0),
        ("cleared", "gone/ledger", None),
        ("cleared", "off/b", None),
    ]
    assert [(a.id, a.since_ms) for a in after.get()] == [("old/outbox", at(0))]
    assert after.update(Observation(at(13), outbox_oldest_ms=at(0))) == []
