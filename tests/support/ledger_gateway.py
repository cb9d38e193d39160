"""A gateway's history and ledger built in this process, on a clock of the test's choosing.

The real History and Sealer (the code `run` uses) fed with records made by the
payload builders: the unit tests' material, and the integration tests' second
gateway whose entries the test can remove or re-sign before publishing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.contract import (
    Carrier,
    Message,
    MessageKind,
    Topics,
    encode,
    energy_payload,
    intensity_payload,
    parse_topic,
    window_values,
)
from agent.history import HISTORY_FILE, History
from agent.history.writer import new_record
from agent.ledger import keys
from agent.ledger.sealer import Sealed, Sealer

PREFIX = "energy/v1"
MINUTE = 60_000


def energy(topics: Topics, device: str, ts: int, kwh: float, quality: str = "measured") -> Message:
    payload = energy_payload(
        ts=ts,
        interval_s=60,
        carrier=Carrier.ELECTRICITY,
        energy_kwh=kwh,
        co2_kg=kwh * 0.5703,
        ef_kg_per_kwh=0.5703,
        quality=quality,
    )
    return topics.message(MessageKind.ENERGY, payload, device)


def intensity(topics: Topics, ts: int, kwh: float) -> Message:
    windows = {
        "1m": window_values(kwh, kwh * 0.5703, 3.0, kwh * 0.1229),
        "15m": window_values(kwh * 15, kwh * 15 * 0.5703, 0.0, kwh * 15 * 0.1229),
    }
    return topics.message(MessageKind.INTENSITY, intensity_payload(ts, windows))


@dataclass
class LedgerGateway:
    """A state_dir with a key, a history and a sealer; ``now`` is the test's."""

    state_dir: Path
    site: str = "plant-a"
    gateway: str = "gw-01"
    period_s: int = 60
    delay_s: float = 10.0
    history: History = field(init=False)
    sealer: Sealer = field(init=False)
    published: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = Topics(PREFIX, self.site, self.gateway)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not (self.state_dir / keys.KEY_FILE).exists():
            keys.init(self.state_dir)
        self.history = History(self.state_dir / HISTORY_FILE, max_bytes=2**30, retention_months=25)
        self.sealer = Sealer(
            self.history,
            self.state_dir,
            site=self.site,
            gateway=self.gateway,
            period_s=self.period_s,
            delay_s=self.delay_s,
        )

    def start(self, now_ms: int) -> list[Sealed]:
        return self.sealer.start(now_ms)

    def publish(self, *messages: Message) -> None:
        """Records as `run` stores them: into the history."""
        self.published += messages
        self.history.put(
            [
                new_record(parse_topic(m.topic), m.topic, m.payload, encode(m.payload))
                for m in messages
            ]
        )

    def seal(self, now_ms: int) -> list[Sealed]:
        return self.sealer.seal(now_ms)

    def entries(self) -> list[dict[str, Any]]:
        return [row.entry for row in self.history.reader.entries()]

    def close(self) -> None:
        self.history.close()


def entry_of(sealed: Sealed) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(sealed.payload)
    return out
