"""The live page in Debian's headless chromium, against a running `energy-agent demo`.

Playwright's Python package drives the *installed* browser
(``executable_path=/usr/bin/chromium``); it downloads nothing at install time
and `playwright install` is never run. One demo serves the whole module:
first with its broker, then with the broker killed, where the page must say so.
Screenshots go to test-artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.demo.broker import find_mosquitto
from tests.support.cli import ROOT, cli_command, free_port

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
        page = browser.new_page(viewport={"width": 1280, "height": 900})
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
    return abs(float(text) - float(value)) <= 0.5 * 10**-digits + 1e-9


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
