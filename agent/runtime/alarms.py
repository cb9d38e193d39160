"""The alarm rules inside `run`: the evaluator fed once a second, its changes published.

What the evaluator sees comes from the agent's own status (devices' power and
last good poll, the outbox's oldest message, the history's and the ledger's
faults), so an alarm can only say what the page and ``status`` show, and from
the site's energy records as they are stored: the coverage of a closed
interval is the share of the root meters whose record for it was measured
(``measured``, ``integrated`` or ``reset``: energy read from the meter), a
meter without a record counting as not covered. An interval is judged once
every root meter has its record, or two intervals later without them.

Each change is a retained ``alarms`` message through the outbox like every
other (stored first, replayed after an outage), and, with a webhook, a POST
from the webhook's own queue and task: nothing here waits for the network.
The alarms raised are kept in ``state_dir/alarms.json``: after a restart they
are judged again, and one whose condition is gone is cleared, so the retained
message and the database never keep a stale "raised".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.alarms import Alarm, Change, Evaluator, Observation, alarm_message, describe
from agent.alarms.webhook import WebhookSender
from agent.config.models import AgentConfig
from agent.contract.kinds import Message, MessageKind, Topics
from agent.status import AgentStatus, AlarmCounts, AlarmStatus

log = logging.getLogger(__name__)

#: At most this many alarms in a message's ``active`` list (rule order): a bus that goes
#: down with a thousand meters makes a thousand raises, and each message must stay far
#: below the bridge's payload limit (100 rows: some 17 KB).
ACTIVE_MAX = 100
#: In ``state_dir``: the alarms raised, for the next start.
ALARMS_FILE = "alarms.json"
#: The qualities of an energy record whose energy was read from the meter.
COVERED = frozenset({"measured", "integrated", "reset"})


class IntervalCoverage:
    """The coverage of each closed interval, from the root meters' energy records."""

    def __init__(self, roots: Sequence[str], interval_s: int) -> None:
        self.roots = frozenset(roots)
        self.interval_ms = interval_s * 1000
        self._ends: dict[int, dict[str, bool]] = {}
        #: The latest interval judged: its end and coverage (%).
        self.latest: tuple[int, float] | None = None

    def add(self, device: str, payload: dict[str, object]) -> None:
        if device not in self.roots or not self.roots:
            return
        end = payload.get("ts")
        if not isinstance(end, int):
            return
        if self.latest is not None and end <= self.latest[0]:
            return  # a late record of an interval already judged
        self._ends.setdefault(end, {})[device] = payload.get("quality") in COVERED
        newest = max(self._ends)
        for e in sorted(self._ends):
            seen = self._ends[e]
            if len(seen) < len(self.roots) and newest - e < 2 * self.interval_ms:
                break
            self.latest = (e, 100.0 * sum(seen.values()) / len(self.roots))
            del self._ends[e]


class AlarmJob:
    """The rules of ``config.alarms``, judged by :meth:`tick`; changes go to ``store``."""

    def __init__(
        self,
        config: AgentConfig,
        topics: Topics,
        store: Callable[[list[Message]], None],
        started_ms: int,
    ) -> None:
        self.topics = topics
        self.store = store
        self.evaluator = Evaluator(
            config.alarms.rules, [d.id for d in config.devices], started_ms=started_ms
        )
        roots = [d.id for d in config.devices if d.parent is None]
        self.coverage = IntervalCoverage(roots, config.publish.energy_interval_s)
        hook = config.alarms.webhook
        self.webhook = WebhookSender(hook) if hook is not None else None
        #: Raises and clears since the start, for /metrics.
        self.changes = {"raised": 0, "cleared": 0}
        #: The latest alarm message: published again at every connect, like the statuses.
        self.last: Message | None = None
        #: The alarms raised, kept across restarts (see :meth:`Evaluator.restore`).
        self.path = Path(config.state_dir) / ALARMS_FILE
        restored = self._load()
        self.evaluator.restore(restored)
        #: Left raised by the last run and not judged yet: even without rules now (the
        #: section was removed), the first tick clears them.
        self._restored = bool(restored)

    @property
    def on(self) -> bool:
        return bool(self.evaluator.rules) or self._restored

    def records(self, messages: Sequence[Message]) -> None:
        """The site's energy records as they are stored (for coverage)."""
        for m in messages:
            if m.kind is MessageKind.ENERGY and m.device is not None:
                self.coverage.add(m.device, m.payload)

    def tick(self, status: AgentStatus) -> list[Change]:
        """Judge every rule at the status's time; store and send what changed."""
        if not self.on:
            return []
        changes = self.evaluator.update(observation(status, self.coverage.latest))
        self._restored = False
        if not changes:
            return []
        active = self.evaluator.get()
        listed = active[:ACTIVE_MAX]
        messages = [alarm_message(self.topics, c, listed) for c in changes]
        for c, m in zip(changes, messages, strict=True):
            self.changes[c.state] += 1
            log.warning("alarm %s %s: %s", c.alarm.id, c.state, m.payload["text"])
            if self.webhook is not None:
                self.webhook.put(m.payload)
        self.store(messages)
        self.last = messages[-1]
        self._save(active)
        return changes

    def _load(self) -> list[Alarm]:
        """What the last run left raised; nothing when the file is missing or unreadable."""
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))
            return [Alarm(**row) for row in rows]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as exc:
            log.warning("alarms: %s not read (%s); starting with none raised", self.path, exc)
            return []

    def _save(self, active: Sequence[Alarm]) -> None:
        """A few hundred bytes, written only when an alarm changes (atomically)."""
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps([a.row() for a in active]), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning(
                "alarms: cannot write %s (%s); a restart may not clear them", self.path, exc
            )

    def status(self) -> tuple[AlarmStatus, ...]:
        return tuple(alarm_status(a) for a in self.evaluator.get())

    def counts(self) -> AlarmCounts:
        hook = self.webhook
        return AlarmCounts(
            raised=self.changes["raised"],
            cleared=self.changes["cleared"],
            webhook_sent=0 if hook is None else hook.sent,
            webhook_failed=0 if hook is None else hook.failed,
            webhook_dropped=0 if hook is None else hook.dropped,
        )


def observation(status: AgentStatus, coverage: tuple[int, float] | None) -> Observation:
    ledger = status.ledger
    error = None
    if ledger is not None:
        error = ledger.history.error if not ledger.history.ok else ledger.error
    return Observation(
        ts=status.ts,
        power_kw={d.id: d.power_kw for d in status.devices},
        last_ok_ms={d.id: d.last_ok_ms for d in status.devices},
        outbox_oldest_ms=status.outbox.oldest_ms if status.outbox.depth else None,
        ledger_error=error,
        coverage=coverage,
    )


def alarm_status(a: Alarm) -> AlarmStatus:
    return AlarmStatus(
        id=a.id,
        rule=a.rule,
        condition=a.condition,
        subject=a.subject,
        state="raised",
        value=a.value,
        limit=a.limit,
        since_ms=a.since_ms,
        text=describe(a),
    )
