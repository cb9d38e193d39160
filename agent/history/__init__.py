"""The gateway's own history: every closed record and every ledger entry, in SQLite.

``state_dir/history.db`` keeps what the gateway published as records (device
energy, site intensity windows with every revision, and record kinds added
later), each exactly once, for ``history.retention_months`` and at most
``history.max_mb``; and every ledger entry (docs/ledger.md); beside the energy
records, their sums per device and quarter hour (:mod:`agent.history.rollup`),
what ``report`` reads. ``report``, the live page's trends, ``GET /api/history``,
``history export`` and ``verify`` read it. Writes are the agent's
(:class:`History`); everyone else reads (:class:`HistoryReader`), also while the
agent runs.
"""

from agent.history.db import HISTORY_FILE, HistoryError, StoredRecord
from agent.history.reader import HistoryReader, Page
from agent.history.writer import History

__all__ = [
    "HISTORY_FILE",
    "History",
    "HistoryError",
    "HistoryReader",
    "Page",
    "StoredRecord",
]
