"""The central bridge's config file (`energy-agent bridge -c FILE`): models and loader.

A module of its own so that loading it imports no drivers, Modbus or numba: the
``mqtt:`` section comes from :mod:`agent.config.common`, the YAML handling from
:mod:`agent.config.document`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from agent.config.common import ID_RX, Id, Mqtt, SecretFiles, Strict
from agent.config.document import (
    ConfigError,
    dedupe,
    expand_env,
    parse_document,
    read_config_text,
    referenced_files,
)
from confdoc.errors import Problem
from confdoc.yamldoc import YamlDocument, validation_problems


class Influx(SecretFiles):
    """Where the bridge writes: influxdb-client's v2 write API (InfluxDB 2/3, Cloud,
    1.8+ with its compatibility endpoint, VictoriaMetrics)."""

    secret_fields = ("token_file",)

    url: str = Field(pattern=r"^https?://")
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    #: The API token; write ``token: ${INFLUX_TOKEN}`` to take it from the environment.
    token: str | None = None
    #: A file holding the token (first line, whitespace stripped); read when the config
    #: is loaded, never logged.
    token_file: Path | None = None
    verify_tls: bool = True
    #: A CA bundle for a server certificate signed by the plant's own CA.
    ca: Path | None = None
    #: One HTTP request's time limit; a slower write counts as failed and is retried.
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0

    @model_validator(mode="after")
    def _one_token(self) -> Influx:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give `token` (e.g. from ${ENV}) or `token_file`, not both")
        return self


class BridgeSettings(Strict):
    """How the bridge batches, what it accepts, and where rejects go."""

    #: MQTT v5 shared-subscription group: bridges in one group split the messages.
    group: Id = "bridge"
    #: Points per write request (an intensity message is up to six points).
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    #: A batch is written when full or when its first message has waited this long.
    flush_interval_ms: Annotated[int, Field(ge=10, le=600_000)] = 1000
    #: Unacknowledged messages the broker may send ahead (MQTT v5 Receive Maximum).
    #: Default: twice the batch size (at most 65535), so one batch fills while the
    #: previous one is written. The broker's own default would stop at 20.
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] | None = None
    #: Rejected payloads are published here (QoS 1) with the reason. Must lie outside
    #: the subscribed prefix, or a reject would come back as input.
    dead_letter_topic: str = "energy/dead-letter"
    #: Bigger payloads are rejected unread (the largest real one is a few KiB). At most
    #: 1 MiB: validating a hostile payload takes up to ~60 times its size in memory.
    max_payload_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 256 * 1024
    #: A ``ts`` older than this is rejected: a gateway buffers through outages, so
    #: weeks are legitimate; years are a broken clock.
    max_past_s: Annotated[int, Field(gt=0)] = 31 * 86400
    #: A ``ts`` further ahead of this machine's clock is rejected (clock skew allowance).
    #: At most a day: VictoriaMetrics drops points more than 2 days ahead of its clock
    #: without an error, so an acknowledged point would be lost.
    max_future_s: Annotated[int, Field(ge=0, le=86400)] = 300
    #: Longest pause between retries of a failed write (backoff doubles up to it).
    retry_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: MQTT session expiry: unacknowledged and queued messages wait this long for a
    #: bridge that is down, so a restart picks up where it stopped.
    session_expiry_s: Annotated[int, Field(ge=0, le=2**32 - 1)] = 7 * 86400
    #: Prometheus ``/metrics``; null turns it off. Loopback unless chosen otherwise.
    metrics_listen: str | None = "127.0.0.1:9108"

    @field_validator("dead_letter_topic")
    @classmethod
    def _plain_topic(cls, v: str) -> str:
        if not v or "+" in v or "#" in v or v.startswith("$") or "\x00" in v:
            raise ValueError("`dead_letter_topic` must be a plain topic (no + # or leading $)")
        return v

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{v}' is not HOST:PORT (e.g. '127.0.0.1:9108')")
        return v

    @property
    def receive_max(self) -> int:
        return self.receive_maximum or min(65535, max(100, 2 * self.batch_size))


class BridgeLedger(Strict):
    """Verifying the gateways' ledgers (docs/ledger.md): whose keys, when, against what."""

    #: ``"site/gateway": "<public key>"`` (the output of `energy-agent keys export`).
    #: Any one key of a gateway's chain: rotations are followed from it.
    trust: dict[str, str] = Field(default_factory=dict)
    #: An entry is checked this long after it was written: the period's records may
    #: come through another bridge of the group.
    verify_after_s: Annotated[float, Field(ge=0, le=86400)] = 60.0
    #: Mismatches are read again this many times (verify_after_s apart) before they count.
    retries: Annotated[int, Field(ge=0, le=100)] = 3
    #: What the bridge reads records back from: InfluxDB 2 (Flux) or VictoriaMetrics.
    database: Literal["influxdb", "victoriametrics"] = "influxdb"
    #: Entries waiting for verification at most; beyond, new ones are skipped (counted).
    queue: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000

    @field_validator("trust")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for name, key in v.items():
            site, sep, gateway = name.partition("/")
            if not sep or not ID_RX.match(site) or not ID_RX.match(gateway):
                raise ValueError(f"'{name}' is not SITE/GATEWAY (ids as in the gateway's config)")
            if not re.fullmatch(r"[A-Za-z0-9+/]{43}=", key):
                raise ValueError(
                    f"the key of {name} is not an Ed25519 public key in base64 (44 characters, "
                    "as `energy-agent keys export` prints it)"
                )
        return v


class BridgeConfig(Strict):
    """The central bridge's config file (`energy-agent bridge -c FILE`)."""

    mqtt: Mqtt
    influx: Influx
    bridge: BridgeSettings = BridgeSettings()
    ledger: BridgeLedger | None = None

    @model_validator(mode="after")
    def _dead_letter_outside(self) -> BridgeConfig:
        dl, prefix = self.bridge.dead_letter_topic, self.mqtt.prefix
        if dl == prefix or dl.startswith(prefix + "/"):
            raise ValueError(
                f"bridge.dead_letter_topic '{dl}' is under mqtt.prefix '{prefix}/': "
                "rejects would be read back as input; choose a topic outside it"
            )
        return self


def parse_bridge_config(
    text: str, file: str = "", *, env: Mapping[str, str] | None = None
) -> BridgeConfig:
    """Validate a bridge config document like the agent's: every problem, with its line."""
    return bridge_config(*parse_document(text, file), env=env)


def bridge_config(
    doc: YamlDocument,
    problems: list[Problem],
    *,
    env: Mapping[str, str] | None = None,
    files: bool = False,
) -> BridgeConfig:
    """The model of a parsed document; with ``files``, also the files it names (secrets)."""
    problems = problems + expand_env(doc, os.environ if env is None else env)
    config: BridgeConfig | None = None
    try:
        config = BridgeConfig.model_validate(doc.data)
    except ValidationError as exc:
        problems += validation_problems(doc, exc)
    if problems:
        raise ConfigError(dedupe(problems))
    assert config is not None
    if files:
        referenced_files(doc, config)
    return config


def load_bridge_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, files: bool = True
) -> BridgeConfig:
    """`energy-agent bridge -c FILE`: read and validate; ConfigError lists every problem.

    ``files=False`` checks the document only, not the files it names (they may be
    another machine's).
    """
    doc, problems = parse_document(read_config_text(path), str(Path(path)))
    return bridge_config(doc, problems, env=env, files=files)
