"""The live page in Debian's headless chromium, against a running `energy-agent demo`.

Playwright's Python package drives the *installed* browser
(``executable_path=/usr/bin/chromium``); it downloads nothing at install time
and `playwright install` is never run. One demo serves the whole module:
first with its broker, then with the broker killed, where the page must say so.
Screenshots go to test-artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.demo.broker import find_mosquitto
from tests.support.cli import ROOT, cli_command, free_port
from tests.support.history_seed import Seeded, seed

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    url: str
    log: Path
    requests: list[str] = field(default_factory=list)
    seeded: Seeded | None = None

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "api/state", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc

    def broker_pid(self) -> int:
        """The demo's own mosquitto: a child of the demo process."""
        pid = self.proc.pid
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                comm = Path(f"/proc/{child}/comm").read_text().strip()
                if comm == "mosquitto":
                    return int(child)
        raise AssertionError("the demo has no mosquitto child")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; scripts/test installs it")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "chromium is not installed; scripts/test installs it (apt-get install chromium)"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    env = dict(os.environ, DEMO_HTTP_PORT=str(port), COLUMNS="200", PYTHONUNBUFFERED="1")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cli_command(), "demo", "--duration", "400", "--no-rtu"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            cwd=ROOT,
        )
    d = Demo(proc, f"http://127.0.0.1:{port}/", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                d.state()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text()
                    raise AssertionError(f"demo did not serve its page:\n{text}") from None
                time.sleep(0.3)
        # a month of history before the demo started, for the trends (tests/support)
        doc = d.state()
        devices = [(x["id"], x["kind"]) for x in doc["devices"]]
        path = Path(doc["ledger"]["history"]["path"])
        d.seeded = seed(
            path, devices, doc["agent"]["started_ms"] - 60_000, doc["agent"]["timezone"]
        )
        yield d
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser_page(demo: Demo) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        page.on("request", lambda r: demo.requests.append(r.url))
        response = page.goto(demo.url)
        assert response is not None and response.ok
        body = response.body()
        assert len(body) < 100_000
        try:
            yield page
        finally:
            browser.close()


def _shown(page: Any) -> dict[str, Any]:
    """What the page shows now: the document's ts and every number's text."""
    result: dict[str, Any] = page.evaluate(
        """() => ({
          ts: document.body.dataset.ts,
          values: Object.fromEntries([...document.querySelectorAll('[data-k]')]
                    .map(e => [e.dataset.k, [e.textContent, +e.dataset.d]])),
          devices: Object.fromEntries([...document.querySelectorAll('tr[data-device]')]
                    .map(r => [r.dataset.device, {
                        power: r.querySelector('.power').textContent,
                        status: r.querySelector('.status').textContent,
                        spark: r.querySelectorAll('polyline').length}])),
          alerts: document.getElementById('alerts').innerText,
          mqtt: document.getElementById('mqtt').textContent,
          stream: document.getElementById('stream').textContent,
        })"""
    )
    return result


def _get(doc: dict[str, Any], path: str) -> Any:
    for k in path.split("."):
        doc = doc.get(k) if isinstance(doc, dict) else None  # type: ignore[assignment]
    return doc


def _same(text: str, value: Any, digits: int) -> bool:
    if value is None:
        return text == "—"
    # grouped as the page's language groups them: 1,234.5 (en and zh-CN alike)
    return abs(float(text.replace(",", "")) - float(value)) <= 0.5 * 10**-digits + 1e-9


def _matching(demo: Demo, page: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A page view and an /api/state answer of the same tick (the server builds one per second)."""
    for _ in range(40):
        doc = demo.state()
        shown = _shown(page)
        if shown["ts"] == str(doc["ts"]):
            return doc, shown
        time.sleep(0.1)
    raise AssertionError("the page never showed the tick /api/state answered with")


def test_page_shows_the_live_state(demo: Demo, browser_page: Any) -> None:
    page = browser_page
    # live values: power at once; an intensity record once the first full minute closed
    page.wait_for_function(
        "() => window.energyAgentState && window.energyAgentState.site.intensity",
        timeout=150_000,
    )
    page.wait_for_timeout(3000)  # a few sparkline points
    doc, shown = _matching(demo, page)
    for key, (text, digits) in shown["values"].items():
        assert _same(text, _get(doc, key), digits), (key, text, _get(doc, key))
    assert doc["site"]["intensity"]["intensity_g_per_kwh"] is not None
    assert shown["values"]["site.power_kw"][0] != "—"
    for d in doc["devices"]:
        row = shown["devices"][d["id"]]
        assert _same(row["power"], d["power_kw"], 2), (d["id"], row, d["power_kw"])
        assert row["status"] == "OK"
        if d["kind"] == "electricity":
            assert row["spark"] == 1
    assert shown["stream"] == "LIVE" and shown["mqtt"] == "MQTT CONNECTED"
    page.screenshot(path=str(ARTIFACTS / "page-live.png"), full_page=True)
    # every request the page made went to the gateway itself
    assert demo.requests and all(u.startswith(demo.url) for u in demo.requests), demo.requests


# --- both languages, desktop and phone, trends (issue 17) --------------------------------

VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}

#: What a viewer sees, measured in the page: overflow, the demand card, truncated names.
_LAYOUT = """() => {
  const card = document.getElementById('card-demand').getBoundingClientRect();
  const outside = [...document.querySelectorAll('#card-demand *')]
    .filter(e => e.getBoundingClientRect().right > card.right + 0.5)
    .map(e => e.className + ':' + e.textContent);
  const clipped = [...document.querySelectorAll('.trunc, .meter-row .name')]
    .filter(e => e.scrollWidth > e.clientWidth + 1);
  return {
    lang: document.documentElement.lang,
    scrollWidth: document.scrollingElement.scrollWidth,
    innerWidth: window.innerWidth,
    demandOutside: outside,
    clippedWithoutTitle: clipped.filter(e => getComputedStyle(e).textOverflow !== 'ellipsis'
      || e.title !== e.textContent.replace(/^└ /, '')).map(e => e.textContent),
    ts: +document.body.dataset.ts,
    health: document.getElementById('health').textContent,
    zone: document.getElementById('zone').textContent,
    footer: document.getElementById('footer').textContent,
    counters: [...document.querySelectorAll('tr[data-device] .counter')].map(e => e.textContent),
    warm: document.getElementById('demand-warm').hidden ? null
      : document.getElementById('demand-warm').textContent,
    young: window.energyAgentState.site.demand.meters.some(
      m => m.window_min != null && m.window_min < window.energyAgentState.site.demand.period_min),
    powerLines: document.querySelectorAll('#chart-power polyline').length,
    energyBars: document.querySelectorAll('#chart-energy rect').length,
  };
}"""


@pytest.fixture(scope="module")
def chromium(browser_page: Any) -> Any:
    """The module's browser (one Playwright per process): a new context per viewer."""
    return browser_page.context.browser


def _open(demo: Demo, chromium: Any, lang: str, size: tuple[int, int]) -> tuple[Any, list[str]]:
    """A fresh viewer whose browser prefers ``lang``; every request leaving the gateway
    is refused and recorded."""
    ctx = chromium.new_context(viewport={"width": size[0], "height": size[1]}, locale=lang)
    elsewhere: list[str] = []

    def gate(route: Any) -> None:
        if route.request.url.startswith(demo.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    ctx.route("**/*", gate)
    page = ctx.new_page()
    response = page.goto(demo.url)
    assert response is not None and response.ok
    assert len(response.body()) < 150_000, "the page with its chart code must stay < 150 KB"
    try:
        page.wait_for_function(
            "() => window.energyAgentState && window.energyAgentTrends['24h']"
            " && document.querySelectorAll('#chart-power polyline').length",
            timeout=20_000,
        )
    except Exception as exc:  # playwright's TimeoutError: say what the page has instead
        trend = page.evaluate("JSON.stringify(window.energyAgentTrends).slice(0, 600)")
        raise AssertionError(f"no power trend drawn: {trend}") from exc
    page.wait_for_timeout(1500)  # a few sparkline points
    return page, elsewhere


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_the_page_speaks_the_browser_s_language_on_desktop_and_phone(
    demo: Demo, chromium: Any, lang: str
) -> None:
    for name, size in VIEWPORTS.items():
        page, elsewhere = _open(demo, chromium, lang, size)
        shown = page.evaluate(_LAYOUT)
        page.screenshot(path=str(ARTIFACTS / f"page-{lang}-{name}.png"), full_page=True)
        page.context.close()
        assert shown["lang"] == lang
        assert shown["scrollWidth"] <= shown["innerWidth"], (name, shown["scrollWidth"])
        assert shown["demandOutside"] == [], name
        assert shown["clippedWithoutTitle"] == [], name
        assert elsewhere == []
        # words in the language: the health pill and the zone line
        if lang == "zh-CN":
            assert shown["health"] in ("一切正常", "等待数据") or "需要注意" in shown["health"]
            assert shown["zone"].startswith("时间为 Asia/Shanghai（GMT+8）")
        else:
            assert shown["health"] == "ALL OK" or "ATTENTION" in shown["health"]
            assert shown["zone"].startswith("times in Asia/Shanghai (GMT+8)")
        # the footer's time: the document's, on the site's 24-hour clock
        site_time = dt.datetime.fromtimestamp(shown["ts"] / 1000, ZoneInfo("Asia/Shanghai"))
        assert site_time.strftime("%H:%M:%S") + " GMT+8" in shown["footer"], shown["footer"]
        assert "AM" not in shown["footer"] and "PM" not in shown["footer"]
        # counters above 1,000 are grouped (the demo's meters start at ~1,000 kWh)
        big = [c for c in shown["counters"] if float(c.split()[0].replace(",", "")) >= 1000]
        assert big and all(re.fullmatch(r"\d{1,3}(,\d{3})+\.\d{2} \S+", c) for c in big), big
        # the demand window is younger than 15 minutes: said as warm-up, in words (before
        # the first minute closed there is no demand and nothing to warm up)
        assert (shown["warm"] is not None) == shown["young"], shown["warm"]
        if shown["young"]:
            assert "warming up" in shown["warm"] or "预热" in shown["warm"]
        assert shown["powerLines"] >= 1 and shown["energyBars"] >= 10


def test_the_language_switch_is_remembered(demo: Demo, chromium: Any) -> None:
    page, _ = _open(demo, chromium, "en-US", VIEWPORTS["phone"])
    assert page.inner_text("#health") in ("ALL OK", "WAITING FOR DATA") or "ATTENTION" in (
        page.inner_text("#health")
    )
    page.click("#lang")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.inner_text("#card-today h2") == "今日"
    assert page.inner_text("#trend-subject option[value='']") == "站点（根电表）"
    page.reload()
    page.wait_for_function("() => window.energyAgentState", timeout=10_000)
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.inner_text("#card-today h2") == "今日"
    assert "lang=zh-CN" in page.evaluate("document.cookie")
    page.click("#lang")
    assert page.inner_text("#card-today h2").lower() == "today"
    page.context.close()


def test_trends_show_the_seeded_month(demo: Demo, chromium: Any) -> None:
    """30 days: 6-hour buckets on the site's clock. A bucket of 00:00-06:00 Shanghai is
    all night: each electricity root at a quarter of its day power (tests/support)."""
    seeded = demo.seeded
    assert seeded is not None
    with urllib.request.urlopen(demo.url + "api/trend?span=30d", timeout=10) as r:
        trend = json.loads(r.read())
    assert (trend["n"], trend["bucket_s"]) == (120, 21600)
    doc = demo.state()
    roots = [d for d in doc["devices"] if d["parent"] is None and d["kind"] == "electricity"]
    # the first whole bucket after the seed began that starts at 00:00 site time
    zone = ZoneInfo("Asia/Shanghai")
    for i in range(trend["n"]):
        start = trend["from"] + i * 21_600_000
        if start > seeded.first_ms and dt.datetime.fromtimestamp(start / 1000, zone).hour == 0:
            break
    night = sum(seeded.day_kw[d["id"]] / 4 for d in roots)
    assert trend["site"]["power_kw"][i] == pytest.approx(night, abs=1e-3)
    office = seeded.day_kw["office"]
    assert trend["devices"]["office"]["energy_kwh"][i] == pytest.approx(office / 4 * 6, abs=1e-3)
    assert trend["devices"]["office"]["coverage"][i] == 1.0
    # intensity: every record at FACTOR kg/kWh -> 570.3 g/kWh
    assert trend["site"]["intensity_g_per_kwh"][i] == pytest.approx(570.3, abs=0.1)
    # the 6-hour hole ten days back, across two buckets: what they miss adds up to one
    # bucket (6 h of 6 h), e.g. 2 h of the first and 4 h of the second
    h = (seeded.hole[0] - trend["from"]) // 21_600_000
    cov = trend["site"]["coverage"]
    assert (1 - cov[h]) + (1 - cov[h + 1]) == pytest.approx(1.0, abs=0.002), cov[h - 1 : h + 3]
    assert cov[h - 1] == 1.0 and cov[h + 2] == 1.0
    # the page draws it: 30 days, the per-device view, on a phone, in Chinese
    page, elsewhere = _open(demo, chromium, "zh-CN", VIEWPORTS["phone"])
    page.click("#span-30d")
    page.wait_for_function(
        "() => window.energyAgentTrends['30d']"
        " && document.querySelectorAll('#chart-energy rect').length > 100",
        timeout=20_000,
    )
    page.select_option("#trend-subject", "office")
    assert page.evaluate("document.querySelectorAll('#chart-intensity').length") == 0
    assert "每 6 小时 能耗" in page.inner_text("#chart-energy h3")
    page.locator("#trends").screenshot(path=str(ARTIFACTS / "page-zh-CN-phone-trends-30d.png"))
    page.select_option("#trend-subject", "")
    page.locator("#trends").screenshot(path=str(ARTIFACTS / "page-zh-CN-phone-trends-site.png"))
    assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
    page.context.close()
    assert elsewhere == []


LONG = "compressor-station-north-hall-line-7-main-incomer-feeder"


def _staged(doc: dict[str, Any]) -> dict[str, Any]:
    """The demo's document with what a plant shows on a bad day: two alarms raised, a
    late meter holding the site record, demand warming up, and a very long meter name."""
    doc = json.loads(json.dumps(doc))
    doc.pop("history", None)
    first = doc["devices"][0]["id"]
    for d in doc["devices"]:
        if d["id"] == first:
            d["id"] = LONG
    for m in doc["site"]["demand"]["meters"]:
        if m["device"] == first:
            m["device"] = LONG
        m["now_kw"], m["peak_kw"], m["window_min"] = 1234.5, 1234.5, 4
    doc["site"]["demand"]["meters"][-1]["window_min"] = 9  # a meter that came later
    end = doc["ts"] // 60_000 * 60_000
    doc["site"]["held"] = {"end_ms": end, "waiting_for": ["press-2"], "until_ms": end + 120_000}
    doc["alarms"] = [
        {
            "id": "offline/press-2",
            "rule": "offline",
            "subject": "press-2",
            "state": "raised",
            "value": 61.0,
            "limit": 60.0,
            "since_ms": doc["ts"] - 61_000,
            "text": "press-2 offline for 61 s",
        },
        {
            "id": "ledger",
            "rule": "ledger",
            "subject": "ledger",
            "state": "raised",
            "value": None,
            "limit": None,
            "since_ms": doc["ts"] - 5_000,
            "text": "ledger cannot seal",
        },
    ]
    return doc


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_alarms_a_held_record_warm_up_and_long_names(demo: Demo, chromium: Any, lang: str) -> None:
    """The page fed a staged document (route interception: the gateway's own answers,
    changed): every part of issue 17's layout list, on a phone and a desktop."""
    staged = _staged(demo.state())
    frame = f"retry: 600000\n\nevent: state\ndata: {json.dumps(staged)}\n\n"
    for name, size in VIEWPORTS.items():
        ctx = chromium.new_context(viewport={"width": size[0], "height": size[1]}, locale=lang)
        ctx.route(
            "**/events",
            lambda route: route.fulfill(
                status=200, headers={"Content-Type": "text/event-stream"}, body=frame
            ),
        )
        ctx.route(
            "**/api/state*",
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps(staged)
            ),
        )
        page = ctx.new_page()
        page.goto(demo.url)
        page.wait_for_selector("#alert-alarms", timeout=10_000)
        page.wait_for_timeout(500)
        shown = page.evaluate(_LAYOUT)
        alarms = page.inner_text("#alert-alarms")
        held = page.inner_text("#int-held")
        warm = page.inner_text("#demand-warm")
        row = page.inner_text(f"#demand-meters .meter-row[data-meter='{LONG}'] .val")
        later = page.evaluate(
            "[...document.querySelectorAll('#demand-meters .meter-row .val')].pop().textContent"
        )
        name_title = page.get_attribute(
            f"#demand-meters .meter-row[data-meter='{LONG}'] .name", "title"
        )
        dev_title = page.get_attribute(f"tr[data-device='{LONG}'] .dev", "title")
        page.screenshot(path=str(ARTIFACTS / f"page-{lang}-{name}-alarms.png"), full_page=True)
        ctx.close()
        assert shown["scrollWidth"] <= shown["innerWidth"], name
        assert shown["demandOutside"] == [], name
        assert shown["clippedWithoutTitle"] == [], name
        assert name_title == LONG and dev_title == LONG
        since = dt.datetime.fromtimestamp((staged["ts"] - 61_000) / 1000, ZoneInfo("Asia/Shanghai"))
        assert "press-2 offline for 61 s" in alarms and since.strftime("%H:%M:%S") in alarms
        assert "ledger cannot seal" in alarms
        assert "press-2" in held and row == "1,234.5 / 1,234.5"  # the card says 4 of 15
        assert later.startswith("1,234.5 / 1,234.5 · 9/15 ")
        if lang == "en":
            assert "ALARMS RAISED: 2" in alarms and "value 61.00, limit 60.00" in alarms
            assert "waits for press-2" in held and "warming up: 4 of 15 min" in warm
        else:
            assert "报警中：2" in alarms and "数值 61.00，限值 60.00" in alarms
            assert "正在等待 press-2" in held and "已测 4 / 15 分钟" in warm


def test_status_prints_the_same_picture(demo: Demo) -> None:
    for _ in range(5):
        before = demo.state()
        out = subprocess.run(
            [*cli_command(), "status", "--url", demo.url],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, COLUMNS="200"),
        )
        after = demo.state()
        it = before["site"]["intensity"]
        if it == after["site"]["intensity"]:
            break
    assert out.returncode in (0, 1), out.stderr
    assert "Demo plant" in out.stdout and "MQTT connected" in out.stdout
    assert f"{it['intensity_g_per_kwh']:,.0f}" in out.stdout
    for d in after["devices"]:
        assert d["id"] in out.stdout


def test_status_speaks_the_terminal_s_language(demo: Demo) -> None:
    def status(*args: str, **env: str) -> str:
        out = subprocess.run(
            [*cli_command(), "status", "--url", demo.url, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, COLUMNS="200", **env),
        )
        assert out.returncode in (0, 1), out.stderr
        return out.stdout

    zh = status(LANG="zh_CN.UTF-8", LC_ALL="")
    assert "当前总功率" in zh and "MQTT 已连接" in zh and "设备" in zh
    assert "times in" not in zh and "时区 Asia/Shanghai (UTC+08:00)" in zh
    en = status("--lang", "en", LANG="zh_CN.UTF-8")
    assert "total power now" in en and "times in Asia/Shanghai (UTC+08:00)" in en
    assert f"read from {demo.url}api/state" in en


def test_page_says_when_the_broker_is_down(demo: Demo, browser_page: Any) -> None:
    page = browser_page
    os.kill(demo.broker_pid(), signal.SIGKILL)
    page.wait_for_function(
        "() => document.getElementById('alert-mqtt') !== null"
        " && document.getElementById('alert-buffer') !== null",
        timeout=30_000,
    )
    doc, shown = _matching(demo, page)
    assert doc["mqtt"]["connected"] is False and doc["buffer"]["alarm"] is True
    assert "MQTT LINK DOWN" in shown["alerts"] and shown["mqtt"] == "MQTT DOWN"
    assert "BUFFER" in shown["alerts"]
    assert _same(shown["values"]["buffer.depth"][0], doc["buffer"]["depth"], 0)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "page-broker-down.png"), full_page=True)
    out = subprocess.run(
        [*cli_command(), "status", "--url", demo.url],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert out.returncode == 1 and "MQTT DOWN" in out.stdout
    # the same page on a phone, in dark mode
    with contextlib.ExitStack():
        phone = page.context.browser.new_page(
            viewport={"width": 390, "height": 844}, color_scheme="dark"
        )
        phone.goto(demo.url)
        phone.wait_for_function("() => window.energyAgentState", timeout=10_000)
        phone.wait_for_timeout(1000)
        phone.screenshot(path=str(ARTIFACTS / "page-phone-dark.png"), full_page=True)
        phone.close()
    assert all(u.startswith(demo.url) for u in demo.requests), demo.requests


def test_page_reconnects_after_the_stream_drops(demo: Demo, browser_page: Any) -> None:
    page = browser_page
    # The stream drops and the gateway cannot be reached for a moment.
    page.route("**/events", lambda route: route.abort())
    page.evaluate("() => window.energyAgentStream().close()")
    page.wait_for_function(
        "() => document.getElementById('stream').textContent.startsWith('RECONNECTING')",
        timeout=15_000,
    )
    page.screenshot(path=str(ARTIFACTS / "page-reconnecting.png"))
    page.unroute("**/events")
    page.wait_for_function(
        "() => document.getElementById('stream').textContent === 'LIVE'", timeout=20_000
    )
