"""The tamper-evident ledger: canonical records, signed entries, a hash chain (docs/ledger.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.ledger.errors import KEY_FILE, LedgerKeyError

__all__ = ["INSTALL_HINT", "KEY_FILE", "LedgerKeyError", "crypto_missing", "use_kernel_cache"]

#: numba's compiled-code cache under the agent's state directory (the core's too:
#: agent.core.engine.CACHE_DIR), which deploy/install.sh fills at install time.
KERNEL_CACHE = "numba-cache"

#: What to install when the ledger needs `cryptography`.
INSTALL_HINT = (
    "the ledger needs the Python package `cryptography`: install it with "
    "`pip install 'energy-agent[ledger]'` into the environment energy-agent runs from"
)


def crypto_missing() -> str | None:
    """Why the ledger cannot sign or verify here (None: it can). Imports the key module,
    so a `cryptography` that is installed but cannot load its bindings counts too."""
    try:
        import agent.ledger.keys  # noqa: F401
    except ImportError as exc:
        return f"{INSTALL_HINT} ({exc})"
    return None


def use_kernel_cache(state_dir: Path) -> None:
    """Keep the bulk verification's compiled kernels (agent.ledger.bulk_kernel) in the
    agent's cache under ``state_dir``, as the core keeps its own: numba reads
    NUMBA_CACHE_DIR once, when it is first imported, so this is done before that, and
    only into a directory that exists and this process may write."""
    if "numba" in sys.modules or "NUMBA_CACHE_DIR" in os.environ:
        return
    cache = state_dir / KERNEL_CACHE
    try:
        if cache.is_dir() and os.access(cache, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(cache)
    except OSError:
        return
