"""Each configured device's state as its polls left it.

Kept apart from :mod:`agent.runtime.agent` so that the status source can name it
without importing the agent that owns it (no import cycle, not even a type-only one).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.contract.kinds import Message
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
