"""Config models both config files use: the ``mqtt:`` section, ids, strictness.

Kept apart from :mod:`agent.config.models` because that module describes buses
and meters with the drivers' types, and the central bridge must load its config
without importing drivers, Modbus or numba (DESIGN: the bridge needs only the
payload models and its two clients).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from agent.config.secrets import read_secret

#: For pydantic, whose (Rust) regex ``$`` is the end of the text, and for messages.
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
#: For Python's ``re``, whose ``$`` also matches before a trailing newline: ``\Z`` ends
#: the text, so ``ID_RX.match`` cannot take ``"gw-01\n"`` for an id.
ID_RX = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt key silently taking its default is worse."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretFiles(Strict):
    """A section with fields naming secret files (``secret_fields``), each read once.

    The loader reads them while it checks the config (:mod:`agent.config.secrets`),
    before any event loop runs; the commands then take them from here. The content
    is kept out of the model's fields, so no dump, repr or log shows it.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()
    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    def secret(self, field: str) -> str | None:
        """The secret in the file ``field`` names, or None without one; FileRefused if unusable."""
        path: Path | None = getattr(self, field)
        if path is None:
            return None
        if field not in self._secrets:
            self._secrets[field] = read_secret(path)
        return self._secrets[field]


class TlsSettings(Strict):
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both `cert` and `key`")
        return self


class Mqtt(SecretFiles):
    secret_fields = ("password_file",)

    host: str = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    tls: TlsSettings | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    prefix: str = "energy/v1"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30

    @model_validator(mode="after")
    def _one_password(self) -> Mqtt:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give `password` (e.g. from ${ENV}) or `password_file`, not both")
        if (
            self.prefix.startswith("/")
            or self.prefix.endswith("/")
            or "+" in self.prefix
            or "#" in self.prefix
        ):
            raise ValueError("`prefix` must not start or end with '/' nor contain + or #")
        return self
