"""Ledger entries: their canonical bytes, hash, signature and the keys that may sign them.

An entry is a JSON object (docs/ledger.md has every field). Its signature is
Ed25519 over the RFC 8785 bytes of the entry without ``sig``; its hash (what the
next entry's ``prev`` holds) is SHA-256 over the RFC 8785 bytes of the whole
entry, ``sig`` included, so the chain binds the signatures too.

Keys: every entry carries the public key that signed it and the certificates
(``certs``) by which each key since a trusted one took over: a key is trusted
when it is in the verifier's trust set, or when a chain of certificates leads
to it from one that is. So a verifier needs only one of a gateway's keys and
no memory of the entries before (a bridge in a group sees some entries of a
gateway, not all).

This module needs no `cryptography` to build hashes; signing and verifying take
key objects from :mod:`agent.ledger.keys`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from agent.ledger import jcs

if TYPE_CHECKING:
    from agent.ledger.keys import PublicKey, SigningKey

VERSION = 1
#: ``prev`` of the first entry (seq 0).
GENESIS_PREV = "0" * 64
#: Bits of an entry's hash written to the database as an integer field (a double holds
#: 53 exactly): enough to tell entries apart in a chain check.
HASH_BITS = 48


class Reason(StrEnum):
    """Why a period does not verify; each with a small integer code for the database."""

    RECORD_CHANGED = "record_changed"
    RECORD_MISSING = "record_missing"
    EXTRA_RECORD = "extra_record"
    ENTRY_MISSING = "entry_missing"
    SIGNATURE_WRONG = "signature_wrong"
    CHAIN_BROKEN = "chain_broken"
    KEY_ROTATION_INVALID = "key_rotation_invalid"

    @property
    def code(self) -> int:
        return list(Reason).index(self) + 1

    @property
    def words(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Failure:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.words}: {self.detail}"


def signed_bytes(entry: Mapping[str, Any]) -> bytes:
    """What the signature covers: the entry without ``sig``, RFC 8785."""
    return jcs.canonical({k: v for k, v in entry.items() if k != "sig"})


def entry_hash(entry: Mapping[str, Any]) -> str:
    """What the next entry's ``prev`` holds: SHA-256 of the whole entry, RFC 8785."""
    return hashlib.sha256(jcs.canonical(entry)).hexdigest()


