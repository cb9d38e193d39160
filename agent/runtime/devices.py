"""Each configured device's state as its polls left it.

Kept apart from :mod:`agent.runtime.agent` so that the status source can name it
without importing the agent that owns it (no import cycle, not even a type-only one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.contract.build import device_status_payload
from agent.contract.kinds import Message, MessageKind, Topics
from agent.runtime.scheduler import Values
from agent.status import UNKNOWN


@dataclass
class DeviceState:
    """What the page, `status` and the retained status topic show for a device."""

    state: str = UNKNOWN  # "ok" | "error"
    error: str | None = None
    reason: str = ""
    last_ok_ms: int | None = None
    polls: int = 0
    failures: int = 0
    last_values: Values | None = None
    #: The last retained status message stored for this device (sent again on reconnect).
    status: Message | None = None

    def status_message(
        self,
        topics: Topics,
        device_id: str,
        state: Literal["ok", "error"],
        error: str | None,
        ts: int,
    ) -> Message:
        """The device's retained status, made and kept as the one a reconnect states again."""
        self.status = topics.message(
            MessageKind.DEVICE_STATUS, device_status_payload(state, error, ts), device_id
        )
        return self.status
