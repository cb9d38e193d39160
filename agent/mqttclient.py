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


def client_id_of(mqtt: Mqtt | None, site: str, gateway: str) -> str:
    """A gateway's MQTT client id: one per broker, or two agents knock each other off
    (see :class:`TakeoverWatch`). Takes the ids, not the agent's config: the bridge
    imports this module and must not load the config's Modbus models."""
    given = mqtt.client_id if mqtt is not None else None
    return given or f"energy-agent-{site}-{gateway}"


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


#: MQTT v5 reason code "Session taken over" (MQTT 5.0, 3.14.2.1).
SESSION_TAKEN_OVER = 0x8E
#: What paho reports when the connection closes without a DISCONNECT (socket closed).
UNSPECIFIED = 0x80
#: What every explanation of a clash begins with (the status's health looks for it).
TAKEOVER = "MQTT session taken over"


class TakeoverWatch:
    """Recognises a second client with this client's id, which the broker lets take over.

    A broker keeps one session per client id: when a second client connects with
    the same id, it closes the first one's connection. Both reconnect after a
    second and knock each other off in turn, forever. An MQTT 5 broker may say so
    with reason code 0x8E (Session taken over); mosquitto 2.0 just closes the
    socket, which paho reports as reason code 128, "Unspecified error", with no
    DISCONNECT packet from the server. So besides 0x8E, ``drops`` such closes
    within ``window_s``, each soon (``short_s``) after the broker accepted the
    connection, count as a takeover: a network that fails does not let the
    reconnect succeed at once, every time.
    """

    def __init__(
        self, client_id: str, *, drops: int = 3, window_s: float = 120.0, short_s: float = 30.0
    ) -> None:
        self.client_id = client_id
        self.drops = drops
        self.window_s = window_s
        self.short_s = short_s
        self._connected_at: float | None = None
        self._drops: list[float] = []
        self._seen_at = -float("inf")

    def connected(self, now: float) -> None:
        self._connected_at = now

    def dropped(self, reason_code: int, server_sent_disconnect: bool, now: float) -> str | None:
        """The explanation if this disconnect shows a takeover, else None."""
        since, self._connected_at = self._connected_at, None
        if reason_code == SESSION_TAKEN_OVER:
            self._seen_at = now
            return self._explain("the broker says: Session taken over (reason code 0x8E)")
        if reason_code != UNSPECIFIED or server_sent_disconnect:
            return None  # our own disconnect (0), or a broker that said why
        if since is None or now - since > self.short_s:
            return None
        self._drops = [t for t in self._drops if now - t <= self.window_s] + [now]
        if len(self._drops) < self.drops:
            return None
        self._seen_at = now
        return self._explain(
            f"the broker closed this connection {len(self._drops)} times in "
            f"{now - self._drops[0]:.0f} s, each time soon after accepting it (paho: reason "
            "code 128, Unspecified error, with no DISCONNECT from the broker)"
        )

    def active(self, now: float) -> bool:
        """A takeover was seen within the window: a successful connect does not end it."""
        return now - self._seen_at <= self.window_s

    def _explain(self, evidence: str) -> str:
        return (
            f"{TAKEOVER}: {evidence}. Another client is connected with the same client id "
            f"'{self.client_id}': two gateways with the same site and gateway ids, or the "
            "same mqtt.client_id. Give each gateway its own gateway.id (or mqtt.client_id); "
            f"mosquitto logs this as 'Client {self.client_id} already connected, closing "
            "old connection'"
        )