def short(hex_hash: str) -> int:
    """The first HASH_BITS of a hash as an integer (the database's chain fields)."""
    return int(hex_hash[: HASH_BITS // 4], 16)


def cert_bytes(site: str, gateway: str, cert: Mapping[str, Any]) -> bytes:
    """What a key certificate's signature covers."""
    body = {k: cert[k] for k in ("seq", "key", "key_id", "signer")}
    return jcs.canonical({"cert": VERSION, "site": site, "gateway": gateway, **body})


def make_cert(
    signer: SigningKey, site: str, gateway: str, seq: int, new: PublicKey
) -> dict[str, Any]:
    cert: dict[str, Any] = {
        "seq": seq,
        "key": new.b64,
        "key_id": new.key_id,
        "signer": signer.public.key_id,
    }
    cert["sig"] = signer.sign(cert_bytes(site, gateway, cert))
    return cert


def build(
    *,
    site: str,
    gateway: str,
    seq: int,
    period_start: int,
    period_end: int,
    covers: Sequence[Mapping[str, Any]],
    prev: str,
    key: SigningKey,
    certs: Sequence[Mapping[str, Any]],
    sealed_ms: int,
    next_key: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A signed entry."""
    entry: dict[str, Any] = {
        "version": VERSION,
        "site": site,
        "gateway": gateway,
        "seq": seq,
        "period_start": period_start,
        "period_end": period_end,
        "covers": [dict(c) for c in covers],
        "prev": prev,
        "key": key.public.b64,
        "key_id": key.public.key_id,
        "certs": [dict(c) for c in certs],
        "sealed_ms": sealed_ms,
    }
    if next_key is not None:
        entry["next_key"] = dict(next_key)
    entry["sig"] = key.sign(signed_bytes(entry))
    return entry


def certs_after(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The certificates the next entry carries: this one's, plus the key it announced."""
    certs = [dict(c) for c in entry.get("certs", [])]
    if entry.get("next_key") is not None:
        certs.append(dict(entry["next_key"]))
    return certs


class Keyring:
    """The keys a verifier trusts for one gateway, and the ones it has seen retired."""

    def __init__(self, trusted: Sequence[PublicKey] = ()) -> None:
        self.trusted: dict[str, PublicKey] = {k.key_id: k for k in trusted}
        #: key id -> seq of the entry whose certificate replaced it.
        self.retired: dict[str, int] = {}

    def signer_of(self, entry: Mapping[str, Any]) -> PublicKey | Failure:
        """The entry's key if it is trusted (directly or through its certificates)."""
        from agent.ledger.keys import LedgerKeyError, PublicKey

        site, gateway = entry["site"], entry["gateway"]
        try:
            key = PublicKey.from_b64(entry["key"])
        except LedgerKeyError as exc:
            return Failure(Reason.SIGNATURE_WRONG, f"entry {entry['seq']}: {exc}")
        if key.key_id != entry["key_id"]:
            return Failure(
                Reason.SIGNATURE_WRONG,
                f"entry {entry['seq']}: key_id {entry['key_id']} is not the id of its key "
                f"({key.key_id})",
            )
        known = dict(self.trusted)
        for cert in entry.get("certs", []):
            signer = known.get(cert["signer"])
            if signer is None:
                continue  # from a key this verifier does not know: proves nothing here
            if not signer.verify(cert["sig"], cert_bytes(site, gateway, cert)):
                return Failure(
                    Reason.KEY_ROTATION_INVALID,
                    f"entry {entry['seq']}: the certificate of key {cert['key_id']} is not "
                    f"signed by key {cert['signer']}",
                )
            try:
                new = PublicKey.from_b64(cert["key"])
            except LedgerKeyError as exc:
                return Failure(Reason.KEY_ROTATION_INVALID, f"entry {entry['seq']}: {exc}")
            known[new.key_id] = new
            self.retired.setdefault(cert["signer"], int(cert["seq"]))
        retired_at = self.retired.get(key.key_id)
        if retired_at is not None and retired_at < int(entry["seq"]):
            return Failure(
                Reason.KEY_ROTATION_INVALID,
                f"entry {entry['seq']} is signed by key {key.key_id}, which entry {retired_at} "
                "replaced",
            )
        if key.key_id in known:
            return known[key.key_id]
        if entry.get("certs"):
            return Failure(
                Reason.KEY_ROTATION_INVALID,
                f"entry {entry['seq']}: no certificate leads from a trusted key to key "
                f"{key.key_id}",
            )
        return Failure(
            Reason.SIGNATURE_WRONG,
            f"entry {entry['seq']} is signed by key {key.key_id}, which is not trusted for "
            f"{site}/{gateway}",
        )

    def check(self, entry: Mapping[str, Any]) -> Failure | None:
        """Key and signature of one entry (and of the key it announces, if any)."""
        key = self.signer_of(entry)
        if isinstance(key, Failure):
            return key
        if not key.verify(entry["sig"], signed_bytes(entry)):
            return Failure(
                Reason.SIGNATURE_WRONG,
                f"entry {entry['seq']}: the signature does not match key {key.key_id}",
            )
        announced = entry.get("next_key")
        if announced is None:
            return None
        cert = cert_bytes(entry["site"], entry["gateway"], announced)
        if announced["signer"] != key.key_id or not key.verify(announced["sig"], cert):
            return Failure(
                Reason.KEY_ROTATION_INVALID,
                f"entry {entry['seq']} announces key {announced['key_id']} without its "
                "own key's signature on it",
            )
        return None

    def follow(self, entry: Mapping[str, Any]) -> None:
        """After a verified entry: the key it announces is trusted from now on."""
        from agent.ledger.keys import PublicKey

        announced = entry.get("next_key")
        if announced is not None:
            new = PublicKey.from_b64(announced["key"])
            self.trusted[new.key_id] = new
            self.retired.setdefault(announced["signer"], int(entry["seq"]))
