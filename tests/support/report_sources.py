"""The same records in the report's three sources: a gateway's history (with its
signed ledger, sealed by the real Sealer), JSON lines, and VictoriaMetrics (written
as the bridge writes them: its pydantic models and line protocol, over /write)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.bridge.lineproto import to_lines
from agent.contract import encode, parse_topic
from agent.contract.models import MODELS
from agent.history import HISTORY_FILE, History
from agent.history.writer import new_record
from agent.ledger import keys
from agent.ledger.sealer import Sealer

PREFIX = "energy/v1"


def messages(jsonl: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with jsonl.open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            yield obj["topic"], obj["payload"]


def history_of(
    jsonl: Path, state_dir: Path, *, chain_from_ms: int, until_ms: int, period_s: int = 3600
) -> Path:
    """A state_dir whose history holds the file's records and whose ledger seals every
    period from ``chain_from_ms`` to ``until_ms``; returns the history file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if not (state_dir / keys.KEY_FILE).exists():
        keys.init(state_dir)
    history = History(state_dir / HISTORY_FILE, max_bytes=2**30, retention_months=240)
    try:
        sealer = Sealer(
            history, state_dir, site="plant-a", gateway="gw-01", period_s=period_s, delay_s=0
        )
        sealer.start(chain_from_ms)
        batch = []
        for topic, payload in messages(jsonl):
            batch.append(new_record(parse_topic(topic, PREFIX), topic, payload, encode(payload)))
            if len(batch) >= 2000:
                history.put(batch)
                batch = []
        history.put(batch)
        while sealer.seal(until_ms):
            pass
    finally:
        history.close()
    return state_dir / HISTORY_FILE


def write_victoria(jsonl: Path, url: str) -> int:
    """The file's records into VictoriaMetrics as the bridge writes them; the lines sent."""
    lines: list[str] = []
    for topic, payload in messages(jsonl):
        ref = parse_topic(topic, PREFIX)
        lines += to_lines(ref, MODELS[ref.kind].model_validate(payload))
    for i in range(0, len(lines), 5000):
        body = ("\n".join(lines[i : i + 5000]) + "\n").encode()
        req = urllib.request.Request(f"{url}/write", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as answer:
            assert answer.status in (200, 204), answer.status
    with urllib.request.urlopen(f"{url}/internal/force_flush", timeout=30):
        pass
    return len(lines)


def write_verdicts(state_dir: Path, url: str, *, failed_end_ms: int | None = None) -> int:
    """The history's ledger entries into VictoriaMetrics with the bridge's verdict on each,
    as the bridge writes them (its entry point, then ``verified``/``records``/``reason``
    at the period's end); the entry ending at ``failed_end_ms`` failed. Returns entries."""
    from agent.bridge.lineproto import line
    from agent.contract import MessageKind, TopicRef
    from agent.history.reader import HistoryReader

    reader = HistoryReader.open(state_dir / HISTORY_FILE)
    try:
        entries = [row.entry for row in reader.entries()]
    finally:
        reader.close()
    lines: list[str] = []
    for e in entries:
        ref = TopicRef(MessageKind.LEDGER, e["site"], e["gateway"], None)
        lines += to_lines(ref, MODELS[MessageKind.LEDGER].model_validate(e))
        ok = e["period_end"] != failed_end_ms
        fields = {"verified": int(ok), "records": 0, "reason": 0 if ok else 5}
        tags = {"site": e["site"], "gateway": e["gateway"]}
        lines.append(line("ledger", tags, fields, int(e["period_end"])))
    body = ("\n".join(lines) + "\n").encode()
    req = urllib.request.Request(f"{url}/write", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as answer:
        assert answer.status in (200, 204), answer.status
    with urllib.request.urlopen(f"{url}/internal/force_flush", timeout=30):
        pass
    return len(entries)
