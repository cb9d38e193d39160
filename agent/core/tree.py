"""The meter tree: parents, children, and the parent records that wait for their children.

A parent's ``energy`` record carries ``unmetered_kwh`` = its own energy − the
sum of its children's for the same interval, when that difference means what it
says: the parent and every child covered the whole interval (measured or
interpolated). So a closed parent record is held here until every child has
closed that interval, or until the site gives up on a late child
(``core.site_hold_s``, the end of a replay). It goes out with
``unmetered_kwh`` unknown (null) and the count of its children that did not
cover the interval, when any did not (late, silent, started inside it, a power
gap) or the parent itself did not. A child with no record to come for an
interval (it has no data, or started later) is not waited for. Records are opaque here: the
tree holds them and says what is unmetered; :mod:`agent.core.records` writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.snapshot import Snapshot

#: ``may_deliver(i, end)``: device ``i`` may still close the interval ending at ``end``.
MayDeliver = Callable[[int, int], bool]


@dataclass(frozen=True)
class Released:
    """A parent record that can go out now, its unmetered energy (None: unknown) and
    how many of its children did not cover its interval."""

    device: int
    end: int
    payload: dict[str, Any]
    unmetered_kwh: float | None
    incomplete_children: int


class MeterTree:
    def __init__(
        self, ids: Sequence[str], parents: Sequence[int | None], may_deliver: MayDeliver
    ) -> None:
        self._ids = list(ids)
        self._may_deliver = may_deliver
        self._parent_of = {i: p for i, p in enumerate(parents) if p is not None}
        self.children: list[list[int]] = [[] for _ in parents]
        for i, p in self._parent_of.items():
            self.children[p].append(i)
        self._held: list[tuple[int, int, dict[str, Any]]] = []  # (end, device, payload)
        self._child_energy: dict[tuple[int, int], float] = {}  # (device, end): kWh
        self._own_energy: dict[tuple[int, int], float] = {}

    def is_parent(self, i: int) -> bool:
        return bool(self.children[i])

    def closed(
        self, i: int, end: int, kwh: float, payload: dict[str, Any], *, covered: bool = True
    ) -> bool:
        """Device ``i`` closed the interval ending at ``end`` with ``kwh`` (``covered``:
        all of the interval measured or interpolated; otherwise its ``kwh`` is kept as
        NaN, known to be short); True when its record (``payload``) is held here for its
        children, False when it can go out."""
        if not covered:
            kwh = math.nan
        if i in self._parent_of:
            self._child_energy[(i, end)] = kwh
        if not self.children[i]:
            return False
        self._held.append((end, i, payload))
        self._own_energy[(i, end)] = kwh
        return True

    def release(self, *, final: bool, older_than: int | None = None) -> list[Released]:
        """The held records whose children have all delivered (or never will), in
        (end, device) order; with ``final``, all of them; with ``older_than``, also those
        of intervals ending no later than that (the site stopped waiting)."""
        out: list[Released] = []
        keep: list[tuple[int, int, dict[str, Any]]] = []
        for end, i, payload in sorted(self._held, key=lambda h: (h[0], h[1])):
            kids = [self._child_energy.get((c, end)) for c in self.children[i]]
            waiting = any(
                k is None and self._may_deliver(c, end)
                for c, k in zip(self.children[i], kids, strict=True)
            )
            if not waiting or final or (older_than is not None and end <= older_than):
                own = self._own_energy.pop((i, end))
                short = sum(k is None or math.isnan(k) for k in kids)
                unmetered = None
                if not short and not math.isnan(own):
                    unmetered = own - math.fsum(k for k in kids if k is not None)
                out.append(Released(i, end, payload, unmetered, short))
                for c in self.children[i]:
                    self._child_energy.pop((c, end), None)
            else:
                keep.append((end, i, payload))
        self._held = keep
        # A child's energy for an interval its parent has already passed (or never had)
        # has no record left to go into: drop it, or it would pile up for ever.
        held = {(end, i) for end, i, _ in keep}
        for c, end in list(self._child_energy):
            p = self._parent_of[c]
            if (end, p) not in held and not self._may_deliver(p, end):
                del self._child_energy[(c, end)]
        return out

    # --- snapshot (agent.core.snapshot.Part) -----------------------------------------

    def save(self, snap: Snapshot) -> None:
        ids = self._ids
        snap.put("held", [[end, ids[i], p] for end, i, p in self._held])
        snap.put("child_energy", [[ids[i], end, v] for (i, end), v in self._child_energy.items()])
        snap.put("own_energy", [[ids[i], end, v] for (i, end), v in self._own_energy.items()])

    def restorer(self, snap: Snapshot, *, same_interval: bool) -> Callable[[], None]:
        """Devices are matched by id; what belongs to a device no longer configured, or
        to intervals of another length, is dropped."""
        idx = {dev: i for i, dev in enumerate(self._ids)}
        held = snap.value("held", lambda v: [(end, dev, p) for end, dev, p in v if dev in idx])

        def energies(v: Any) -> dict[tuple[int, int], float]:
            return {(idx[dev], end): val for dev, end, val in v if dev in idx}

        child_energy = snap.value("child_energy", energies)
        own_energy = snap.value("own_energy", energies)

        def restore() -> None:
            if same_interval:
                self._held = [(end, idx[dev], p) for end, dev, p in held]
                self._child_energy = child_energy
                self._own_energy = own_energy

        return restore
