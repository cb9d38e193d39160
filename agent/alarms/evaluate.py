"""The alarm rules judged against what the gateway sees: pure, clock passed in.

:meth:`Evaluator.update` takes one :class:`Observation` (the devices' power and
last good poll, the outbox's oldest message, the ledger's fault, the latest
closed interval's coverage, all at ``ts``) and returns the alarms raised and
cleared by it; :meth:`Evaluator.get` the alarms raised now. No I/O and no
clock of its own, so a test is a timeline of observations written by hand
(tests/unit/alarms/test_alarm_evaluate.py), and the runtime calls it once a second.

Each alarm is one (rule, subject): a rule over three devices is three alarms,
one over a line is one. A condition is *bad* at an observation; it raises
once it has been bad for the rule's ``minutes`` without a break (offline and
outbox age carry their own start: the last good poll, the oldest message) and
clears at the first observation where it is not bad. Unknown (no value) is
not bad: a meter without power is the ``offline`` rule's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.config.alarms import (
    CoverageRule,
    LedgerRule,
    OfflineRule,
    OutboxRule,
    PowerRule,
    Rule,
)

MIN_MS = 60_000


@dataclass(frozen=True)
class Observation:
    """What the gateway sees at ``ts`` (Unix ms)."""

    ts: int
    #: Every configured device's active power now (kW); None: not known.
    power_kw: Mapping[str, float | None] = field(default_factory=dict)
    #: Every configured device's last good poll (Unix ms); None: none since the start.
    last_ok_ms: Mapping[str, int | None] = field(default_factory=dict)
    #: The oldest message waiting to be sent; None: none waits.
    outbox_oldest_ms: int | None = None
    #: Why the history or the ledger cannot be written; None: they can.
    ledger_error: str | None = None
    #: The latest closed interval's end and its coverage (%); None: none closed yet.
    coverage: tuple[int, float] | None = None


@dataclass(frozen=True)
class Alarm:
    """One alarm as it stands: raised now, or the one a change cleared."""

    rule: str
    condition: str
    subject: str
    value: float | None
    limit: float | None
    #: When the condition began (the alarm's age is counted from here).
    since_ms: int

    @property
    def id(self) -> str:
        return f"{self.rule}/{self.subject}"

    def row(self) -> dict[str, object]:
        """The contract's active-alarm row (agent/contract/records.py ``ACTIVE_ALARM``)."""
        return {
            "rule": self.rule,
            "condition": self.condition,
            "subject": self.subject,
            "value": self.value,
            "limit": self.limit,
            "since_ms": self.since_ms,
        }


@dataclass(frozen=True)
class Change:
    """An alarm raised or cleared at ``ts``."""

    ts: int
    state: str  # "raised" | "cleared"
    alarm: Alarm


@dataclass(frozen=True)
class _Check:
    """One subject's condition at an observation."""

    subject: str
    bad: bool
    value: float | None
    #: When the condition began, if the data says (a last good poll); else counted here.
    began_ms: int | None = None


@dataclass
class _State:
    pending_since: int | None = None
    raised: Alarm | None = None


