"""A paho-mqtt v5 client configured from an ``mqtt:`` config section.

Shared by the gateway's publisher (agent.runtime.mqtt) and the central bridge
(agent.bridge.consumer): TLS, credentials from the config, a password file or
the environment, and paho's reconnect backoff are set up in one place. Errors
in the settings are :class:`MqttConfigError`: fix the config, retrying will
not help.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

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


class BufferedClient(paho.Client):
    """paho's client, reading its socket in 64 KiB chunks instead of packet by packet.

    paho 2.x reads every incoming packet with three to six ``recv()`` calls (the
    type byte, the length one byte at a time, then the body). A system call is
    tens of microseconds on a small VM or gateway: at the bridge's rates that,
    not the parsing, was the largest single cost, and the agent reads one
    PUBACK per message it publishes. Here one ``recv`` fills a buffer that
    serves the following reads, and ``loop_read`` goes on while buffered bytes
    remain (``select`` cannot see them, so none may be left behind).

    Relies on paho's ``_sock_recv``, the one place it reads its socket (paho
    2.0 and 2.1); with another paho it falls back to reading unbuffered.
    """

    CHUNK = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rbuf_sock: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if sock is not self._rbuf_sock:  # a new connection: nothing of the old one is valid
            self._rbuf.clear()
            self._rbuf_sock = sock
        if not self._rbuf:
            data: bytes = super()._sock_recv(max(bufsize, self.CHUNK))
            if len(data) <= bufsize:
                return data  # also b"" (the peer closed): paho handles it as before
            self._rbuf += data
        out = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return out

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rbuf and self._sock is not None:
            rc = super().loop_read(1)
        return rc


_BUFFERED = hasattr(paho.Client, "_sock_recv")


def new_client(settings: Mqtt, client_id: str, *, manual_ack: bool = False) -> paho.Client:
    client = (BufferedClient if _BUFFERED else paho.Client)(
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
