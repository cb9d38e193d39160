"""What every config file shares: YAML with lines, ``${ENV}`` expansion, one error listing all.

Both loaders (the gateway's :mod:`agent.config.load` and the bridge's
:mod:`agent.config.bridge`) use this module; it needs only the generic YAML
document and problem types (:mod:`confdoc`: PyYAML and pydantic, no Modbus), so
the bridge can load its config without the drivers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config.secrets import file_problems
from confdoc.errors import DocumentError, Problem
from confdoc.yamldoc import YamlDocument, parse_yaml, read_document

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(DocumentError):
    """The config file has problems; ``problems`` lists all of them."""


def expand_env(doc: YamlDocument, env: Mapping[str, str]) -> list[Problem]:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in string values, in place; ``$$`` is a ``$``."""
    problems: list[Problem] = []

    def sub(value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "$" not in value:
            return value

        def one(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(
                doc.problem(
                    path,
                    f"environment variable {name} is not set "
                    f"(export it, or write ${{{name}:-default}})",
                )
            )
            return m.group(0)

        return _ENV.sub(one, value)

    doc.data = sub(doc.data, ())
    return problems


def dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        key = (p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return sorted(out, key=lambda p: (p.line or 0, p.path))


def read_config_text(path: str | Path) -> str:
    """The file's text; a missing, unreadable, oversized or non-UTF-8 file is a problem.

    Read with the YAML loader's bounds (``confdoc.yamldoc.MAX_DOCUMENT_BYTES``, regular
    files only): ``-c /dev/zero`` or a 100 MB file is refused before it is read.
    """
    text, problems = read_document(path, "the config file")
    if text is None:
        raise ConfigError(problems)
    return text


def parse_document(text: str, file: str) -> tuple[YamlDocument, list[Problem]]:
    """The YAML document and its problems so far (duplicate keys); ConfigError if none."""
    doc, problems = parse_yaml(text, file)
    if doc is None:
        raise ConfigError(problems)
    return doc, problems


def referenced_files(doc: YamlDocument, config: Any) -> None:
    """ConfigError when a file the valid ``config`` names cannot be used (see secrets)."""
    problems = file_problems(doc, config)
    if problems:
        raise ConfigError(dedupe(problems))
