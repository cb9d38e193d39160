"""`energy-agent report`: the document that closes a month (docs/report.md).

Reads closed energy records from one of three places (the gateway's history,
JSON lines as `replay` and `history export` write them, the central store) into
one stream (:mod:`~agent.report.sources`), works out the figures in plain
functions (:mod:`~agent.report.figures`, :mod:`~agent.report.tariff`), checks
the ledger hour by hour where the source has one
(:mod:`~agent.report.verification`), and renders tables (:mod:`~agent.report.tables`)
as HTML, XLSX and CSV. Words for people come from agent/i18n (domain ``report``).

It reads records and never produces them: it imports the history, the ledger,
the store and the contract, never the runtime, the bridge, the page or the CLI
(an import rule in pyproject.toml).
"""

from __future__ import annotations


class ReportError(Exception):
    """The report cannot be made: the message says why and what to do (exit 2 or 3)."""


class NoRecords(ReportError):
    """The source holds no energy record in the period (exit 3: ran, made nothing)."""


class SourceDown(ReportError):
    """The source could not be read (a store that is down; exit 1)."""


__all__ = ["NoRecords", "ReportError", "SourceDown"]
