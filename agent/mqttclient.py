"""A paho-mqtt v5 client configured from an ``mqtt:`` config section.

Shared by the gateway's publisher (agent.runtime.mqtt) and the central bridge
(agent.bridge.consumer): TLS, credentials from the config, a password file or
the environment, and paho's reconnect backoff are set up in one place. Errors
in the settings are :class:`MqttConfigError`: fix the config, retrying will
not help. paho's private API (buffered socket reads) is used through
:mod:`agent.paho_compat` only.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent import paho_compat
from agent.config import secrets
from agent.config.common import Mqtt
from confdoc.errors import FileRefused


class MqttConfigError(ValueError):
    """Credentials or certificates cannot be read or used."""


def read_secret(path: Path, what: str) -> str:
    """A secret from a file (password, token) by the project's one rule (first line;
    regular files of at most 64 KiB, see :mod:`agent.config.secrets`)."""
    try:
        return secrets.read_secret(path)
    except FileRefused as exc:
        raise MqttConfigError(f"{what}: cannot read {path}: {exc.reason}") from None


def password_of(settings: Mqtt) -> str | None:
    """The inline password or the password file's, as read when the config was loaded."""
    try:
        return settings.secret("password_file") if settings.password_file else settings.password
    except FileRefused as exc:
        raise MqttConfigError(
            f"mqtt.password_file: cannot read {settings.password_file}: {exc.reason}"
        ) from None


def new_client(settings: Mqtt, client_id: str, *, manual_ack: bool = False) -> paho.Client:
    client = paho_compat.client_class()(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    tls = settings.tls
    if tls is not None:
        for name in ("ca", "cert", "key"):
            path = getattr(tls, name)
            if path is not None and not os.access(path, os.R_OK):
                raise MqttConfigError(f"mqtt.tls.{name}: cannot read {path}")
        try:
            client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError) as exc:
            raise MqttConfigError(f"mqtt.tls: {exc}") from None
    if settings.username is not None:
        client.username_pw_set(settings.username, password_of(settings))
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
