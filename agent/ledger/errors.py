"""The ledger's errors, importable without `cryptography` (keys.py needs it)."""


class LedgerKeyError(Exception):
    """A key file is missing, unreadable or not a key; the message names it and the fix."""
