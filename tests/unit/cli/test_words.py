"""The terminal's language and the site's clock (agent.cli.words), and `status` and the
demo's table rendered in each language from the same snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from agent.cli.demo import _render
from agent.cli.status import render
from agent.cli.words import language, site_time, zone_label
from agent.http.state import state_document
from tests.support.agents import MIN, T0, make_agent


@pytest.mark.parametrize(
    ("given", "env", "lang"),
    [
        ("zh-CN", {"LANG": "en_US.UTF-8"}, "zh-CN"),  # the option wins
        ("en", {"LC_ALL": "zh_CN.UTF-8"}, "en"),
        (None, {"LANG": "zh_CN.UTF-8"}, "zh-CN"),
        (None, {"LC_ALL": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),  # LC_ALL first
        (None, {"LC_MESSAGES": "zh_TW", "LANG": "C"}, "zh-CN"),
        (None, {"LANG": "C.UTF-8"}, "en"),
        (None, {}, "en"),
        (None, {"LC_ALL": "", "LANG": "zh_CN.GB18030"}, "zh-CN"),  # empty is unset
    ],
)
def test_the_language_comes_from_the_option_then_the_locale(
    given: str | None, env: dict[str, str], lang: str
) -> None:
    assert language(given, env) == lang


def test_times_are_on_the_site_s_24_hour_clock() -> None:
    # 2023-11-14 22:13:20 UTC is 06:13:20 the next morning in Shanghai
    assert site_time(1_700_000_000_000, "Asia/Shanghai") == "06:13:20"
    assert site_time(1_700_000_000_000, "UTC") == "22:13:20"
    assert zone_label(1_700_000_000_000, "Asia/Shanghai") == "Asia/Shanghai (UTC+08:00)"
    assert zone_label(1_700_000_000_000, "America/St_Johns") == "America/St_Johns (UTC-03:30)"
    assert site_time(1_700_000_000_000, "Not/AZone") == "22:13:20"  # never a crash in a view


def _text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_status_speaks_both_languages(tmp_path: Path) -> None:
    """A snapshot five minutes after the start: demand warms up (5 of 15 min), said so."""
    agent = make_agent(tmp_path, minutes=5)
    doc = json.loads(json.dumps(state_document(agent.status(T0 + 5 * MIN + 1000))))
    en = _text(render(doc, "en", "http://127.0.0.1:8080/api/state"))
    zh = _text(render(doc, "zh-CN", "http://127.0.0.1:8080/api/state"))
    assert "ATTENTION" in en and "total power now" in en and "warming up 5/15 min" in en
    assert "需要注意" in zh and "当前总功率" in zh and "预热中 5/15 分钟" in zh
    assert "ATTENTION" not in zh and "total power" not in zh
    # where it was read, and when on the site's clock (the test plant's zone is UTC)
    time = site_time(doc["ts"], "UTC")
    assert f"read from http://127.0.0.1:8080/api/state at {time}, times in UTC (UTC+00:00)" in en
    assert "1,010.00 kWh" in en  # grouped: main's 1000 kWh + 120 kW x 5 min
    # no "100 %" for a meter whose window is a third full
    assert "100 %" not in en


def test_the_demo_table_speaks_both_languages(tmp_path: Path) -> None:
    status = make_agent(tmp_path, minutes=0).status(T0 + 12_500)
    en = _text(_render(status, "en"))
    zh = _text(_render(status, "zh-CN"))
    assert "last good poll" in en and "ERROR timeout" in en and "1,000.00 kWh" in en
    assert "最近成功读取" in zh and "错误 timeout" in zh and "1,000.00 kWh" in zh
    assert "12.5 秒前" in zh and "MQTT 断开" in zh
    assert f"{site_time(status.ts, 'UTC')} UTC (UTC+00:00)" in zh
