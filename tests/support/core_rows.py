"""The engine's rows against the reference's: integers exactly, energies to rounding.

:class:`Run` feeds hand-written streams (times as 'HH:MM:SS' on :data:`DAY`, UTC) to
both and keeps what the tests check by hand.

Both implementations are fed the same readings; what one ``Engine.feed`` closed must
be what the reference reports as closed since the previous comparison: the same
interval records, slot rows and event rows. Counts, times, flags and coverage
milliseconds are integers and must be equal; energies and demands are compared with
a tolerance scaled to the channel's magnitude (the reference differences a cumulative counter, the
kernel spreads steps: they agree to rounding, not to the bit). Within a channel the
engine's rows come in time order; event rows come in the order they happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from agent.core.channels import SLOT_MS, ChannelSpec, Event, Quality, quality_of
from agent.core.engine import Closed, Engine
from agent.core.reference import ReferenceCore


def _table(rows: Sequence[object], names: Sequence[str]) -> np.ndarray:
    """Rows' attributes as a 2-D float64 table (integers up to 2^53 are exact)."""
    table = np.empty((len(rows), len(names)))
    for j, name in enumerate(names):
        table[:, j] = [getattr(r, name) for r in rows]
    return table


def _in_time_order(channel: np.ndarray, key: np.ndarray) -> None:
    for c in np.unique(channel):
        assert np.all(np.diff(key[channel == c]) > 0), f"channel {c}: rows out of time order"


def _compare(
    what: str,
    got: np.ndarray,
    want: np.ndarray,
    exact: list[int],
    approx: list[int],
    scale: np.ndarray,
) -> None:
    """Rows of ``got`` and ``want`` (sorted by their first two columns) must agree: columns
    ``exact`` exactly, ``approx`` to 1e-9 + 1e-12 x the channel's ``scale`` (or the
    values, if larger); NaN only where the other is NaN."""
    got = got[np.lexsort((got[:, 1], got[:, 0]))]
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if not got.size:
        return
    bad = np.flatnonzero((got[:, exact] != want[:, exact]).any(axis=1))
    assert bad.size == 0, (what, "first difference", got[bad[0]].tolist(), want[bad[0]].tolist())
    row_scale = scale[got[:, 0].astype(np.int64)]
    for col in approx:
        g, w = got[:, col], want[:, col]
        nan = np.isnan(g)
        assert (nan == np.isnan(w)).all(), (what, col)
        g, w, sc = g[~nan], w[~nan], row_scale[~nan]
        tol = 1e-9 + 1e-12 * np.maximum(np.maximum(np.abs(g), np.abs(w)), sc)
        bad = np.flatnonzero(np.abs(g - w) > tol)
        assert bad.size == 0, (what, col, got[~nan][bad[0]].tolist(), want[~nan][bad[0]].tolist())


def compare_closed(closed: Closed, ref: ReferenceCore, scale: Sequence[float]) -> None:
    """What ``closed`` holds is what ``ref`` closed since the last comparison.

    ``scale[c]``: the magnitude of channel c's numbers, for the rounding allowed."""
    rec, slots, events = closed.records, closed.slots, closed.events
    scales = np.asarray(scale, dtype=np.float64)
    _in_time_order(rec.channel, rec.end_ms)
    _in_time_order(slots.channel, slots.slot)
    # records: channel, end_ms, energy, flags, measured_ms, interpolated_ms
    got = np.column_stack(
        [rec.channel, rec.end_ms, rec.energy, rec.flags, rec.measured_ms, rec.interpolated_ms]
    ).astype(np.float64)
    want = sorted(ref.closed_intervals(), key=lambda r: (r.channel, r.end_ms))
    names = ["channel", "end_ms", "energy", "flags", "measured_ms", "interpolated_ms"]
    _compare("records", got, _table(want, names), [0, 1, 3, 4, 5], [2], scales)
    # slots: channel, slot, energy, measured_ms, interpolated_ms, flags, demand_kw
    got = np.column_stack(
        [
            slots.channel,
            slots.slot,
            slots.energy,
            slots.measured_ms,
            slots.interpolated_ms,
            slots.flags,
            slots.demand_kw,
        ]
    ).astype(np.float64)
    want_slots = sorted(ref.closed_slots(), key=lambda r: (r.channel, r.slot))
    names = ["channel", "slot", "energy", "measured_ms", "interpolated_ms", "flags", "demand_kw"]
    _compare("slots", got, _table(want_slots, names), [0, 1, 3, 4, 5], [2, 6], scales)
    # events, in the order they happened: exactly
    got_events = list(
        zip(
            events.channel.tolist(),
            events.ts.tolist(),
            events.event.tolist(),
            events.value.tolist(),
            strict=True,
        )
    )
    want_events = [(e.channel, e.ts, int(e.event), e.value) for e in ref.new_events()]
    assert got_events == want_events


