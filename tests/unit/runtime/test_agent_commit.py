"""The agent stores what the polls produce once per tick, however the polls are spread.

50 polls one every 20 ms (50 meters on one bus, the old schedule) made 50 outbox
transactions a second with a 10 ms group commit; on a 200 ms tick they make at
most one per tick, and every message is stored.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.config import parse_config
from agent.runtime.agent import Agent
from agent.runtime.outbox import Item, MemoryOutbox
from drivers.quantities import Quantity
from tests.support.agents import CONFIG, LIBRARY, T0, poll


class CountingOutbox(MemoryOutbox):
    def __init__(self) -> None:
        super().__init__(10_000_000)
        self.transactions = 0

    def put_many(self, items: list[Item], marks: dict[str, int] | None = None) -> list[int]:
        self.transactions += 1
        return super().put_many(items, marks)


def test_polls_every_20_ms_are_stored_in_one_transaction_per_tick(tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    assert config.buffer.tick_s == 0.2
    outbox = CountingOutbox()
    agent = Agent(config, LIBRARY, outbox=outbox)

    async def polls() -> float:
        started = time.monotonic()
        for k in range(50):
            values = {Quantity.ENERGY_IMPORT_KWH: 1000 + k / 100, Quantity.ACTIVE_POWER_KW: 10.0}
            agent.on_result(poll(("main", "sub", "spare")[k % 3]), T0 + 20 * k, values, None, 0.01)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.25)  # the last tick
        return time.monotonic() - started

    elapsed = asyncio.run(polls())
    # 50 measurements and the first "ok" status of each of the 3 devices, all stored ...
    assert outbox.stats().depth == 53
    # ... in at most one transaction per 200 ms tick of the ~1.25 s (7 ticks begin in
    # it); one per poll was 50 (a 10 ms group commit sees one poll each).
    assert outbox.transactions <= elapsed / 0.2 + 1, (outbox.transactions, elapsed)
