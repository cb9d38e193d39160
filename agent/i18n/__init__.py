"""Words for people, in English and Simplified Chinese, kept as data.

Why data: the plants this is for mostly read Chinese, the code and the logs
stay English, and a translator should edit a JSON file, not Python. One folder
per language (``en/``, ``zh-CN/``), one file per domain (``page``,
``status``, ``report``, ``alarms`` …) so that the page, the CLI and the report
can each grow their words without touching each other's files.

Rules, checked by tests/unit/i18n/test_i18n.py: every language has the same keys in
every domain with the same ``{placeholders}``; English is the fallback for a
language that is not shipped, never for a key that is missing.

Only words live here. Numbers are formatted by the caller in the site's zone
and units (grouped digits, 24-hour clock), since the same figure is printed
the same way in both languages.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from string import Formatter
from typing import Any

#: Shipped languages, the default first. BCP 47 tags, as the page's ``lang``.
LANGUAGES: tuple[str, ...] = ("en", "zh-CN")
DEFAULT = LANGUAGES[0]


class MissingKey(KeyError):
    """A key that no shipped catalogue of that domain has: a programming error."""


def resolve(tag: str | None) -> str:
    """The shipped language for a tag as users and browsers write it (``zh``, ``zh_CN``,
    ``zh-Hans-CN``, ``EN-us``); English for anything else."""
    if not tag:
        return DEFAULT
    norm = tag.strip().replace("_", "-").lower()
    if norm.startswith("zh"):
        return "zh-CN"  # Traditional-Chinese readers still read Simplified better than English
    return DEFAULT


def from_accept_language(header: str | None) -> str:
    """The best shipped language for an HTTP ``Accept-Language`` header (by q-value)."""
    if not header:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, n, tag))
    for _, _, tag in sorted(ranked):
        if tag == "*" or tag.lower().startswith(("en", "zh")):
            return resolve(tag) if tag != "*" else DEFAULT
    return DEFAULT


def domains() -> tuple[str, ...]:
    """The domains the default language ships (the reference set of files)."""
    folder = resources.files(__package__).joinpath(DEFAULT)
    return tuple(
        sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))
    )


@cache
def catalog(lang: str, domain: str) -> dict[str, str]:
    """One language's words for one domain, as shipped (read once per process)."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r} is not shipped; choose one of {', '.join(LANGUAGES)}")
    raw = resources.files(__package__).joinpath(lang, f"{domain}.json").read_text("utf-8")
    data: Any = json.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"agent/i18n/{lang}/{domain}.json: must map keys to strings")
    return dict(data)


def placeholders(text: str) -> frozenset[str]:
    """The ``{names}`` a text fills in; the same set in every language."""
    return frozenset(name for _, name, _, _ in Formatter().parse(text) if name)


class Translator:
    """Words of one language: ``t("page.title")`` is the key ``title`` of domain ``page``."""

    def __init__(self, lang: str | None = None) -> None:
        self.lang = resolve(lang)

    def __call__(self, key: str, /, **values: object) -> str:
        domain, _, name = key.partition(".")
        try:
            text = catalog(self.lang, domain)[name]
        except (KeyError, FileNotFoundError) as exc:
            raise MissingKey(key) from exc
        return text.format(**values) if values else text

    def domain(self, domain: str) -> dict[str, str]:
        """A whole domain, e.g. to hand the page its words as one JSON object."""
        return catalog(self.lang, domain)
