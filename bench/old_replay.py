# The replay before streaming (main:agent/replay.py when bench_backfill was written),
# kept verbatim as the baseline bench_backfill compares against. Not used by the agent.
"""`energy-agent replay FILE -c CONFIG`: recorded readings through the same core.

How users backfill from meter logs and check a bill, and how the numbers are
tested from outside: every record the agent would publish, as JSON lines
``{"topic": ..., "payload": ...}``. Bad rows are reported with their line
number and skipped, never silently used.

CSV columns (header required, any order, extra columns are an error):
``ts,device,quantity,value``. ``ts`` is Unix milliseconds or ISO 8601; an ISO
time without a UTC offset is read in the site's time zone. An empty ``value``
(or ``nan``) means the meter reported "not available".

Time is the data's: a site interval that waits for a silent meter is published
``core.site_hold_s`` after its end (in the readings' time), as the running agent
would; everything still waiting at the end of the file is published then.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from agent.config.models import AgentConfig
from agent.contract import Message
from agent.core.channels import SLOT_MS
from agent.core.site import Reading, SiteCore
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

COLUMNS = ("ts", "device", "quantity", "value")


class Topic(StrEnum):
    MEASUREMENTS = "measurements"
    ENERGY = "energy"
    INTENSITY = "intensity"


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class ReplayInputError(ValueError):
    """The file as a whole cannot be read (missing, no header, wrong columns)."""


@dataclass(frozen=True)
class Row:
    ts: int
    device: str
    quantity: Quantity
    value: float | None
    line: int


def parse_ts(text: str, tz: ZoneInfo) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return round(dt.timestamp() * 1000)


def _decoded(lines: Iterator[str], path: Path) -> Iterator[str]:
    """The file's lines; a file that is not UTF-8 is rejected as a whole, not a traceback."""
    try:
        yield from lines
    except UnicodeDecodeError as exc:
        raise ReplayInputError(
            f"{path} is not UTF-8 text (undecodable byte 0x{exc.object[exc.start]:02x}); "
            "save it as UTF-8"
        ) from None


def read_rows(
    path: Path, config: AgentConfig, library: ProfileLibrary
) -> tuple[list[Row], list[BadRow]]:
    tz = ZoneInfo(config.site.timezone)
    quantities = {d.device.id: set(d.regmap.quantities) for d in config.resolved(library)}
    rows: list[Row] = []
    bad: list[BadRow] = []
    seen: dict[tuple[str, Quantity, int], int] = {}
    try:
        f = path.open(newline="", encoding="utf-8-sig")  # -sig: a BOM (Excel) is no header
    except OSError as exc:
        raise ReplayInputError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        reader = csv.reader(_decoded(f, path))
        try:
            header = next(reader)
        except StopIteration:
            raise ReplayInputError(
                f"{path} is empty; expected a header {','.join(COLUMNS)}"
            ) from None
        names = [h.strip().lower() for h in header]
        if sorted(names) != sorted(COLUMNS):
            raise ReplayInputError(
                f"{path}: header must name the columns {','.join(COLUMNS)} "
                f"(found: {','.join(header)})"
            )
        col = {n: names.index(n) for n in COLUMNS}
        for fields in reader:
            line = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) != len(COLUMNS):
                bad.append(BadRow(line, f"expected {len(COLUMNS)} fields, got {len(fields)}"))
                continue
            ts_text, dev, q_text, v_text = (fields[col[n]].strip() for n in COLUMNS)
            try:
                ts = parse_ts(ts_text, tz)
            except ValueError:
                bad.append(
                    BadRow(line, f"ts '{ts_text}' is neither Unix milliseconds nor ISO 8601")
                )
                continue
            if dev not in quantities:
                bad.append(BadRow(line, f"unknown device '{dev}' (not in the config)"))
                continue
            try:
                q = Quantity(q_text)
            except ValueError:
                bad.append(BadRow(line, f"unknown quantity '{q_text}'"))
                continue
            if q not in quantities[dev]:
                bad.append(BadRow(line, f"device '{dev}' has no quantity '{q.value}'"))
                continue
            if v_text == "" or v_text.lower() in ("nan", "null"):
                value: float | None = None
            else:
                try:
                    value = float(v_text)
                except ValueError:
                    bad.append(BadRow(line, f"value '{v_text}' is not a number"))
                    continue
                if not math.isfinite(value):
                    bad.append(BadRow(line, f"value '{v_text}' is not a finite number"))
                    continue
            key = (dev, q, ts)
            if key in seen:
                bad.append(
                    BadRow(line, f"duplicate of line {seen[key]} (same ts, device, quantity)")
                )
                continue
            seen[key] = line
            rows.append(Row(ts, dev, q, value, line))
    rows.sort(key=lambda r: r.ts)  # stable: file order within one instant
    return rows, bad


def replay(
    config: AgentConfig,
    library: ProfileLibrary,
    rows: list[Row],
    topics: frozenset[Topic] = frozenset(Topic),
) -> Iterator[Message]:
    """Every message the agent would publish for these readings, in time order."""
    site = SiteCore(config, library)
    wanted = {t.value for t in topics}
    want_measurements = Topic.MEASUREMENTS in topics

    def keep(messages: list[Message]) -> Iterator[Message]:
        for m in messages:
            if m.kind in wanted:
                yield m

    # Readings are fed one one-minute slot at a time, so the site windows of each interval
    # are computed while the core's ring still holds them, as in the running agent. (Whole
    # intervals were too coarse: an hour's readings past a 25-hour day's end pushed its
    # first slots out of the ring before that day's `today` was computed.)
    i = 0
    n = len(rows)
    while i < n:
        boundary = (rows[i].ts // SLOT_MS + 1) * SLOT_MS
        j = i
        while j < n and rows[j].ts < boundary:
            j += 1
        chunk = rows[i:j]
        if want_measurements:
            readings: dict[tuple[str, int], dict[Quantity, float | None]] = {}
            for r in chunk:
                readings.setdefault((r.device, r.ts), {})[r.quantity] = r.value
            batch = [Reading(dev, ts, values) for (dev, ts), values in readings.items()]
            yield from keep(site.feed(batch, measurements=True))
        else:
            chans, ts, vals = [], [], []
            for r in chunk:
                info = site.by_id[r.device]
                if r.quantity is info.quantity:
                    chans.append(info.channel)
                    ts.append(r.ts)
                    vals.append(math.nan if r.value is None else r.value)
            yield from keep(
                site.feed_arrays(
                    np.array(chans, dtype=np.int64),
                    np.array(ts, dtype=np.int64),
                    np.array(vals, dtype=np.float64),
                )
            )
        # The data's clock stands in for the agent's: what waits for a meter that has
        # fallen silent (a dead or lagging meter, a child that stopped) goes out after
        # core.site_hold_s, as the running agent publishes it, and not at the very end
        # (when the ring no longer holds its windows).
        yield from keep(site.flush(now_ms=chunk[-1].ts))
        i = j
    yield from keep(site.flush())