# --- hand-written streams ---------------------------------------------------------------

DAY = "2024-01-15"
MEASURED, INTERPOLATED, RESET, PARTIAL, GAP, INTEGRATED = (
    Quality.MEASURED,
    Quality.INTERPOLATED,
    Quality.RESET,
    Quality.PARTIAL,
    Quality.GAP,
    Quality.INTEGRATED,
)


def ms(when: str) -> int:
    """'10:00:30' on DAY, or a full ISO date-time, as Unix ms (UTC)."""
    text = when if "T" in when else f"{DAY}T{when}"
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def slot(when: str) -> int:
    return ms(when) // SLOT_MS


def hhmm(end_ms: int) -> str:
    return datetime.fromtimestamp(end_ms / 1000, UTC).strftime("%H:%M")


def hhmmss(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%H:%M:%S")


class Run:
    """Streams through both implementations; what they close must agree (rows, coverage,
    events: :mod:`tests.support.core_rows`). Channel 0's records are kept as (end
    'HH:MM', kWh, quality), its coverage as (end, measured s, interpolated s); with
    several channels every reading goes to each of them (import and export of one
    power meter)."""

    def __init__(
        self,
        spec: ChannelSpec | list[ChannelSpec],
        interval_s: int,
        *,
        demand: list[bool] | None = None,
        align_offset_slots: int = 0,
        **engine_kw: object,
    ) -> None:
        self.specs = [spec] if isinstance(spec, ChannelSpec) else spec
        self.spec = self.specs[0]
        self.engine = Engine(
            self.specs,
            interval_s,
            demand=demand,
            align_offset_slots=align_offset_slots,
            **engine_kw,  # type: ignore[arg-type]
        )
        self.ref = ReferenceCore(
            self.specs, interval_s, demand=demand, align_offset_slots=align_offset_slots
        )
        self.by_channel: list[list[tuple[str, float, Quality]]] = [[] for _ in self.specs]
        self.records = self.by_channel[0]
        self.coverage: list[tuple[str, float, float]] = []
        self.closed: list[Closed] = []
        self.event_rows: list[tuple[int, str, Event, float]] = []

    def feed(self, rows: list[tuple[str | int, float]]) -> list[tuple[str, float, Quality]]:
        n = len(self.specs)
        ts = [ms(t) if isinstance(t, str) else t for t, _ in rows for _ in range(n)]
        vals = [v for _, v in rows for _ in range(n)]
        chans = list(range(n)) * len(rows)
        closed = self.engine.feed(np.array(chans), np.array(ts), np.array(vals))
        for c, t, v in zip(chans, ts, vals, strict=True):
            self.ref.feed(c, t, v)
        compare_closed(closed, self.ref, [0.0] * n)
        rec = closed.records
        new: list[tuple[str, float, Quality]] = []
        for i in range(len(rec)):
            c, end = int(rec.channel[i]), hhmm(int(rec.end_ms[i]))
            q = quality_of(int(rec.flags[i]), self.specs[c].kind)
            self.by_channel[c].append((end, float(rec.energy[i]), q))
            if c == 0:
                new.append((end, float(rec.energy[i]), q))
                cov = (end, rec.measured_ms[i] / 1000, rec.interpolated_ms[i] / 1000)
                self.coverage.append(cov)
        self.closed.append(closed)
        self.event_rows += [
            (int(c), hhmmss(int(t)), Event(int(e)), float(v))
            for c, t, e, v in zip(
                closed.events.channel,
                closed.events.ts,
                closed.events.event,
                closed.events.value,
                strict=True,
            )
        ]
        return new

    def check(
        self, expected: list[tuple[str, float, Quality]], abs_tol: float = 1e-9, channel: int = 0
    ) -> None:
        got = self.by_channel[channel]
        assert [(e, q) for e, _, q in got] == [(e, q) for e, _, q in expected]
        assert [x for _, x, _ in got] == pytest.approx(
            [x for _, x, _ in expected], abs=abs_tol, rel=0
        )

    def events(self) -> dict[Event, int]:
        got = {e: int(self.engine.events[0, e]) for e in Event}
        assert got == {e: self.ref.events(0)[e] for e in Event}
        return {e: n for e, n in got.items() if n}

    def window(self, first: str | int, end: str | int) -> float:
        a = slot(first) if isinstance(first, str) else first
        b = slot(end) if isinstance(end, str) else end
        got = float(self.engine.range_sums([a], [b])[0, 0])
        assert got == pytest.approx(self.ref.range_sum(0, a, b), abs=1e-9, rel=0)
        return got
