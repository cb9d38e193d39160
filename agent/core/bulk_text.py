"""The bulk lane's JSON (agent/core/bulk.py): records written from numbers, the same bytes.

The per-slot path builds each payload as a dict (:mod:`agent.contract.build`,
numbers ``round(x, 9) + 0.0``) and ``json`` writes it (floats by their repr). Here
the same numbers, computed with the same IEEE operations over whole batches, go
through the same rounding and repr into templates made from payloads those
builders built (key order, fixed values, ``%s`` where a value changes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.contract.kinds import Message, MessageKind
from agent.contract.vocab import Window
from agent.core.bulk_lines import Slot, lines, parts_of
from agent.core.channels import SLOT_MS, quality_of
from agent.core.series import CO2, ENERGY, INTERPOLATED, KGCE, MEASURED, NET, SUMS, UNITS
from agent.core.site import SiteCore
from agent.core.windows import MISSING_NAMED, ROLLING, Totals

#: Distinct numbers kept formatted; beyond it the cache starts again (memory stays bounded).
FORMAT_CACHE = 1 << 17
_DIGITS = 9
_ENERGY_VARS = (
    "ts",
    "export_kwh",
    "energy_kwh",
    "co2_kg",
    "avg_power_kw",
    "ef_kg_per_kwh",
    "quality",
    "measured_share",
    "interpolated_share",
    "missing_share",
)
_ENERGY_FIXED = ("interval_s", "carrier", "root", "parent")
#: The payload of a message written as text (``Message.text``): one, never changed.
_NO_PAYLOAD: dict[str, Any] = {}
#: The windows of an intensity record, in its order.
_WINDOWS = [*(w.value for w in ROLLING), Window.TODAY.value, Window.MONTH.value]


def _number(x: float) -> str:
    """A payload number as ``json`` writes it: ``round(x, 9) + 0.0``, then its repr."""
    v = round(x, _DIGITS) + 0.0
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    return float.__repr__(v)


#: Veltkamp's constant for doubles (2**27 + 1): splits one into two halves of 26 bits.
_SPLIT = 134_217_729.0
_SCALE = 1e9  # 10**_DIGITS, exact as a double


def _halves(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLIT * a
    high = c - (c - a)
    return high, a - high


def round_many(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``round(v, 9) + 0.0`` of each ``v``, and where this is certain (elsewhere: ask Python).

    Python rounds the exact product ``v * 10**9`` to the nearest integer ``n`` (half to
    even) and returns the double nearest ``n / 10**9``. Here ``y = fl(v * 1e9)`` and its
    error ``e`` (exact: Dekker's product), ``n = rint(y)``, and the exact offset of the
    product from ``n`` is ``(y - n) + e`` (``y - n`` exact): above 0.5, ``n + 1``; below
    -0.5, ``n - 1``; at ±0.5 as a double, a tie or too close to tell: not certain. With
    ``|y| < 2**52``, ``n`` is an exact integer and ``n / 1e9`` one correctly rounded
    division, the double nearest ``n / 10**9``: Python's result, bit for bit.
    """
    with np.errstate(all="ignore"):
        y = x * _SCALE
        xh, xl = _halves(x)
        sh, sl = _halves(np.array(_SCALE))
        e = ((xh * sh - y) + xh * sl + xl * sh) + xl * sl
        n = np.rint(y)
        t = (y - n) + e
        n = n + (t > 0.5) - (t < -0.5)
        sure = (np.abs(y) < 2.0**52) & (np.abs(t) != 0.5) & np.isfinite(e)
        return n / _SCALE + 0.0, sure


class Numbers:
    """``_number`` with a bounded cache: the same values come back interval after
    interval (shares of 1.0, a steady load's energy). Looked up by ``map`` and a set
    difference, loops in C: per value a dict lookup, not a Python statement."""

    def __init__(self) -> None:
        self._cache: dict[float | None, str] = {None: "null"}

    def of(self, values: Sequence[float | None]) -> list[str]:
        cache = self._cache
        if len(cache) > FORMAT_CACHE:
            cache.clear()
            cache[None] = "null"
        # 0.0 and -0.0 are one key: both are written "0.0" (round(x, 9) + 0.0)
        new: list[float] = list(set(values).difference(cache))  # type: ignore[arg-type]
        if new:
            rounded, sure = round_many(np.array(new, dtype=np.float64))
            texts = list(map(float.__repr__, rounded.tolist()))
            for i in np.flatnonzero(~sure).tolist():
                texts[i] = _number(new[i])
            cache.update(zip(new, texts, strict=True))
        return list(map(cache.__getitem__, values))

    def column(self, values: np.ndarray, keep: np.ndarray | None = None) -> Slot:
        """The texts of a column of ``values`` (None where not ``keep``): one text when it
        is the same in every row (equal numbers are written alike, 0.0 and -0.0 too)."""
        if values.size and (values == values[0]).all():
            if keep is None or keep.all():
                return self.of([float(values[0])])[0]
            if not keep.any():
                return "null"
        if keep is None:
            return self.of(values.tolist())
        return self.of(_nulls(values, keep))


