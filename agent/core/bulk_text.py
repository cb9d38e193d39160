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


class Numbers:
    """``_number`` with a bounded cache: the same values come back interval after
    interval (shares of 1.0, a steady load's energy)."""

    def __init__(self) -> None:
        self._cache: dict[float, str] = {}

    def of(self, values: Sequence[float | None]) -> list[str]:
        cache = self._cache
        if len(cache) > FORMAT_CACHE:
            cache.clear()
        out = []
        for x in values:
            if x is None:
                out.append("null")
                continue
            s = cache.get(x)
            if s is None:
                s = cache[x] = _number(x)
            out.append(s)
        return out


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
        self._energy: dict[tuple[int, bool], tuple[str, list[str]]] = {}
        self.known = True
        self._window_line, self._intensity_line = self._intensity_templates()

    def _energy_template(self, i: int, export: bool) -> tuple[str, list[str]]:
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
            made = self._energy[(i, export)] = (_template(sample, keys), keys)
        return made

    def _intensity_templates(self) -> tuple[str, str]:
        """A window's payload, and the record's around its windows, with ``%s``."""
        #: The site's windows carry its net import (a root meter can export).
        self.net = self.site.windows.series.weights.net_import
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
        return _template(
            window, self._window_order
        ), '{"ts":%s,"rev":0,"windows":{' + windows + "}}"

    def energy(
        self,
        end: np.ndarray,
        grids: dict[str, np.ndarray],
        flags: tuple[np.ndarray, np.ndarray],
        devices: list[tuple[int, int, int | None]],
    ) -> list[Message]:
        """Energy records from grids of (interval end, channel) values: per end, per
        ``(column, device, column of its export or None)`` of ``devices``, in order."""
        site, fmt = self.site, self.numbers.of
        shape = grids["energy_kwh"].shape
        cells = {
            k: np.array(fmt(g.ravel().tolist()), dtype=object).reshape(shape)
            for k, g in grids.items()
        }
        cells["ts"] = np.array([str(e) for e in end.tolist()], dtype=object)[:, None].repeat(
            shape[1], 1
        )
        ch, fl = flags
        cells["quality"] = np.array(self._qualities(ch.ravel(), fl), dtype=object).reshape(shape)
        kind, out = MessageKind.ENERGY, []
        columns = []
        for j, i, x in devices:
            template, keys = self._energy_template(i, x is not None)
            device = site.devices[i].device.id
            topic = site.topics.topic(kind, device)
            cols = [cells[k][:, x if k == "export_kwh" else j].tolist() for k in keys]
            columns.append((template, topic, device, list(zip(*cols, strict=True))))
        for k in range(end.size):
            for template, topic, device, rows in columns:
                out.append(Message(kind, topic, {}, device, template % rows[k]))
        return out

    def _qualities(self, ch: np.ndarray, flags: np.ndarray) -> list[str]:
        devices, device_of = self.site.devices, self.site.channels.device_of
        kinds = [devices[int(device_of[c])].channel_kind for c in range(len(device_of))]
        cache = self._quality
        out = []
        for c, f in zip(ch.tolist(), flags.tolist(), strict=True):
            q = cache.get((c, f))
            if q is None:
                q = cache[(c, f)] = json.dumps(quality_of(f, kinds[c]).value)
            out.append(q)
        return out

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
        fmt = self.numbers.of
        cols = {
            "energy_kwh": fmt(e.ravel().tolist()),
            "co2_kg": fmt(co2.ravel().tolist()),
            "output_units": fmt(units.ravel().tolist()),
            "kwh_per_unit": fmt(_nulls(kwh_unit, per_unit)),
            "kgco2_per_unit": fmt(_nulls(co2_unit, per_unit)),
            "intensity_g_per_kwh": fmt(_nulls(g_kwh, per_kwh)),
            "tce": fmt(tce.ravel().tolist()),
            "measured_share": fmt(ms_share.ravel().tolist()),
            "interpolated_share": fmt(is_share.ravel().tolist()),
            "missing_share": fmt(gone.ravel().tolist()),
        }
        if self.net:
            cols["net_import_kwh"] = fmt(sums[:, :, NET].ravel().tolist())
        cols["missing_count"], cols["missing_devices"] = self._missing_cells(short, names)
        columns = [cols[k] for k in self._window_order]
        cells = list(zip(*columns, strict=True))
        wt, it = self._window_line, self._intensity_line
        n_w = len(_WINDOWS)
        kind = MessageKind.INTENSITY
        topic = site.topics.topic(kind)
        out = []
        for k, end in enumerate(ends.tolist()):
            texts = tuple(wt % cells[k * n_w + w] for w in range(n_w))
            out.append(Message(kind, topic, {}, None, it % (end, *texts)))
        return out

    def _missing_cells(
        self, short: np.ndarray, names: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        flat = short.reshape(-1, short.shape[-1])
        count = flat.sum(axis=1).tolist()
        any_short = [bool(x) for x in np.asarray(flat.any(axis=1)).tolist()]
        named: list[str] = []
        cache = self._missing
        empty = json.dumps([])
        for j, has in enumerate(any_short):
            if not has:
                named.append(empty)
                continue
            who = tuple(names[x] for x in np.flatnonzero(flat[j]).tolist())
            text = cache.get(who)
            if text is None:
                text = cache[who] = json.dumps(list(who[:MISSING_NAMED]), separators=(",", ":"))
            named.append(text)
        return [str(c) for c in count], named


def _min1(a: np.ndarray) -> np.ndarray:
    """Python's ``min(a, 1.0)``: 1.0 only where it is smaller (NaN stays NaN)."""
    return np.where(a > 1.0, 1.0, a)


def _nulls(a: np.ndarray, keep: np.ndarray) -> list[float | None]:
    return [
        x if k else None for x, k in zip(a.ravel().tolist(), keep.ravel().tolist(), strict=True)
    ]
