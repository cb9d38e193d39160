"""The live page as the server sends it: every language's words inside, the browser's
language chosen, no address off the gateway, and small."""

from __future__ import annotations

import json
import re

from agent import i18n
from agent.http.server import page_html, page_in

#: Every request the page may make goes to the gateway that served it.
OFF_GATEWAY = re.compile(rb"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", re.I)


def _words(page: bytes) -> dict[str, dict[str, str]]:
    m = re.search(rb'<script id="words" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None
    words: dict[str, dict[str, str]] = json.loads(m.group(1))
    return words


def test_the_page_carries_every_language_s_words() -> None:
    page = page_html()
    words = _words(page)
    assert sorted(words) == sorted(i18n.LANGUAGES)
    for lang in i18n.LANGUAGES:
        assert words[lang] == i18n.catalog(lang, "page")
    assert b"__WORDS__" not in page


def test_every_key_the_page_uses_is_shipped() -> None:
    """t("key") and data-t="key" in the page's code are keys of page.json."""
    text = page_html().decode()
    script = text.split('<script id="words"', 1)[1]
    used = set(re.findall(r"""\bt\("(\w+)"[,)]""", script))
    used |= set(re.findall(r'data-t(?:-title)?="(\w+)"', text))
    used |= {f"bucket_{s}" for s in (900, 21600)} | {f"kind_{k}" for k in ("electricity", "gas")}
    assert used - set(i18n.catalog("en", "page")) == set()
    assert len(used) > 60


def test_the_browser_s_language_is_the_page_s_first() -> None:
    page = page_html()
    assert page_in(page, None).startswith(b'<!doctype html>\n<html lang="en">')
    assert b'<html lang="zh-CN">' in page_in(page, "zh-CN,zh;q=0.9,en;q=0.8")
    assert b'<html lang="en">' in page_in(page, "en-US,en;q=0.9,zh;q=0.5")
    assert b'<html lang="en">' in page_in(page, "de-DE")


def test_the_page_is_small_and_loads_nothing_from_elsewhere() -> None:
    page = page_html()
    assert len(page) < 150_000
    assert OFF_GATEWAY.search(page) is None
    assert b"@import" not in page and b'<link rel="stylesheet"' not in page
