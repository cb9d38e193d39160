"""The words of the contract: ids, carriers, qualities, windows, quantities.

Pure data. The core, the runtime, the bridge and the docs all take these names
from here; a value outside them is not part of the contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from drivers.quantities import Quantity

DEFAULT_PREFIX = "energy/v1"
#: Shown in messages and given to pydantic, whose (Rust) ``$`` is the end of the text.
ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: For Python's ``re``, where ``$`` also matches before a trailing newline; ``\Z`` does not.
ID_RX = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")


class Carrier(StrEnum):
    ELECTRICITY = "electricity"
    NATURAL_GAS = "natural_gas"
    PRODUCTION = "production"


class Quality(StrEnum):
    """The one word an energy record carries about how its number came about
    (docs/core.md); the core's ``quality_of`` picks it from the interval's flags."""

    MEASURED = "measured"
    INTEGRATED = "integrated"
    INTERPOLATED = "interpolated"
    GAP = "gap"
    RESET = "reset"
    PARTIAL = "partial"


class Correction(StrEnum):
    """What the core did to a device's readings, one ``events`` message each (docs/core.md,
    "Corrections"); the core's ``Event`` names the same four."""

    #: An unsigned integer counter passed the top of its range and started again.
    WRAP = "wrap"
    #: A reading rejected: a decrease that is no wrap, or a step beyond the glitch limit.
    GLITCH = "glitch"
    #: A new baseline below the last accepted reading (a reset, a replaced meter).
    RESET = "reset"
    #: A new baseline above it (a jump the limit did not allow, confirmed by what followed).
    REBASELINE = "rebaseline"


class Window(StrEnum):
    """The windows of an intensity record, in the order it lists them. The core keeps
    each one's length (agent/core/windows.py), the plausible ranges each one's
    longest span (:data:`agent.contract.plausible.WINDOW_HOURS`)."""

    MIN_1 = "1m"
    MIN_15 = "15m"
    HOUR_1 = "1h"
    HOUR_24 = "24h"
    TODAY = "today"
    MONTH = "month"


WINDOWS = tuple(w.value for w in Window)


@dataclass(frozen=True)
class Vocab:
    """The names an object's keys (or an array's items) are taken from."""

    #: What one name is, in the docs and in errors ("canonical quantity").
    noun: str
    names: tuple[str, ...]
    #: Where the names are defined, for an error that cannot list them all.
    source: str
    #: An error lists every name (short lists); otherwise it points to ``source``.
    listed: bool


QUANTITY_VOCAB = Vocab(
    "canonical quantity", tuple(q.value for q in Quantity), "drivers/quantities.py", False
)
WINDOW_VOCAB = Vocab("window", WINDOWS, "agent/contract/vocab.py", True)
