"""Replay's bulk lane: the records of many closed intervals per call, the same bytes.

`replay` feeds the site one one-minute slot at a time (:mod:`agent.replay.pipeline`),
and per closed interval the site builds the windows, the payload dicts and their
JSON in Python: about 100 µs an interval, 60 s of a year at one-minute intervals.
When the readings are regular this lane does the same work for a whole batch of
slots at once and writes the JSON lines directly, and it is **byte for byte** the
output of the per-slot path, which stays the only path of the running agent.

Regular means that nothing but the plain closing of intervals happens in the batch,
so the per-slot path's order of work is known in advance: every channel has data and
its reading in every slot (so each slot closes for all channels in the next slot's
call, each interval's energy records and then its intensity record go out at once),
no corrections (events), no meter tree, electricity meters only (an export channel,
a counter's or a power-only meter's, reads in every slot too and closes with its
meter: the record's ``export_kwh``, and the windows' ``net_import_kwh`` from the
series' NET column), nothing owed or held from before, and the months the engine
knows already cover the batch. Whatever the engine then reports must be exactly
that (else its state is put back and the caller feeds those slots one at a time).

The numbers are the per-slot path's own: the same series rows and day sums
(``SiteSeries.add(..., by_slot=True)``), the window sums in the same order
(:func:`agent.core.kernel.tail_sums`), the ratios with the same IEEE operations, and each
number through the same ``round(x, 9) + 0.0`` and ``repr`` that ``json`` uses. The
key order comes from payloads built by :mod:`agent.contract.build` itself.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from agent.contract.kinds import Message, MessageKind
from agent.contract.vocab import Carrier
from agent.core.bulk_text import BulkText
from agent.core.channels import SLOT_MS
from agent.core.engine import Closed, Records
from agent.core.series import SUMS
from agent.core.site import SiteCore
from agent.core.windows import ROLLING


class BulkLane:
    """The site's bulk lane: :meth:`feed` takes a regular stretch, or refuses it."""

    def __init__(self, site: SiteCore) -> None:
        self.site = site
        self.eligible = self._eligible()
        self.text = BulkText(site)
        self.eligible = self.eligible and self.text.known
        #: The messages the last :meth:`feed` made, by kind.
        self.counts: dict[str, int] = {}

    def _eligible(self) -> bool:
        site = self.site
        devices = site.devices
        return (
            all(d.carrier is Carrier.ELECTRICITY for d in devices)
            and not any(site.tree.is_parent(i) for i in range(len(devices)))
            and all(d.device.parent is None for d in devices)
            and site.windows.series.width > SUMS
        )

    # --- the lane -------------------------------------------------------------------

    def feed(self, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> list[Message] | None:
        """Main-quantity readings of whole slots, in time order: their messages, as the
        per-slot path makes them; None (and nothing changed) when they are not regular."""
        eng = self.site.engine
        if not self.eligible or not ts.size:
            return None
        ready = self._ready(chans, ts, vals)
        if ready is None:
            return None
        live, open_before = ready
        saved = {k: v.copy() for k, v in eng.state_arrays().items()}
        closed = eng.feed(chans, ts, vals)
        open_after = int(ts[-1]) // SLOT_MS
        if not self._closed_as_expected(closed, live, open_before, open_after):
            for k, v in eng.state_arrays().items():
                v[...] = saved[k]
            return None
        self.site.windows.series.add(closed.slots, by_slot=True)
        return self._messages(closed, live)

    def _ready(
        self, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray
    ) -> tuple[np.ndarray, int] | None:
        """The channels with data and the slot they all have open, when the batch is
        regular for them: nothing owed, each of them read in every slot, no other."""
        site, eng = self.site, self.site.engine
        opened = eng.closed_slot_end()
        live = np.flatnonzero(opened != np.iinfo(np.int64).min)
        if not live.size or site.windows.owed() or np.isnan(vals).any():
            return None
        o = int(opened[live[0]])
        slots = ts // SLOT_MS
        cuts = np.flatnonzero(slots[1:] != slots[:-1]) + 1
        first = slots[np.r_[0, cuts]]
        if (
            (opened[live] != o).any()
            or first[0] not in (o, o + 1)
            or (np.diff(first) != 1).any()
            or len({eng.emitted_end(int(c)) for c in live}) != 1
            or site.windows.last_published() > o * SLOT_MS
        ):
            return None
        m = len(eng.specs)
        group = np.repeat(np.arange(first.size), np.diff(np.r_[0, cuts, slots.size]))
        seen = np.zeros(first.size * m, dtype=bool)
        seen[group * m + chans] = True  # (slot, channel) pairs read (no sort: a bulk call)
        if int(seen.sum()) != first.size * live.size or not np.isin(chans, live).all():
            return None  # a slot without some channel's reading, or a channel starting
        covered = site.months_covered
        if covered is None or not covered[0] <= int(ts.min()) <= int(ts.max()) <= covered[1]:
            return None
        if self.text.net and site.windows.series.net_from is not None:
            # restored from a file without export sums: a window begun before it leaves
            # net_import_kwh out, which one template cannot (replay starts afresh)
            return None
        return live, o

    def _closed_as_expected(
        self, closed: Closed, live: np.ndarray, open_before: int, open_after: int
    ) -> bool:
        """Every live channel closed every slot from the one open before to the one open
        now, in slot order, each interval's record too, and nothing else happened."""
        want = np.repeat(np.arange(open_before, open_after), live.size)
        rec = closed.records
        n_ends = np.unique(rec.end_ms).size
        return (
            not len(closed.events)
            and np.array_equal(closed.slots.slot, want)
            and rec.channel.size == n_ends * live.size
            and bool((self.site.engine.closed_slot_end()[live] == open_after).all())
        )

    # --- the records ------------------------------------------------------------------

    def _messages(self, closed: Closed, live: np.ndarray) -> list[Message]:
        """Per interval end: its energy records by device, then its intensity record."""
        site = self.site
        rec = closed.records
        order = np.lexsort((rec.channel, rec.end_ms))
        ends = rec.end_ms[order][:: live.size]
        if not ends.size:
            self.counts = {}
            return []
        energy = self._energy_records(rec, order, live)
        intensity = self._intensity_records(ends)
        self.counts = {MessageKind.ENERGY: len(energy), MessageKind.INTENSITY: len(intensity)}
        per_end = len(energy) // ends.size
        out: list[Message] = []
        for k in range(ends.size):
            out += energy[k * per_end : (k + 1) * per_end]
            out.append(intensity[k])
        last = int(ends[-1])
        # the state the per-slot path leaves: the last record's revision and windows,
        # the published record the live page shows, what no window needs any more
        windows = site.windows.at(last)
        rev = site.windows.revision(last, windows)
        site.latest_intensity = site.records.intensity(last, windows, 0 if rev is None else rev)
        site.windows.forget_before(last // SLOT_MS)
        return out

    def _energy_records(self, rec: Records, order: np.ndarray, live: np.ndarray) -> list[Message]:
        """The energy records, a grid of (end, live channel) in the per-slot path's order."""
        site = self.site
        n = len(site.devices)
        shape = (-1, live.size)
        ch = rec.channel[order].reshape(shape)
        main = np.flatnonzero(live < n)
        export_of = {
            int(site.channels.device_of[c]): j for j, c in enumerate(live.tolist()) if c >= n
        }
        iv_ms, interval_s = site.engine.interval_ms, site.interval_s
        end = rec.end_ms[order].reshape(shape)[:, 0]
        native = rec.energy[order].reshape(shape)
        static = site.factors.static(Carrier.ELECTRICITY)
        factor = np.array(
            [
                site.factors.at(Carrier.ELECTRICITY, e - interval_s * 1000, e).value
                for e in end.tolist()
            ]
            if static is None
            else np.full(end.size, static)
        )[:, None]
        meas = rec.measured_ms[order].reshape(shape) / iv_ms
        interp = rec.interpolated_ms[order].reshape(shape) / iv_ms
        gone = 1.0 - meas - interp
        grids = {
            "energy_kwh": native,
            "co2_kg": native * factor,
            "avg_power_kw": native * 3600.0 / interval_s,
            "ef_kg_per_kwh": np.broadcast_to(factor, native.shape),
            "measured_share": meas,
            "interpolated_share": interp,
            "missing_share": np.where(gone > 0.0, gone, 0.0),
            "export_kwh": native,
        }
        devices = [(j, int(live[j]), export_of.get(int(live[j]))) for j in main.tolist()]
        return self.text.energy(end, grids, (ch, rec.flags[order]), devices)

    def _intensity_records(self, ends: np.ndarray) -> list[Message]:
        """The intensity records of ``ends`` (Unix ms, ascending), as SiteWindows.at and
        RecordBuilder.intensity make them one at a time."""
        site = self.site
        windows, series = site.windows, site.windows.series
        t = ends // SLOT_MS
        lengths = np.empty((t.size, len(ROLLING) + 1), dtype=np.int64)
        lengths[:, : len(ROLLING)] = list(ROLLING.values())
        month_slots = np.empty(t.size, dtype=np.int64)
        days: list[int] = []
        for k, e in enumerate(ends.tolist()):
            day, day_start, month_start = windows.day_of(e - 1)
            lengths[k, -1] = t[k] - day_start
            month_slots[k] = t[k] - month_start
            days.append(day.toordinal())
        sums = np.empty((t.size, len(ROLLING) + 2, series.width))
        data = np.ascontiguousarray(series.data)
        site.engine.k.tail_sums(data, series.base, t, lengths, sums)
        month_before = {
            d: series.days_of_month_before(date.fromordinal(d)) for d in dict.fromkeys(days)
        }
        sums[:, -1] = np.array([month_before[d] for d in days]) + sums[:, -2]
        slots = np.concatenate([lengths, month_slots[:, None]], axis=1)
        return self.text.intensity(ends, sums, slots)
