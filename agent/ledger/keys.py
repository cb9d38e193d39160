"""The gateway's ledger key: Ed25519, a file under ``state_dir`` that never leaves it.

Files (all under the gateway's ``state_dir``):

* ``ledger.key``: the private key the gateway signs with (PKCS#8 PEM, mode 0600,
  unencrypted: the agent starts unattended; the file mode and the service user
  are the protection). ``keys init`` writes it and never overwrites it without
  ``--force``.
* ``ledger.key.next``: a key waiting to take over (``keys rotate``). The next
  ledger entry announces it, signed by the current key; then it becomes
  ``ledger.key``.
* ``ledger-keys.pub``: every public key this gateway has signed with, oldest
  first, one ``key_id base64`` line each: what ``verify -c`` trusts.

A public key travels as the standard base64 of its 32 raw bytes (44 characters);
its id is the first 16 hex digits of the SHA-256 of those bytes.

Needs ``cryptography`` (the ``ledger`` extra): importing this module without it
raises ImportError; :func:`agent.ledger.crypto_missing` says so beforehand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.ledger.errors import KEY_FILE, LedgerKeyError, no_key

__all__ = ["KEY_FILE", "LedgerKeyError", "PublicKey", "SigningKey"]

NEXT_FILE = "ledger.key.next"
PUBLIC_FILE = "ledger-keys.pub"


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        """A key as ``keys export`` prints it; LedgerKeyError if it is not one."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise LedgerKeyError(f"'{text.strip()[:60]}' is not base64") from None
        if len(raw) != 32:
            raise LedgerKeyError(
                f"'{text.strip()[:60]}' is {len(raw)} bytes, not an Ed25519 public key (32)"
            )
        return cls(raw)

    def verify(self, sig_b64: str, data: bytes) -> bool:
        try:
            sig = base64.b64decode(sig_b64, validate=True)
            Ed25519PublicKey.from_public_bytes(self.raw).verify(sig, data)
        except (binascii.Error, ValueError, InvalidSignature):
            return False
        return True


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


class SigningKey:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A fixed key from 32 bytes: the docs' golden vector and the tests."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise no_key(path) from None
    except OSError as exc:
        raise LedgerKeyError(
            f"cannot read {path}: {exc.strerror} (it must belong to the user the agent runs as, "
            "mode 0600)"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LedgerKeyError(f"{path} is not a private key in PEM: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return SigningKey(key)


def _save(path: Path, key: SigningKey) -> None:
    # Here, not at the top: the certificates' module (x509, ~5 MB) is not needed by an
    # agent that only signs.
    from agent.pki import PkiError, write_atomic

    try:
        write_atomic(path, key.pem(), 0o600)
    except PkiError as exc:
        raise LedgerKeyError(str(exc)) from None


def known(state_dir: Path) -> list[PublicKey]:
    """Every public key this gateway has signed with, oldest first (``ledger-keys.pub``)."""
    path = state_dir / PUBLIC_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerKeyError(f"cannot read {path}: {exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            out.append(PublicKey.from_b64(parts[-1]))
        except LedgerKeyError as exc:
            raise LedgerKeyError(f"{path}:{n}: {exc}") from None
    return out


def _remember(state_dir: Path, key: PublicKey) -> None:
    if key in known(state_dir):
        return
    path = state_dir / PUBLIC_FILE
    try:
        with path.open("a", encoding="ascii") as f:
            f.write(f"{key.key_id} {key.b64}\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise LedgerKeyError(f"cannot write {path}: {exc.strerror}") from None


def init(state_dir: Path, *, force: bool = False) -> SigningKey:
    """A new key in ``state_dir``; an existing one is kept unless ``force``."""
    path = state_dir / KEY_FILE
    if path.exists() and not force:
        raise LedgerKeyError(
            f"{path} exists: the gateway already has a key (replacing it breaks the chain "
            "of trust: use `energy-agent keys rotate`, or --force to replace it anyway)"
        )
    key = SigningKey.generate()
    _save(path, key)
    (state_dir / NEXT_FILE).unlink(missing_ok=True)
    _remember(state_dir, key.public)
    return key


def rotate(state_dir: Path) -> SigningKey:
    """A key waiting to take over; the agent announces it with its next entry."""
    load(state_dir / KEY_FILE)  # there must be a key to sign the announcement
    key = SigningKey.generate()
    _save(state_dir / NEXT_FILE, key)
    return key


def pending(state_dir: Path) -> SigningKey | None:
    path = state_dir / NEXT_FILE
    return load(path) if path.exists() else None


def promote(state_dir: Path, key: SigningKey) -> None:
    """After the entry announcing ``key`` is stored: it is the key from now on."""
    _remember(state_dir, key.public)
    nxt = state_dir / NEXT_FILE
    if nxt.exists():
        try:
            os.replace(nxt, state_dir / KEY_FILE)
        except OSError as exc:
            raise LedgerKeyError(f"cannot replace {state_dir / KEY_FILE}: {exc}") from None
