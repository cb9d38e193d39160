"""`energy-agent replay`: recorded readings through the same core, streamed.

How plants backfill their history from meter logs and check a bill, and how the
numbers are tested from outside: every record the agent would publish for the
readings. Input shapes and timestamp forms: :mod:`agent.replay.sources` and
:mod:`agent.replay.timestamps`; the flow: :mod:`agent.replay.pipeline`; what
happens to the records: :mod:`agent.replay.writers` and
:mod:`agent.replay.publish`.
"""

from agent.replay.pipeline import Backfill, Options, Reader, Topic
from agent.replay.rows import BadRow, ReplayError, ReplayInputError
from agent.replay.timestamps import parse_ts

__all__ = [
    "Backfill",
    "BadRow",
    "Options",
    "Reader",
    "ReplayError",
    "ReplayInputError",
    "Topic",
    "parse_ts",
]
