"""The translation tables: complete in every language, and the language negotiation."""

from __future__ import annotations

import pytest

from agent import i18n


@pytest.mark.parametrize("domain", i18n.domains())
@pytest.mark.parametrize("lang", [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT])
def test_every_language_has_every_key_with_the_same_placeholders(lang: str, domain: str) -> None:
    reference = i18n.catalog(i18n.DEFAULT, domain)
    other = i18n.catalog(lang, domain)
    assert sorted(set(reference) - set(other)) == [], f"{lang}/{domain}.json lacks these keys"
    assert sorted(set(other) - set(reference)) == [], f"{lang}/{domain}.json has stray keys"
    wrong = {
        key: (sorted(i18n.placeholders(reference[key])), sorted(i18n.placeholders(text)))
        for key, text in other.items()
        if i18n.placeholders(text) != i18n.placeholders(reference[key])
    }
    assert wrong == {}, f"{lang}/{domain}.json: placeholders differ from English"
    assert all(text.strip() for text in other.values()), "an empty translation"


def test_no_domain_file_exists_in_one_language_only() -> None:
    from importlib import resources

    root = resources.files("agent.i18n")
    for lang in i18n.LANGUAGES:
        names = sorted(p.name for p in root.joinpath(lang).iterdir() if p.name.endswith(".json"))
        assert names == [f"{d}.json" for d in i18n.domains()], lang


@pytest.mark.parametrize(
    ("tag", "lang"),
    [
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh_CN", "zh-CN"),
        ("ZH-Hans-CN", "zh-CN"),
        ("en-US", "en"),
        ("de", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_resolve(tag: str | None, lang: str) -> None:
    assert i18n.resolve(tag) == lang


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("de-DE,de;q=0.9,zh;q=0.5", "zh-CN"),  # German first, but only Chinese is shipped
        ("fr;q=0.9, en;q=0.2, zh;q=0.8", "zh-CN"),
        ("zh;q=0", "en"),
        ("", "en"),
        ("garbage;q=x", "en"),
    ],
)
def test_accept_language(header: str, lang: str) -> None:
    assert i18n.from_accept_language(header) == lang


def test_translator_fills_placeholders_and_refuses_unknown_keys() -> None:
    assert i18n.Translator("zh-CN")("status.alarms", n=2) == "报警中：2"
    assert i18n.Translator("en")("status.alarms", n=2) == "alarms raised: 2"
    with pytest.raises(i18n.MissingKey):
        i18n.Translator("en")("status.no_such_key")
    with pytest.raises(i18n.MissingKey):
        i18n.Translator("en")("nodomain.title")
