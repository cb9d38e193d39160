"""A pilot's certificate authority: one CA, the broker's server certificate, one
client certificate per gateway (and for the bridge).

Why this exists: a pilot with three gateways should not need a PKI team to get
mutual TLS, and ``openssl`` one-liners get the extensions wrong often enough that
OpenSSL (mosquitto) or Python's ``ssl`` refuse the result with an unhelpful
"unsupported certificate purpose". Production fleets should use their own PKI
(see docs/deploy.md); the files here follow the same layout so they can be swapped.

Keys are EC P-256, signatures SHA-256. A client certificate's common name is the
broker identity: mosquitto's ``use_identity_as_username`` turns it into the
MQTT username that the ACL matches (``{site}/{gateway}`` for a gateway).

Needs the ``cryptography`` package (the ``certs`` extra); importing this module
without it raises ImportError, which the CLI turns into an install hint.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Certificates start this long before "now": a gateway whose clock is a little
#: behind the CA's machine must not reject a certificate as "not yet valid".
BACKDATE = dt.timedelta(minutes=5)
CA_DAYS = 3650
#: 825 days: the longest validity many TLS stacks still accept for a leaf.
LEAF_DAYS = 825
MAX_DAYS = 36500


class PkiError(ValueError):
    """A file is missing, unreadable or not what it should be; the message says which."""


class Overwrite(StrEnum):
    """Whether existing files may be replaced (``--force``)."""

    REFUSE = "refuse"
    REPLACE = "replace"


class Purpose(StrEnum):
    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True)
class Issued:
    """The files one command wrote."""

    cert: Path
    key: Path
    common_name: str


def ca_paths(directory: Path) -> tuple[Path, Path]:
    return directory / "ca.pem", directory / "ca.key"


def leaf_paths(directory: Path, stem: str) -> tuple[Path, Path]:
    return directory / f"{stem}.pem", directory / f"{stem}.key"


def _check_free(paths: list[Path], overwrite: Overwrite) -> None:
    if overwrite is Overwrite.REPLACE:
        return
    taken = [p for p in paths if p.exists()]
    if taken:
        names = ", ".join(str(p) for p in taken)
        raise PkiError(
            f"{names} already exist{'s' if len(taken) == 1 else ''}; nothing was written. "
            "Pass --force to replace (what the old files signed or identified stops working)"
        )


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a reader never sees half a key, and a key is never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PkiError(f"{path}: cannot write: {exc.strerror}") from exc


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted: mosquitto and the agent start unattended, with nobody to type a
    # passphrase. The file mode (0600) is the protection.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"--days {days}: give a number of days from 1 to {MAX_DAYS}")
    now = dt.datetime.now(dt.UTC)
    return now - BACKDATE, now + dt.timedelta(days=days)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """ECDSA keys sign (TLS handshakes); only the CA's also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(
    directory: Path, common_name: str, days: int = CA_DAYS, overwrite: Overwrite = Overwrite.REFUSE
) -> Issued:
    not_before, not_after = _validity(days)
    cert_path, key_path = ca_paths(directory)
    _check_free([cert_path, key_path], overwrite)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # path_length 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_path, _key_pem(key), 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(cert_path, key_path, common_name)


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_paths(directory)
    hint = f"run `energy-agent certs init --dir {directory}` first"
    for path in (cert_path, key_path):
        if not path.exists():
            raise PkiError(f"{path} not found: {hint}")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise PkiError(f"{cert_path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise PkiError(f"{cert_path} is not a PEM certificate ({exc}); {hint}") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise PkiError(f"{key_path}: cannot read: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{key_path} is not an unencrypted PEM private key ({exc}); {hint}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: not an EC key; {hint}")
    if key.public_key() != cert.public_key():
        raise PkiError(f"{key_path} does not belong to {cert_path}; {hint} with --force")
    return cert, key


def issue(
    directory: Path,
    stem: str,
    common_name: str,
    purpose: Purpose,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (),
    days: int = LEAF_DAYS,
    overwrite: Overwrite = Overwrite.REFUSE,
) -> Issued:
    """A leaf certificate signed by the CA in ``directory``, written as ``stem``.pem/.key."""
    ca_cert, ca_key = load_ca(directory)
    not_before, not_after = _validity(days)
    if not_after > ca_cert.not_valid_after_utc:
        # A leaf outliving its CA fails on the CA's expiry anyway; say so now.
        raise PkiError(
            f"--days {days} outlives the CA (valid until "
            f"{ca_cert.not_valid_after_utc:%Y-%m-%d}); give fewer days"
        )
    cert_path, key_path = leaf_paths(directory, stem)
    _check_free([cert_path, key_path], overwrite)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = {
        Purpose.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
        Purpose.CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH,
    }[purpose]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ip) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    write_atomic(key_path, _key_pem(key), 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(cert_path, key_path, common_name)
