"""`energy-agent report` on a replayed month (tests/support/report_month.py): the
totals against sums worked out by hand, the cost by hand, the same report from
the history, JSON lines and VictoriaMetrics, the HTML in headless chromium, and
bad inputs. Every hand sum is written out where it is checked.

Per day (local), from the readings' rules:
  main      12 h x 100 kW + 12 h x 40 kW = 1200 + 480 = 1680 kWh
  line-a    0.3 x 1680 = 504 kWh; main's unmetered rest 1680 - 504 = 1176 kWh
  boiler    16 h x 20 m3 = 320 m3; 320 x 10.81 = 3459.2 kWh; 320 x 2.162 = 691.84 kg
  counter   12 h x 60 = 720 units
  scope 2   hours 17-19 at 100 kW and 20-21 at 40 kW use 0.8: 300 + 80 = 380 kWh x 0.8
            = 304 kg; the other 1680 - 380 = 1300 kWh x 0.5703 = 741.39 kg; 1045.39 kg
November (30 days): 50400 kWh, 9600 m3, 103776 kWh of gas, 21600 units,
  scope 1 20755.2 kg, scope 2 31361.7 kg.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.i18n import Translator
from tests.support import report_month
from tests.support.cli import ROOT, free_port
from tests.support.report_sources import history_of, write_victoria
from tests.support.xlsx import read_xlsx

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
EN = Translator("en")
DAYS = 30
MONTH_START_MS = 1_793_462_400_000  # 2026-11-01 00:00 +08:00 = 2026-10-31 16:00 UTC
MONTH_END_MS = MONTH_START_MS + DAYS * 86_400_000


@dataclass(frozen=True)
class Month:
    config: Path
    jsonl: Path
    state_dir: Path
    tmp: Path


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory, cli) -> Month:
    tmp = tmp_path_factory.mktemp("report")
    state = tmp / "state"
    config = report_month.config(tmp / "plant.yaml", state)
    report_month.readings(tmp / "readings.csv")
    jsonl = tmp / "records.jsonl"
    r = cli.run(
        "replay", "-c", str(config), str(tmp / "readings.csv"), "--topics", "energy",
        "--out", str(jsonl), timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r
    return Month(config, jsonl, state, tmp)


def test_the_month_starts_where_the_readings_say() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=report_month.ZONE)
    assert int(start.timestamp() * 1000) == MONTH_START_MS


def run_report(cli, month: Month, out: Path, *source: str, period: str = "2026-11", lang="en"):
    return cli.run(
        "report", "--period", period, "-c", str(month.config), *source, "--out", str(out),
        "--lang", lang, timeout=120,
    )  # fmt: skip


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def totals_of(rows: list[list[object]]) -> dict[tuple[str, str], object]:
    """(figure, unit) -> value, from the totals table (a header row first)."""
    return {(str(r[0]), str(r[2] or "")): r[1] for r in rows[1:]}


def figure(key: str) -> str:
    return EN(f"report.total_{key}")


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-9, abs=1e-6)


@pytest.fixture(scope="module")
def from_jsonl(cli, month: Month) -> Path:
    out = month.tmp / "out-jsonl"
    r = run_report(cli, month, out, "--jsonl", str(month.jsonl))
    assert r.returncode == 0, r
    return out


def test_month_totals_in_csv_and_xlsx_are_the_hand_sums(from_jsonl: Path) -> None:
    from_csv = {k: float(v) for k, v in totals_of(read_csv(from_jsonl / "report.csv")).items()
                if v not in ("", None) and k[0] != figure("peak_at")}  # fmt: skip
    book = read_xlsx(from_jsonl / "report.xlsx")
    sheet = book[EN("report.table_totals")]
    from_xlsx = totals_of(sheet)
    kwh, m3, gas_kwh = 1680.0 * DAYS, 320.0 * DAYS, 3459.2 * DAYS
    scope1, scope2, units = 691.84 * DAYS, 1045.39 * DAYS, 720.0 * DAYS
    kgce = kwh * 0.1229 + m3 * 1.2143  # GB/T 2589 coefficients of the config (defaults)
    hand = {
        (figure("electricity_import_kwh"), "kWh"): kwh,  # 50400
        (figure("gas_m3"), "m³"): m3,  # 9600
        (figure("gas_kwh"), "kWh"): gas_kwh,  # 103776
        (figure("energy_kwh"), "kWh"): kwh + gas_kwh,  # 154176
        (figure("kgce"), "kgce"): kgce,  # 6194.16 + 11657.28 = 17851.44
        (figure("tce"), "tce"): kgce / 1000,
        (figure("scope1_kg"), "kg"): scope1,  # 20755.2
        (figure("scope2_kg"), "kg"): scope2,  # 31361.7
        (figure("co2_kg"), "kg"): scope1 + scope2,
        (figure("output_units"), ""): units,  # 21600
        (figure("kwh_per_unit"), "kWh"): (kwh + gas_kwh) / units,
        (figure("kgce_per_unit"), "kgce"): kgce / units,
        (figure("kgco2_per_unit"), "kg"): (scope1 + scope2) / units,
        # 50400 kWh over 720 h = 70 kW; the highest quarter hour is 100 kW (8:00-20:00)
        (figure("average_kw"), "kW"): 70.0,
        (figure("peak_kw"), "kW"): 100.0,
        (figure("load_factor"), ""): 0.7,
        # 4 h of main and line-a interpolated, out of 4 devices x 720 h
        (figure("coverage"), "%"): 100 * (1 - 8 / (4 * 720)),
        # 4 h x 40 kW = 160 kWh of 154176
        (figure("interpolated_share"), "%"): 100 * 160 / (kwh + gas_kwh),
        # every hour of every device measured or interpolated: nothing missing
        (figure("missing_share"), "%"): 0.0,
    }
    for key, want in hand.items():
        assert from_csv[key] == approx(round(want, 6)), key
        assert isinstance(from_xlsx[key], float), f"{key}: a number in the XLSX"
        assert from_xlsx[key] == approx(want), key
    # scope 1 + scope 2 = the total, in both files
    co2 = (figure("co2_kg"), "kg")
    s1, s2 = (figure("scope1_kg"), "kg"), (figure("scope2_kg"), "kg")
    assert from_xlsx[co2] == approx(float(from_xlsx[s1]) + float(from_xlsx[s2]))  # type: ignore[arg-type]
    assert from_csv[co2] == approx(from_csv[s1] + from_csv[s2])
    assert from_xlsx[(figure("peak_at"), "")] == "2026-11-01 08:00"


def test_breakdowns_do_not_count_twice(from_jsonl: Path) -> None:
    levels = read_csv(from_jsonl / "report-levels.csv")
    # level 0: main 50400 metered; level 1: line-a 504 x 30 = 15120 metered, and main's
    # unmetered rest 1176 x 30 = 35280; level 1's total is level 0's.
    assert [float(x) for x in levels[1]] == [0, 50400.0, 0.0, 50400.0]
    assert [float(x) for x in levels[2]] == approx_list([1, 15120.0, 35280.0, 50400.0])
    lines = read_csv(from_jsonl / "report-lines.csv")
    assert lines[1][0] == "line-a"
    assert float(lines[1][2]) == approx(15120.0)
    assert float(lines[1][4]) == approx(21600.0)
    assert float(lines[1][5]) == approx(15120.0 / 21600.0)
    products = read_csv(from_jsonl / "report-products.csv")
    # widget lists only the counter: its output, and no energy of its own (not 0 kWh)
    assert products[1] == ["widget", "Widget", "", "", "21600.0", "", ""]
    daily = read_csv(from_jsonl / "report-daily.csv")
    assert len(daily) == 1 + DAYS
    outage = next(r for r in daily if r[0] == "2026-11-10")
    assert float(outage[1]) == approx(1680.0)  # the outage's 4 h are interpolated, not lost
    coverage = read_csv(from_jsonl / "report-coverage.csv")
    main = next(r for r in coverage if r[0] == "main")
    col = coverage[0].index("2026-11-10 (%)")
    assert float(main[col]) == approx(100 * 20 / 24)
    assert float(main[col + 1]) == approx(100.0)


def approx_list(xs: list[float]) -> object:
    return pytest.approx(xs, rel=1e-9, abs=1e-6)


def test_time_of_use_cost_of_two_days_by_hand(cli, month: Month) -> None:
    out = month.tmp / "out-two-days"
    r = run_report(cli, month, out, "--jsonl", str(month.jsonl), period="2026-11-02..2026-11-03")
    assert r.returncode == 0, r
    # November is not summer in example-cn-tou: valley 0-7, flat 8-9, 12-16, 22-23,
    # peak 10-11, 17-21. Per day:
    #   valley 8 h x 40 kW = 320 kWh x 0.3 = 96
    #   flat   2 h x 100 + 5 h x 100 + 2 h x 40 = 780 kWh x 0.6 = 468
    #   peak   2 h x 100 + 3 h x 100 + 2 h x 40 = 580 kWh x 1.0 = 580
    # two days: 2 x 1144 = 2288; demand 100 kW x 12 CNY/kW·month x 2/30 of November = 80
    cost = read_csv(out / "report-cost.csv")
    rows = {r[0]: r for r in cost[1:]}
    assert float(rows[EN("report.band_valley")][1]) == approx(640.0)
    assert float(rows[EN("report.band_valley")][4]) == approx(192.0)
    assert float(rows[EN("report.band_flat")][4]) == approx(936.0)
    assert float(rows[EN("report.band_peak")][4]) == approx(1160.0)
    demand = rows[EN("report.demand_charge", month="2026-11")]
    assert [float(x) for x in demand[1:]] == approx_list([100.0, 12.0, 2 / 30, 80.0])
    assert float(rows[EN("report.total_cost")][4]) == approx(2368.0)
    totals = totals_of(read_csv(out / "report.csv"))
    # cost per unit: 2368 / (2 x 720 units)
    assert float(totals[(figure("cost_per_unit"), "CNY")]) == approx(round(2368 / 1440, 6))


@pytest.fixture(scope="module")
def history(month: Month) -> Path:
    return history_of(
        month.jsonl, month.state_dir, chain_from_ms=MONTH_START_MS,
        until_ms=MONTH_END_MS + 86_400_000,
    )  # fmt: skip


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory, month: Month) -> Iterator[str]:
    import asyncio

    from tests.support.bridge import VictoriaMetrics, have_victoria_metrics

    if not have_victoria_metrics():
        pytest.fail("victoria-metrics is not installed; scripts/test installs it")
    vm = VictoriaMetrics(free_port(), tmp_path_factory.mktemp("vm") / "data", ports=free_port)
    asyncio.run(vm.start())
    try:
        write_victoria(month.jsonl, vm.url)
        yield vm.url
    finally:
        asyncio.run(vm.stop())


FIGURE_FILES = ("report.csv", "report-devices.csv", "report-levels.csv", "report-lines.csv",
                "report-products.csv", "report-daily.csv", "report-hourly.csv",
                "report-coverage.csv", "report-cost.csv")  # fmt: skip


def test_same_report_from_history_json_lines_and_victoria_metrics(
    cli, month: Month, from_jsonl: Path, history: Path, victoria: str
) -> None:
    out_h, out_v = month.tmp / "out-history", month.tmp / "out-vm"
    r = run_report(cli, month, out_h, "--history", str(month.state_dir))
    assert r.returncode == 0, r
    r = run_report(cli, month, out_v, "--influx", victoria)
    assert r.returncode == 0, r
    for name in FIGURE_FILES:
        want = (from_jsonl / name).read_bytes()
        assert (out_h / name).read_bytes() == want, f"history: {name}"
        assert (out_v / name).read_bytes() == want, f"victoria-metrics: {name}"
    # The history has a ledger sealed hour by hour from the month's start: every hour
    # verified. JSON lines from `replay` have none, and say so.
    ver = read_csv(out_h / "report-verification.csv")
    assert len(ver) == 1 + 720
    assert {r[1] for r in ver[1:]} == {EN("report.status_verified")}
    ver = read_csv(from_jsonl / "report-verification.csv")
    assert {r[1] for r in ver[1:]} == {EN("report.status_not_verified")}
    page = (from_jsonl / "report.html").read_text(encoding="utf-8")
    assert html.escape(EN("report.why_no_ledger_in_file")) in page


def test_a_changed_record_breaks_its_hour_only(cli, month: Month, history: Path) -> None:
    import json
    import sqlite3

    state = month.tmp / "state-tampered"
    shutil.copytree(month.state_dir, state)
    # main's interval ending 2026-11-05 10:15 local: 25 kWh becomes 20 in the history.
    ts = MONTH_START_MS + 4 * 86_400_000 + 10 * 3_600_000 + 15 * 60_000
    db = sqlite3.connect(state / "history.db")
    with db:
        (payload,) = db.execute(
            "SELECT payload FROM records WHERE device = 'main' AND ts = ?", (ts,)
        ).fetchone()
        doc = json.loads(payload)
        assert doc["energy_kwh"] == pytest.approx(25.0)
        doc["energy_kwh"] = 20.0
        db.execute(
            "UPDATE records SET payload = ? WHERE device = 'main' AND ts = ?",
            (json.dumps(doc).encode(), ts),
        )
    db.close()
    out = month.tmp / "out-tampered"
    r = run_report(cli, month, out, "--history", str(state))
    assert r.returncode == 0, r
    ver = read_csv(out / "report-verification.csv")
    broken = [row[0] for row in ver[1:] if row[1] == EN("report.status_broken")]
    assert broken == ["2026-11-05 10:00"]
    assert sum(row[1] == EN("report.status_verified") for row in ver[1:]) == 719
    doc = (out / "report.html").read_text(encoding="utf-8")
    assert "record_changed" in doc or "record changed" in doc
    # The figure shows what the history holds, 5 kWh less: the ledger says it is wrong.
    totals = totals_of(read_csv(out / "report.csv"))
    assert float(totals[(figure("electricity_import_kwh"), "kWh")]) == approx(50395.0)


def _report_in_process(month: Month, state: Path, out: Path, *, use_rollup: bool) -> None:
    from agent.config.load import load_config
    from agent.report.build import make_report
    from agent.report.output import write_report
    from agent.report.period import parse_period
    from agent.report.sources import HistorySource

    config = load_config(month.config, files=False)
    prefix = config.mqtt.prefix if config.mqtt is not None else "energy/v1"
    source = HistorySource(state, prefix=prefix, use_rollup=use_rollup)
    try:
        period = parse_period("2026-11", config.site.timezone)
        rep = make_report(config, source, period, config_file=month.config, now_ms=0)
    finally:
        source.close()
    write_report(rep, out, "en")


def test_the_rollup_and_the_records_give_the_same_figure_files(month: Month, history: Path) -> None:
    import sqlite3

    from agent.history import rollup

    db = sqlite3.connect(f"file:{history}?mode=ro", uri=True)
    # 900 s records: 30 days x 96 quarters x 4 devices (main, line-a, boiler, counter),
    # the outage's interpolated; a row a record, as the month's records
    q = (MONTH_START_MS // 900_000, MONTH_END_MS // 900_000)
    n = "SELECT COUNT(*) FROM {} WHERE {} >= ? AND {} < ?"
    assert db.execute(n.format("rollup", "bq", "bq"), q).fetchone()[0] == 30 * 96 * 4
    assert (
        db.execute(
            n.format("records", "ts - 1", "ts - 1") + " AND kind = 'energy'",
            (MONTH_START_MS, MONTH_END_MS),
        ).fetchone()[0]
        == 30 * 96 * 4
    )
    assert rollup.readable(db, MONTH_START_MS, MONTH_END_MS)
    db.close()
    out_r, out_q = month.tmp / "out-records", month.tmp / "out-rollup"
    _report_in_process(month, month.state_dir, out_r, use_rollup=False)
    _report_in_process(month, month.state_dir, out_q, use_rollup=True)
    for name in (*FIGURE_FILES, "report-verification.csv"):
        assert (out_q / name).read_bytes() == (out_r / name).read_bytes(), name


def test_an_edited_rollup_never_changes_a_verified_figure(cli, month: Month, history: Path) -> None:
    import sqlite3

    state = month.tmp / "state-rollup-edited"
    shutil.copytree(month.state_dir, state)
    # main's quarter hour 2026-11-05 10:00-10:15 local: 25 kWh in the records, 30 in the rollup.
    bq = (MONTH_START_MS + 4 * 86_400_000 + 10 * 3_600_000) // 900_000
    db = sqlite3.connect(state / "history.db")
    with db:
        n = db.execute(
            "UPDATE rollup SET kwh = kwh + 5 WHERE device = 'main' AND bq = ?", (bq,)
        ).rowcount
        assert n == 1
    db.close()
    out = month.tmp / "out-rollup-edited"
    r = run_report(cli, month, out, "--history", str(state))
    assert r.returncode == 0, r
    # The ledger vouches for the records: every hour verified, the figure the records' sum,
    # and the report says the rollup differs.
    ver = read_csv(out / "report-verification.csv")
    assert {row[1] for row in ver[1:]} == {EN("report.status_verified")}
    totals = totals_of(read_csv(out / "report.csv"))
    assert float(totals[(figure("electricity_import_kwh"), "kWh")]) == approx(50400.0)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "rollup differs from its records in 1 quarter hours" in page
    # Without the gateway's keys nothing is verified, and the rollup is what is read.
    (state / "ledger-keys.pub").unlink()
    out = month.tmp / "out-rollup-unverified"
    r = run_report(cli, month, out, "--history", str(state))
    assert r.returncode == 0, r
    totals = totals_of(read_csv(out / "report.csv"))
    assert float(totals[(figure("electricity_import_kwh"), "kWh")]) == approx(50405.0)


@pytest.mark.parametrize(
    ("source", "period", "code", "words"),
    [
        ("jsonl", "2026-09", 3, "no energy record in 2026-09"),
        ("history", "2020-01", 3, "ends before the history starts"),
        ("store-down", "2026-11", 1, "cannot read the source"),
        ("jsonl", "2026-13", 2, "month 13 is not 1..12"),
        ("jsonl", "November", 2, "2026-W47 (an ISO week)"),
        ("missing-file", "2026-11", 2, "no such file"),
        ("flux-incomplete", "2026-11", 2, "--bucket (InfluxDB 2) needs --org and --token-file"),
        ("flux-down", "2026-11", 1, "cannot read the source: InfluxDB"),
    ],
)
def test_bad_input_is_a_message_and_an_exit_code(
    cli, month: Month, history: Path, source: str, period: str, code: int, words: str
) -> None:
    args = {
        "jsonl": ["--jsonl", str(month.jsonl)],
        "history": ["--history", str(month.state_dir)],
        "store-down": ["--influx", f"http://127.0.0.1:{free_port()}"],
        "missing-file": ["--jsonl", str(month.tmp / "nothing.jsonl")],
        "flux-incomplete": ["--influx", "http://127.0.0.1:1", "--bucket", "energy"],
        "flux-down": [
            "--influx", f"http://127.0.0.1:{free_port()}", "--bucket", "energy",
            "--org", "plant", "--token-file", str(month.config),
        ],
    }[source]  # fmt: skip
    r = run_report(cli, month, month.tmp / f"out-bad-{source}", *args, period=period)
    assert r.returncode == code, r
    assert words in r.stderr, r
    assert "Traceback" not in r.stderr, r


def _open_in_chromium(report_html: Path, shot: Path) -> dict[str, object]:
    """Load the file in headless chromium with every request that is not the file itself
    refused and counted; a full-page screenshot to ``shot``."""
    from playwright.sync_api import sync_playwright

    off_machine: list[str] = []

    def route(r: object) -> None:
        url = r.request.url  # type: ignore[attr-defined]
        if url.startswith(("file://", "data:")):
            r.continue_()  # type: ignore[attr-defined]
        else:
            off_machine.append(url)
            r.abort()  # type: ignore[attr-defined]

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1200})
            page.route("**/*", route)
            page.goto(report_html.as_uri())
            page.screenshot(path=str(shot), full_page=True)
            found = page.evaluate(
                """() => ({
                  charts: document.querySelectorAll('svg.chart').length,
                  bars: document.querySelectorAll('svg.chart rect').length,
                  tables: document.querySelectorAll('table').length,
                  title: document.querySelector('h1').textContent,
                  cjk: document.fonts.check('16px "Noto Sans CJK SC"', '能源'),
                  width: (() => { const s = document.createElement('span');
                    s.textContent = '能源能源能源能源'; document.body.appendChild(s);
                    const w = s.getBoundingClientRect().width; s.remove(); return w; })(),
                })"""
            )
            pdf = page.pdf(format="A4")
        finally:
            browser.close()
    return {**found, "off_machine": off_machine, "pdf_bytes": len(pdf)}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_html_renders_in_chromium_offline_and_small(cli, month: Month, lang: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; scripts/test installs it")
    out = month.tmp / f"out-html-{lang}"
    r = run_report(cli, month, out, "--jsonl", str(month.jsonl), lang=lang)
    assert r.returncode == 0, r
    report_html = out / "report.html"
    assert report_html.stat().st_size < 1_000_000
    text = report_html.read_text(encoding="utf-8")
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "<script" not in text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{lang}.png"
    found = _open_in_chromium(report_html, shot)
    assert found["off_machine"] == []
    assert found["charts"] == 4  # daily bars, daily profile, coverage, verification
    assert int(found["bars"]) > 4 * 30  # type: ignore[call-overload]
    assert found["tables"] >= 6  # type: ignore[operator]
    assert int(found["pdf_bytes"]) > 10_000  # type: ignore[call-overload]
    if lang == "zh-CN":
        assert str(found["title"]).startswith("能源与碳排放报告")
        # A CJK font is there and takes the characters: 8 of them at 10pt are wide glyphs
        # (about 13 px each), not a fallback's empty boxes of another width.
        assert found["cjk"] is True
        assert 90 < float(found["width"]) < 140  # type: ignore[arg-type]


def test_baseline_period_and_progress_toward_the_targets(cli, month: Month) -> None:
    extra = (
        '  baseline: {label: "first week", period: "2026-11-01..2026-11-07", value_added: 100}\n'
        '  value_added: {"2026-11-15..2026-11-21": 120}\n'
    )
    config = report_month.config(month.tmp / "baseline.yaml", month.state_dir, extra)
    out = month.tmp / "out-baseline"
    r = cli.run(
        "report", "--period", "2026-11-15..2026-11-21", "-c", str(config),
        "--jsonl", str(month.jsonl), "--out", str(out), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r
    # Both weeks use the same energy (7 x (1680 x 0.1229 + 320 x 1.2143) kgce) and CO2;
    # per value added the week of the 15th has 120 against 100: 100/120 - 1 = -16.7 %.
    # Energy: on track for -13.5 %. CO2: behind -18 % by 18 - 16.67 = 1.3 points.
    kgce_week = 7 * (1680 * 0.1229 + 320 * 1.2143)
    base = read_csv(out / "report-baseline.csv")
    rows = {r[0]: r for r in base[1:]}
    tce = rows[EN("report.total_tce")]
    assert float(tce[1]) == approx(round(kgce_week / 1000, 6))
    assert float(tce[2]) == approx(round(kgce_week / 1000, 6))
    energy = rows[EN("report.intensity_energy_value_added")]
    assert float(energy[1]) == approx(round(kgce_week / 1000 / 100, 6))
    assert float(energy[2]) == approx(round(kgce_week / 1000 / 120, 6))
    doc = (out / "report.html").read_text(encoding="utf-8")
    what_e, what_c = EN("report.metric_energy"), EN("report.metric_co2")
    assert html.escape(EN("report.on_track", what=what_e, change="-16.7", target="13.5")) in doc
    behind = EN("report.behind", what=what_c, behind="1.3", change="-16.7", target="18.0")
    assert html.escape(behind) in doc


def test_a_year_by_month(cli, month: Month) -> None:
    out = month.tmp / "out-year"
    r = run_report(cli, month, out, "--jsonl", str(month.jsonl), period="2026", lang="zh-CN")
    assert r.returncode == 0, r
    monthly = read_csv(out / "report-monthly.csv")
    assert [row[0] for row in monthly[1:]] == [f"2026-{m:02d}" for m in range(1, 13)]
    nov = monthly[11]
    assert float(nov[1]) == approx(50400.0)
    assert float(nov[6]) == approx(21600.0)
    assert float(monthly[1][1]) == 0.0  # February: no record
    totals = totals_of(read_csv(out / "report.csv"))
    zh = Translator("zh-CN")
    total = float(totals[(zh("report.total_electricity_import_kwh"), "kWh")])
    assert sum(float(row[1]) for row in monthly[1:]) == approx(total)
    assert len(read_csv(out / "report-daily.csv")) == 1 + 365
    assert (out / "report.html").stat().st_size < 1_000_000


def test_due_reports_go_to_the_state_dir_once(cli, month: Month, history: Path) -> None:
    import os

    state = month.tmp / "state-due"
    shutil.copytree(month.state_dir, state)
    extra = "  schedule: [day, month]\n  lang: zh-CN\n"
    config = report_month.config(month.tmp / "due.yaml", state, extra)
    now = MONTH_END_MS + 30 * 60_000  # 2026-12-01 00:30 local
    r = cli.run("report", "--due", "-c", str(config), "--now-ms", str(now), timeout=300)
    assert r.returncode == 0, r
    reports = state / "reports"
    # October holds the hour from 23:00 on the 31st; November the month; each of the last
    # seven days (24-30 November) its own.
    assert sorted(p.name for p in reports.iterdir()) == [
        "2026-10", "2026-11", *(f"2026-11-{d}" for d in range(24, 31))
    ]  # fmt: skip
    zh = Translator("zh-CN")
    key = (zh("report.total_electricity_import_kwh"), "kWh")
    assert float(totals_of(read_csv(reports / "2026-11" / "report.csv"))[key]) == approx(50400.0)
    assert float(totals_of(read_csv(reports / "2026-11-30" / "report.csv"))[key]) == approx(1680.0)
    # A second run leaves what is written alone.
    stamp = os.stat(reports / "2026-11" / "report.html").st_mtime_ns
    r = cli.run("report", "--due", "-c", str(config), "--now-ms", str(now), timeout=300)
    assert r.returncode == 0, r
    assert os.stat(reports / "2026-11" / "report.html").st_mtime_ns == stamp


def test_an_export_with_its_public_key_is_verified_hour_by_hour(
    cli, month: Month, history: Path
) -> None:
    export = month.tmp / "november.jsonl"
    r = cli.run(
        "history", "export", "-c", str(month.config), "--from", "2026-11-01",
        "--to", "2026-12-01", "--out", str(export), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r
    r = cli.run("keys", "export", "-c", str(month.config))
    assert r.returncode == 0, r
    key = month.tmp / "gw-01.pub"
    key.write_text(r.stdout, encoding="utf-8")
    out = month.tmp / "out-export"
    r = run_report(cli, month, out, "--jsonl", str(export), "--public-key", str(key))
    assert r.returncode == 0, r
    ver = read_csv(out / "report-verification.csv")
    assert {row[1] for row in ver[1:]} == {EN("report.status_verified")}
    totals = totals_of(read_csv(out / "report.csv"))
    assert float(totals[(figure("electricity_import_kwh"), "kWh")]) == approx(50400.0)
    # Without the key the same file's hours are not verified, and the report says why.
    out = month.tmp / "out-export-nokey"
    r = run_report(cli, month, out, "--jsonl", str(export))
    assert r.returncode == 0, r
    ver = read_csv(out / "report-verification.csv")
    assert {row[1] for row in ver[1:]} == {EN("report.status_not_verified")}
    page = (out / "report.html").read_text(encoding="utf-8")
    assert html.escape(EN("report.why_no_public_key")) in page


def test_the_bridges_verdicts_from_the_store_hour_by_hour(
    cli, month: Month, history: Path, victoria: str
) -> None:
    from tests.support.report_sources import write_verdicts

    # The bridge found the entry of 2026-11-05 09:00-10:00 local wrong; all others right.
    failed_end = MONTH_START_MS + 4 * 86_400_000 + 10 * 3_600_000
    assert write_verdicts(month.state_dir, victoria, failed_end_ms=failed_end) > 720
    out = month.tmp / "out-vm-verdicts"
    r = run_report(cli, month, out, "--influx", victoria)
    assert r.returncode == 0, r
    ver = read_csv(out / "report-verification.csv")
    broken = [row[0] for row in ver[1:] if row[1] == EN("report.status_broken")]
    assert broken == ["2026-11-05 09:00"]
    assert sum(row[1] == EN("report.status_verified") for row in ver[1:]) == 719


def test_the_central_side_reports_every_gateway_of_a_folder(
    cli, month: Month, victoria: str
) -> None:
    folder = month.tmp / "configs"
    folder.mkdir()
    text = month.config.read_text(encoding="utf-8")
    (folder / "plant-a-gw-01.yaml").write_text(text, encoding="utf-8")
    (folder / "plant-a-gw-02.yaml").write_text(
        text.replace("gateway: {id: gw-01}", "gateway: {id: gw-02}"), encoding="utf-8"
    )
    out = month.tmp / "out-central"
    r = cli.run(
        "report", "--period", "2026-11", "--configs", str(folder), "--influx", victoria,
        "--out", str(out), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r
    totals = totals_of(read_csv(out / "plant-a" / "gw-01" / "report.csv"))
    assert float(totals[(figure("electricity_import_kwh"), "kWh")]) == approx(50400.0)
    assert not (out / "plant-a" / "gw-02").exists()  # no record of gw-02 in the store
    assert "no energy record in 2026-11" in r.stderr and "gw-02" in r.stderr