class Evaluator:
    """Every rule's alarms, kept between observations."""

    def __init__(self, rules: Sequence[Rule], devices: Sequence[str], started_ms: int) -> None:
        self.rules = tuple(rules)
        self.devices = tuple(devices)
        #: A device never heard from is offline since the agent started.
        self.started_ms = started_ms
        self._states: dict[tuple[str, str], _State] = {}
        #: The coverage intervals already judged, per rule.
        self._judged: dict[str, int] = {}
        #: Alarms restored from a previous run, not judged since; and those whose rule
        #: is gone, cleared at the next update.
        self._restored: set[tuple[str, str]] = set()
        self._stale: list[Alarm] = []

    def restore(self, raised: Sequence[Alarm]) -> None:
        """The alarms a previous run left raised (its retained message says so): judged
        again at the next update, which clears each one no longer bad, or no longer
        part of the config, instead of leaving a stale "raised" behind."""
        conditions = {r.id: r.condition for r in self.rules}
        for alarm in raised:
            if conditions.get(alarm.rule) == alarm.condition:
                self._states[(alarm.rule, alarm.subject)] = _State(alarm.since_ms, alarm)
                self._restored.add((alarm.rule, alarm.subject))
            else:  # its rule is gone, or watches something else now
                self._stale.append(alarm)

    def update(self, obs: Observation) -> list[Change]:
        """Judge every rule at ``obs``; the alarms raised and cleared by it, in rule order."""
        out: list[Change] = []
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            checks = self._checks(rule, obs)
            if checks is None:
                # Nothing new to judge (no new interval closed): a restored alarm waits.
                seen |= {k for k in self._restored if k[0] == rule.id}
                continue
            for check in checks:
                seen.add((rule.id, check.subject))
                change = self._step(rule, check, obs.ts)
                if change is not None:
                    out.append(change)
        stale = [self._states.pop(k).raised for k in sorted(self._restored - seen)]
        for gone in [*self._stale, *stale]:
            if gone is not None:
                out.append(Change(obs.ts, "cleared", _with_value(gone, None)))
        self._restored, self._stale = set(), []
        return out

    def get(self) -> tuple[Alarm, ...]:
        """The alarms raised now, in rule order, then subject."""
        order = {r.id: i for i, r in enumerate(self.rules)}
        raised = [s.raised for s in self._states.values() if s.raised is not None]
        return tuple(sorted(raised, key=lambda a: (order.get(a.rule, 0), a.subject)))

    def _step(self, rule: Rule, check: _Check, ts: int) -> Change | None:
        state = self._states.setdefault((rule.id, check.subject), _State())
        if not check.bad:
            state.pending_since = None
            if state.raised is None:
                return None
            cleared, state.raised = state.raised, None
            return Change(ts, "cleared", _with_value(cleared, check.value))
        if state.pending_since is None:
            state.pending_since = check.began_ms if check.began_ms is not None else ts
        alarm = Alarm(
            rule.id,
            rule.condition,
            check.subject,
            check.value,
            _limit(rule),
            state.pending_since,
        )
        if state.raised is not None:
            state.raised = alarm  # the value moves on; no message for that
            return None
        if ts - state.pending_since < _hold_ms(rule):
            return None
        state.raised = alarm
        return Change(ts, "raised", alarm)

    def _checks(self, rule: Rule, obs: Observation) -> list[_Check] | None:
        if isinstance(rule, OfflineRule):
            return [self._offline(rule, d, obs) for d in rule.devices or self.devices]
        if isinstance(rule, PowerRule):
            return _power(rule, obs)
        if isinstance(rule, OutboxRule):
            oldest = obs.outbox_oldest_ms
            age = None if oldest is None else (obs.ts - oldest) / MIN_MS
            bad = age is not None and age >= rule.minutes
            return [_Check("outbox", bad, age, oldest)]
        if isinstance(rule, LedgerRule):
            return [_Check("ledger", obs.ledger_error is not None, None)]
        return self._coverage(rule, obs)

    def _offline(self, rule: OfflineRule, device: str, obs: Observation) -> _Check:
        last = obs.last_ok_ms.get(device)
        since = self.started_ms if last is None else last
        minutes = (obs.ts - since) / MIN_MS
        return _Check(device, minutes >= rule.minutes, minutes, since)

    def _coverage(self, rule: CoverageRule, obs: Observation) -> list[_Check] | None:
        if obs.coverage is None:
            return None
        end, percent = obs.coverage
        if self._judged.get(rule.id) == end:
            return None
        self._judged[rule.id] = end
        return [_Check("site", percent < rule.percent, percent, end)]


def _power(rule: PowerRule, obs: Observation) -> list[_Check]:
    above = rule.condition == "power_above"

    def judged(subject: str, kw: float | None) -> _Check:
        bad = kw is not None and (kw > rule.limit_kw if above else kw < rule.limit_kw)
        return _Check(subject, bad, kw)

    if not rule.line:
        return [judged(d, obs.power_kw.get(d)) for d in rule.devices]
    values = [obs.power_kw.get(d) for d in rule.devices]
    # A line whose meters did not all answer has no total: judged as unknown.
    total = None if any(v is None for v in values) else sum(v for v in values if v is not None)
    return [judged(rule.id, total)]


def _limit(rule: Rule) -> float | None:
    if isinstance(rule, PowerRule):
        return rule.limit_kw
    if isinstance(rule, CoverageRule):
        return rule.percent
    if isinstance(rule, OfflineRule | OutboxRule):
        return rule.minutes
    return None


def _hold_ms(rule: Rule) -> float:
    """How long a condition must be bad before it raises. Offline and outbox age are
    bad only once their own age passed the limit; a coverage interval at once."""
    return rule.minutes * MIN_MS if isinstance(rule, PowerRule | LedgerRule) else 0.0


def _with_value(alarm: Alarm, value: float | None) -> Alarm:
    """The cleared alarm with the value that cleared it."""
    return Alarm(alarm.rule, alarm.condition, alarm.subject, value, alarm.limit, alarm.since_ms)
