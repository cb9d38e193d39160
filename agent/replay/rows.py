"""What a row of input becomes, and what makes it bad.

Every reader, fast or not, turns its input into :class:`Chunk`s: parallel
arrays of a timestamp (ms UTC), a *key* (device and quantity, one integer), a
value (NaN: the meter reported "not available") and the row's line number. A
row that cannot be used becomes a :class:`BadRow` with its line and the reason,
worded the same by every reader (:class:`Vocabulary` words them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from agent.config.models import AgentConfig
from agent.core.site import SiteCore
from agent.replay.timestamps import MS_BEYOND
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

#: The long format's columns.
COLUMNS = ("ts", "device", "quantity", "value")
QUANTITIES = list(Quantity)
NQ = len(QUANTITIES)
_Q_INDEX = {q.value: i for i, q in enumerate(QUANTITIES)}
#: Value cells that mean "not available" (compared lower-case).
MISSING = ("", "nan", "null")


class ReplayError(Exception):
    """Base of everything `replay` raises on purpose."""


class ReplayInputError(ReplayError, ValueError):
    """An input as a whole cannot be read (missing, no header, wrong columns, not UTF-8)."""


class Skip(StrEnum):
    """Why a row was skipped, in a word: the summary counts rows by it."""

    TIMESTAMP = "unreadable ts"
    DEVICE = "unknown device"
    QUANTITY = "unknown quantity"
    NOT_OF_DEVICE = "quantity not of its device"
    VALUE = "value not a number"
    FIELDS = "wrong number of fields"
    LATE = "out of order beyond the reorder window"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, order=True)
class BadRow:
    """A skipped row. ``unit`` is "line" in text files and "row" in Parquet files."""

    source: int
    line: int
    reason: str
    unit: str = "line"
    cause: Skip = Skip.VALUE

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.reason}"


@dataclass
class Chunk:
    """Good rows of one source, in file order."""

    source: int
    ts: np.ndarray  # int64 ms UTC
    key: np.ndarray  # int64 device * NQ + quantity
    value: np.ndarray  # float64, NaN = not available
    line: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: np.ndarray) -> Chunk:
        return Chunk(self.source, self.ts[idx], self.key[idx], self.value[idx], self.line[idx])


class Vocabulary:
    """The config's devices and their quantities, as integer keys."""

    def __init__(self, config: AgentConfig, library: ProfileLibrary, site: SiteCore) -> None:
        self.devices = [d.id for d in config.devices]
        self.device_index = {d: i for i, d in enumerate(self.devices)}
        self.allowed = np.zeros((len(self.devices), NQ), dtype=bool)
        for i, d in enumerate(config.resolved(library)):
            for q in d.regmap.quantities:
                self.allowed[i, _Q_INDEX[q.value]] = True
        n_keys = len(self.devices) * NQ
        #: Per key: the core channel it feeds, or -1 (not the device's main quantity).
        self.channel = np.full(n_keys, -1, dtype=np.int64)
        #: Per key: a second channel it feeds too (a power-only meter's export), or -1.
        self.also = np.full(n_keys, -1, dtype=np.int64)
        for i, dev in enumerate(self.devices):
            info = site.by_id[dev]
            self.channel[i * NQ + _Q_INDEX[info.quantity.value]] = info.channel
            export = info.export_quantity
            if info.export_channel is not None and export is not None:
                into = self.also if export is info.quantity else self.channel
                into[i * NQ + _Q_INDEX[export.value]] = info.export_channel

    def device(self, key: int) -> str:
        return self.devices[key // NQ]

    def quantity(self, key: int) -> Quantity:
        return QUANTITIES[key % NQ]

    def device_code(self, text: str | None) -> int:
        return self.device_index.get((text or "").strip(), -1)

    @staticmethod
    def quantity_code(text: str | None) -> int:
        return _Q_INDEX.get((text or "").strip(), -1)

    def key_problem(self, dev_text: str, q_text: str) -> tuple[Skip, str] | None:
        """Why (device, quantity) is not a key of this config, or None."""
        dev, q = dev_text.strip(), q_text.strip()
        if dev not in self.device_index:
            return Skip.DEVICE, f"unknown device '{dev}' (not in the config)"
        if q not in _Q_INDEX:
            return Skip.QUANTITY, f"unknown quantity '{q}'"
        if not self.allowed[self.device_index[dev], _Q_INDEX[q]]:
            return Skip.NOT_OF_DEVICE, f"device '{dev}' has no quantity '{q}'"
        return None

    def key_of(self, dev_text: str, q_text: str) -> int:
        return self.device_index[dev_text.strip()] * NQ + _Q_INDEX[q_text.strip()]


def parse_value(text: str | None) -> float:
    """A value cell: the number, NaN for "not available"; ValueError with the reason."""
    t = (text or "").strip()
    if t.lower() in MISSING:
        return math.nan
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"value '{t}' is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"value '{t}' is not a finite number")
    return v


def ts_problem(text: str, seconds: bool) -> str:
    unit = "Unix seconds" if seconds else "Unix milliseconds"
    t = text.strip()
    try:
        beyond = float(t) * (1000 if seconds else 1) > MS_BEYOND
    except ValueError:
        beyond = False
    if beyond:
        return (
            f"ts '{t}' as {unit} is after the year 5000: microseconds or nanoseconds? "
            "give Unix milliseconds, seconds or ISO 8601"
        )
    return f"ts '{t}' is neither {unit} nor ISO 8601"
