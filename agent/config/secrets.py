"""Files a config names (passwords, tokens, certificates), read the same way by every command.

``check`` and ``run``/``bridge`` load a config through the same loader, which
calls :func:`file_problems`: a file that ``run`` could not use is a problem
with the config's file, line and field, found by ``check`` first, and ``run``
exits 2 with the same message before it starts anything. The secrets are read
there, once, before any event loop exists, and kept on the config's sections
(:class:`agent.config.common.SecretFiles`), so no command reads them again on
its loop.

One rule for every secret file (``mqtt.password_file``, ``http.password_file``,
``influx.token_file``): the secret is the **first line**, surrounding
whitespace (also a Windows ``\\r``) stripped; later lines are ignored, so a
comment may follow. A file of one line, with or without its newline, means
what it always meant. The file must be a regular file of at most 64 KiB in
UTF-8, and its first line must not be empty. Its content never appears in a
message or a log.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from confdoc.errors import FileRefused, Problem
from confdoc.files import read_bounded
from confdoc.yamldoc import YamlDocument

#: A password or token is one short line; 64 KiB is room for any, and never a disk image.
SECRET_LIMIT = 64 * 1024
#: A CA bundle (Mozilla's is some 220 KiB), a certificate chain or a key.
PEM_LIMIT = 1024 * 1024


def read_secret(path: str | Path) -> str:
    """The secret in ``path`` by the rule above; FileRefused says why not, never what."""
    data = read_bounded(path, SECRET_LIMIT, "a secret file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused("it is not UTF-8 text") from None
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise FileRefused("it is empty" if not text.strip() else "its first line is empty")
    return secret


def _pem(path: Path) -> None:
    read_bounded(path, PEM_LIMIT, "a certificate or key file")


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()


def ca_problem(ca: Path) -> str | None:
    """Why ``ca`` cannot be used as a CA bundle, or None; loaded as the TLS library will."""
    try:
        _pem(ca)
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(ca))
    except FileRefused as exc:
        return f"cannot read {ca}: {exc.reason}"
    except ssl.SSLError as exc:
        return f"{ca} holds no certificate the TLS library accepts ({_ssl_reason(exc)})"
    return None


def client_cert_problem(cert: Path, key: Path) -> tuple[str, str] | None:
    """(field, reason) when the client certificate and key cannot be used together."""
    for field, path in (("cert", cert), ("key", key)):
        try:
            _pem(path)
        except FileRefused as exc:
            return field, f"cannot read {path}: {exc.reason}"
    asked: list[bool] = []

    def passphrase() -> bytes:
        # OpenSSL would otherwise prompt on the terminal, and a service has none.
        asked.append(True)
        return b""

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(cert), str(key), passphrase)
    except ssl.SSLError as exc:
        if asked:
            return "key", (
                f"{key} is encrypted with a passphrase, which nothing can type in for a "
                "service: store the key unencrypted, readable by the service user only"
            )
        return "cert", f"{cert} and {key} cannot be used as a client certificate " + (
            f"({_ssl_reason(exc)})"
        )
    return None


def _section_problems(doc: YamlDocument, at: tuple[str, ...], section: Any) -> list[Problem]:
    out = []
    for field in getattr(section, "secret_fields", ()):
        try:
            section.secret(field)
        except FileRefused as exc:
            path = getattr(section, field)
            out.append(doc.problem((*at, field), f"cannot read {path}: {exc.reason}"))
    ca = getattr(section, "ca", None)
    if isinstance(ca, Path) and (why := ca_problem(ca)) is not None:
        out.append(doc.problem((*at, "ca"), why))
    return out


def file_problems(doc: YamlDocument, config: Any) -> list[Problem]:
    """Every file a valid config names that a command could not use, with its line.

    Reading the secrets here also keeps them on their sections for the command.
    """
    out: list[Problem] = []
    for name in ("mqtt", "http", "influx"):
        section = getattr(config, name, None)
        if section is None:
            continue
        out += _section_problems(doc, (name,), section)
        tls = getattr(section, "tls", None)
        if tls is None:
            continue
        out += _section_problems(doc, (name, "tls"), tls)
        if tls.cert is not None and tls.key is not None:
            bad = client_cert_problem(tls.cert, tls.key)
            if bad is not None:
                out.append(doc.problem((name, "tls", bad[0]), bad[1]))
    return out
