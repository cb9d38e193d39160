"""The tamper-evident ledger: canonical records, signed entries, a hash chain (docs/ledger.md)."""

from __future__ import annotations

from agent.ledger.errors import KEY_FILE, LedgerKeyError

__all__ = ["INSTALL_HINT", "KEY_FILE", "LedgerKeyError", "crypto_missing"]

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