def _template(payload: dict[str, Any], variable: Sequence[str]) -> str:
    """``payload`` as compact JSON with ``%s`` where its ``variable`` keys' values go."""
    enc = json.JSONEncoder(separators=(",", ":")).encode
    parts = [
        f"{enc(k)}:%s" if k in variable else f"{enc(k)}:{enc(v)}".replace("%", "%%")
        for k, v in payload.items()
    ]
    return "{" + ",".join(parts) + "}"


class BulkText:
    """The records' JSON, written from numbers as the contract's builders and ``json``
    write them; key order and fixed values from payloads those builders made."""

    def __init__(self, site: SiteCore) -> None:
        self.site = site
        self.numbers = Numbers()
        self._quality: dict[tuple[int, int], str] = {}
        self._missing: dict[tuple[str, ...], str] = {}
        self._energy: dict[tuple[int, bool], tuple[list[str], list[str]]] = {}
        self.known = True
        #: The site's windows carry its net import (a root meter can export).
        self.net = site.windows.series.weights.net_import
        #: The intensity record around its ts and each window's values.
        self._record = parts_of(self._intensity_template())

    def _energy_template(self, i: int, export: bool) -> tuple[list[str], list[str]]:
        """Device ``i``'s energy payload (with its export or not) with ``%s`` for what
        changes per record, and those keys in order."""
        made = self._energy.get((i, export))
        if made is None:
            sample = self.site.records.energy(
                self.site.devices[i],
                60_000,
                native=1.0,
                kwh=1.0,
                flags=0,
                has_children=False,
                export_kwh=1.0 if export else None,
            )
            if not set(sample) <= {*_ENERGY_VARS, *_ENERGY_FIXED}:
                raise ValueError(
                    f"the bulk lane does not know an energy record of {sorted(sample)}"
                )
            keys = [k for k in sample if k in _ENERGY_VARS]
            made = self._energy[(i, export)] = (parts_of(_template(sample, keys)), keys)
        return made

    def _intensity_template(self) -> str:
        """The intensity payload with ``%s`` for its ts and each window's values."""
        net = 1.0 if self.net else None
        totals = {
            w: Totals(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, net_import_kwh=net) for w in _WINDOWS
        }
        sample = self.site.records.intensity(60_000, totals, 0)
        window = sample["windows"][Window.MIN_1.value]
        self._window_order = list(window)
        if list(sample) != ["ts", "rev", "windows"] or list(sample["windows"]) != _WINDOWS:
            self.known = False
        windows = ",".join(f'"{w}":%s' for w in _WINDOWS)
        record = '{"ts":%s,"rev":0,"windows":{' + windows + "}}"
        return record % ("%s", *[_template(window, self._window_order)] * len(_WINDOWS))

    def energy(
        self,
        end: np.ndarray,
        grids: dict[str, np.ndarray],
        flags: tuple[np.ndarray, np.ndarray],
        devices: list[tuple[int, int, int | None]],
    ) -> list[Message]:
        """Energy records from grids of (interval end, channel) values: per end, per
        ``(column, device, column of its export or None)`` of ``devices``, in order."""
        site, column = self.site, self.numbers.column
        ch, fl = flags[0], flags[1].reshape(flags[0].shape)
        ts = list(map(str, end.tolist()))
        kind = MessageKind.ENERGY
        per_device = []
        for j, i, x in devices:
            template, keys = self._energy_template(i, x is not None)
            slots: list[Slot] = []
            for k in keys:
                if k == "ts":
                    slots.append(ts)
                elif k == "quality":
                    slots.append(self._qualities(ch[:, j], fl[:, j]))
                else:
                    slots.append(column(grids[k][:, x if k == "export_kwh" else j]))
            device = site.devices[i].device.id
            topic = site.topics.topic(kind, device)
            texts = lines(template, slots, end.size)
            per_device.append([Message(kind, topic, _NO_PAYLOAD, device, t) for t in texts])
        if len(per_device) == 1:
            return per_device[0]
        return [m for row in zip(*per_device, strict=True) for m in row]

    def _qualities(self, ch: np.ndarray, flags: np.ndarray) -> Slot:
        """A channel's ``quality`` texts from its slots' flags (one for all: the same)."""
        devices, device_of = self.site.devices, self.site.channels.device_of
        kinds = [devices[int(device_of[c])].channel_kind for c in range(len(device_of))]
        cache = self._quality
        if (ch == ch[0]).all() and (flags == flags[0]).all():
            ch, flags = ch[:1], flags[:1]
        out = []
        for c, f in zip(ch.tolist(), flags.tolist(), strict=True):
            q = cache.get((c, f))
            if q is None:
                q = cache[(c, f)] = json.dumps(quality_of(f, kinds[c]).value)
            out.append(q)
        return out[0] if len(out) == 1 and ch.size == 1 else out

    def intensity(self, ends: np.ndarray, sums: np.ndarray, slots: np.ndarray) -> list[Message]:
        """Intensity records from the window sums of ``ends`` (``sums[k, window]``, each
        window ``slots[k, window]`` long), as SiteWindows and RecordBuilder make them."""
        site = self.site
        names = site.windows.names
        counted = len(names)
        window_ms = slots * SLOT_MS
        short = sums[:, :, SUMS:] < window_ms[:, :, None]
        span = (window_ms * counted).astype(np.float64)
        e, co2, units, kgce = (sums[:, :, k] for k in (ENERGY, CO2, UNITS, KGCE))
        m, i = sums[:, :, MEASURED], sums[:, :, INTERPOLATED]
        with np.errstate(divide="ignore", invalid="ignore"):
            has = span > 0
            ms_share = np.where(has, _min1(m / span), 0.0)
            is_share = np.where(has, _min1(i / span), 0.0)
            gone = 1.0 - (m + i) / span
            gone = np.where(has & (gone > 0.0), gone, 0.0)
            per_unit = (units != 0) & np.isfinite(units)
            per_kwh = (e != 0) & np.isfinite(e)
            kwh_unit = e / units
            co2_unit = co2 / units
            g_kwh = co2 / e * 1000.0
        tce = kgce / 1000.0
        values: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
            "energy_kwh": (e, None),
            "co2_kg": (co2, None),
            "output_units": (units, None),
            "kwh_per_unit": (kwh_unit, per_unit),
            "kgco2_per_unit": (co2_unit, per_unit),
            "intensity_g_per_kwh": (g_kwh, per_kwh),
            "tce": (tce, None),
            "measured_share": (ms_share, None),
            "interpolated_share": (is_share, None),
            "missing_share": (gone, None),
        }
        if self.net:
            values["net_import_kwh"] = (sums[:, :, NET], None)
        column = self.numbers.column
        fill: list[Slot] = [list(map(str, ends.tolist()))]
        for w in range(len(_WINDOWS)):
            count, named = self._missing_cells(short[:, w])
            for key in self._window_order:
                if key == "missing_count":
                    fill.append(count)
                elif key == "missing_devices":
                    fill.append(named)
                else:
                    v, keep = values[key]
                    fill.append(column(v[:, w], None if keep is None else keep[:, w]))
        kind = MessageKind.INTENSITY
        topic = site.topics.topic(kind)
        texts = lines(self._record, fill, ends.size)
        return [Message(kind, topic, _NO_PAYLOAD, None, t) for t in texts]

    def _missing_cells(self, short: np.ndarray) -> tuple[Slot, Slot]:
        """One window's ``missing_count`` and ``missing_devices`` texts, per row
        (``short[row, meter]``: the meter covered less than the window)."""
        names = self.site.windows.names
        if (short == short[:1]).all():  # the same meters miss it in every row
            return str(int(short[0].sum())), self._named(short[0], names)
        count = short.sum(axis=1)
        named = np.full(count.size, json.dumps([]), dtype=object)
        rows = np.flatnonzero(count)  # the rows some meter misses, by who misses them
        if rows.size:
            patterns, at = np.unique(short[rows], axis=0, return_inverse=True)
            texts = [self._named(p, names) for p in patterns]
            named[rows] = np.array(texts, dtype=object)[at.ravel()]
        return list(map(str, count.tolist())), named.tolist()

    def _named(self, short: np.ndarray, names: Sequence[str]) -> str:
        """``missing_devices``: the first of the meters ``short`` of a window."""
        who = tuple(names[x] for x in np.flatnonzero(short).tolist())
        text = self._missing.get(who)
        if text is None:
            text = self._missing[who] = json.dumps(list(who[:MISSING_NAMED]), separators=(",", ":"))
        return text


def _min1(a: np.ndarray) -> np.ndarray:
    """Python's ``min(a, 1.0)``: 1.0 only where it is smaller (NaN stays NaN)."""
    return np.where(a > 1.0, 1.0, a)


def _nulls(a: np.ndarray, keep: np.ndarray) -> list[float | None]:
    """``a``'s values as floats, None where not ``keep``."""
    out = a.ravel().astype(object)
    out[~keep.ravel()] = None
    values: list[float | None] = out.tolist()
    return values
