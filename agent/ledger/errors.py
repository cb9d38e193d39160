"""The ledger's errors and key file name, importable without `cryptography` (keys.py needs it)."""

from pathlib import Path

#: The gateway's signing key, under its state directory.
KEY_FILE = "ledger.key"


class LedgerKeyError(Exception):
    """A key file is missing, unreadable or not a key; the message names it and the fix."""


def no_key(path: Path) -> LedgerKeyError:
    """The gateway has no key (yet): said by the key module, and by the agent before it
    imports `cryptography` only to find there is nothing to sign with."""
    return LedgerKeyError(
        f"{path} does not exist: create the gateway's key with `energy-agent keys init -c CONFIG`"
    )
