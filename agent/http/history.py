"""``GET /api/history``: the gateway's history of records, a page at a time.

Query: ``from`` and ``to`` (Unix ms or ISO 8601; without an offset, UTC;
default: the last 24 hours), ``device``, ``kind`` (``energy``, ``intensity``),
``cursor`` (the ``next`` of the page before) and ``limit`` (at most 5,000;
default 500). Records with ``from < ts <= to`` (a record is filed under the end
of its interval), oldest first. The answer:
``{"from", "to", "records": [{"kind", "device", "ts", "rev", "topic",
"stored_ms", "payload"}], "next": cursor or null}``.

The file is read in a worker thread with a read-only connection of its own:
the event loop that polls the meters never waits for SQLite.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.history.db import HistoryError
from agent.history.reader import HistoryReader

DAY_MS = 86_400_000
MAX_LIMIT = 5000


class BadQuery(ValueError):
    """A query parameter that is not one; the message says which and how."""


def _time(text: str, name: str) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"{name}: '{text[:40]}' is neither Unix ms nor ISO 8601") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def answer(path: Path, query: Mapping[str, list[str]], now_ms: int | None = None) -> dict[str, Any]:
    """One page (BadQuery for a wrong parameter, HistoryError if the file cannot be read)."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    end = _time(t, "to") if (t := _one(query, "to")) else now
    start = _time(f, "from") if (f := _one(query, "from")) else end - DAY_MS
    if end <= start:
        raise BadQuery("to must be after from")
    limit_text = _one(query, "limit") or "500"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadQuery(f"limit: give 1 to {MAX_LIMIT}")
    out: dict[str, Any] = {"from": start, "to": end, "records": [], "next": None}
    if not path.exists():
        return out  # the agent has not stored a record yet
    reader = HistoryReader.open(path)
    try:
        page = reader.page(
            start,
            end,
            device=_one(query, "device"),
            kind=_one(query, "kind"),
            cursor=_one(query, "cursor"),
            limit=int(limit_text),
        )
    except ValueError as exc:  # a cursor that is not one
        raise BadQuery(str(exc)) from None
    finally:
        reader.close()
    out["records"] = [
        {
            "kind": r.kind,
            "device": r.device or None,
            "ts": r.ts,
            "rev": r.rev,
            "topic": r.topic,
            "stored_ms": r.stored_ms,
            "payload": json.loads(r.payload),
        }
        for r in page.records
    ]
    out["next"] = page.next_cursor
    return out


__all__ = ["BadQuery", "HistoryError", "answer"]
