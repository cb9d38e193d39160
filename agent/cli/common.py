"""What every command shares: exit codes, the usage error, small argument parsers.

Kept apart from :mod:`agent.cli.main` (which imports the commands to build its
parser) so that a command never imports ``main`` back.

Exit codes: 0 success, 1 the job ran but failed (a meter did not answer),
2 the input is wrong (bad config, bad arguments, unknown profile).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A wrong argument; the message says which and how to fix it."""


def parse_units(text: str) -> list[int]:
    """``1-4,7`` -> [1, 2, 3, 4, 7]; every id 0..255."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise UsageError(f"--units: '{part}' is not a unit id or range like 1-5") from None
        if not (0 <= a <= b <= 255):
            raise UsageError(f"--units: '{part}' must lie within 0..255, low to high")
        units.extend(range(a, b + 1))
    return sorted(set(units))
