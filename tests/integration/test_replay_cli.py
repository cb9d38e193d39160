"""`energy-agent replay` as users run it: a real subprocess, its stdout, stderr and exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "cases"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One state_dir for the module: the numba cache is compiled once, then reused."""
    yield tmp_path_factory.mktemp("replay-state")


def _case_config(case: str, tmp: Path, state_dir: Path) -> Path:
    """The golden case's config with a state_dir of the test's (never /var/lib)."""
    text = (CASES / case / "config.yaml").read_text(encoding="utf-8")
    p = tmp / f"{case}.yaml"
    p.write_text(text + f"state_dir: {state_dir}\n", encoding="utf-8")
    return p


def _expected(case: str) -> list[dict[str, object]]:
    text = (CASES / case / "expected.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _ok(result) -> None:
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr, str(result)


def _usage_error(result, *needles: str) -> None:
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.stdout + result.stderr, str(result)
    assert result.stdout == "", str(result)
    for n in needles:
        assert n in result.stderr, str(result)


def test_prints_json_lines(cli, tmp_path: Path, state_dir: Path) -> None:
    config = _case_config("replay-single-meter", tmp_path, state_dir)
    csv = CASES / "replay-single-meter" / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(config), "--topics", "energy")
    _ok(result)
    # the summary, always (not a terminal: without the time taken)
    assert result.stderr == (
        "replay: 106 rows read from 1 file: 106 used, 0 skipped; "
        "2024-01-01T00:02:30.000Z .. 2024-01-01T00:20:00.000Z; written: 4 energy\n"
    )
    assert cli.run("replay", str(csv), "-c", str(config), "--quiet").stderr == ""
    assert result.stdout.endswith("\n")
    lines = result.stdout.splitlines()
    assert [json.loads(line) for line in lines] == _expected("replay-single-meter")
    # compact JSON, one object per line
    assert all(line.startswith('{"topic":"energy/v1/plant-a/gw-01/') for line in lines)


def test_all_topics_by_default(cli, tmp_path: Path, state_dir: Path) -> None:
    config = _case_config("replay-all-topics", tmp_path, state_dir)
    csv = CASES / "replay-all-topics" / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(config))
    _ok(result)
    assert [json.loads(x) for x in result.stdout.splitlines()] == _expected("replay-all-topics")


def test_bad_rows_reported_and_skipped(cli, tmp_path: Path, state_dir: Path) -> None:
    config = _case_config("replay-bad-rows", tmp_path, state_dir)
    csv = CASES / "replay-bad-rows" / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(config), "--topics", "energy")
    _ok(result)
    assert [json.loads(x) for x in result.stdout.splitlines()] == _expected("replay-bad-rows")
    bad = (CASES / "replay-bad-rows" / "expected.bad").read_text(encoding="utf-8").splitlines()
    # 72 data lines: 61 good readings + 1 "not available" + 10 bad
    assert result.stderr.splitlines() == [
        *(f"{csv}: {b} — skipped" for b in bad),
        "replay: 72 rows read from 1 file: 62 used, 10 skipped (3 value not a number, "
        "2 unreadable ts, 1 unknown device, 1 unknown quantity, "
        "1 quantity not of its device, 1 wrong number of fields, 1 duplicate); "
        "2024-01-01T00:00:00.000Z .. 2024-01-01T00:10:00.000Z; written: 2 energy",
    ]


def test_missing_file(cli, tmp_path: Path, state_dir: Path) -> None:
    config = _case_config("replay-single-meter", tmp_path, state_dir)
    missing = tmp_path / "nope.csv"
    result = cli.run("replay", str(missing), "-c", str(config))
    _usage_error(result, f"cannot read {missing}: No such file or directory")


def test_wrong_header(cli, tmp_path: Path, state_dir: Path) -> None:
    config = _case_config("replay-bad-header", tmp_path, state_dir)
    csv = CASES / "replay-bad-header" / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(config))
    expected = (CASES / "replay-bad-header" / "expected.err").read_text(encoding="utf-8").strip()
    _usage_error(result, expected.replace("readings.csv", str(csv), 1))


def test_not_utf8(cli, tmp_path: Path, state_dir: Path) -> None:
    config = _case_config("replay-single-meter", tmp_path, state_dir)
    csv = tmp_path / "gbk.csv"
    csv.write_bytes(
        b"ts,device,quantity,value\n" + "1704067200000,\u538b\u673a,x,1\n".encode("gbk")
    )
    result = cli.run("replay", str(csv), "-c", str(config))
    _usage_error(result, "is not UTF-8 text")


@pytest.mark.parametrize("topics", ["energy,power", "", "measurement"])
def test_unknown_topics(cli, tmp_path: Path, state_dir: Path, topics: str) -> None:
    config = _case_config("replay-single-meter", tmp_path, state_dir)
    csv = CASES / "replay-single-meter" / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(config), "--topics", topics)
    _usage_error(result, "--topics")


def test_missing_config(cli, tmp_path: Path) -> None:
    csv = CASES / "replay-single-meter" / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(tmp_path / "none.yaml"))
    _usage_error(result, "cannot read the config file")


# --- timestamps --------------------------------------------------------------------------

SHANGHAI = timezone(timedelta(hours=8))
CONFIG_SH = """\
site: {{id: plant-a, timezone: Asia/Shanghai}}
gateway: {{id: gw-01}}
carbon:
  electricity: {{kg_per_kwh: 0.5}}
buses:
  - {{id: bus-1, tcp: {{host: 127.0.0.1, port: 502}}}}
devices:
  - {{id: m1, bus: bus-1, unit: 1, interval_s: 10,
     registers: [{{quantity: energy_import_kwh, table: input, address: 0, type: float64}}]}}
publish: {{energy_interval_s: 300}}
state_dir: {state_dir}
"""


def test_iso_timestamps_equal_unix_ms(cli, tmp_path: Path, state_dir: Path) -> None:
    """The same readings as Unix ms, ISO with offset (+08:00 and Z), and naive ISO
    (read in the site's zone, Asia/Shanghai) print exactly the same lines."""
    config = tmp_path / "sh.yaml"
    config.write_text(CONFIG_SH.format(state_dir=state_dir), encoding="utf-8")
    # 2024-01-15 07:58:00 .. 08:12:00 local (+08:00), every 10 s, +0.1 kWh each
    start = datetime(2024, 1, 15, 7, 58, tzinfo=SHANGHAI)
    times = [start + timedelta(seconds=10 * k) for k in range(85)]
    forms = {
        "ms": lambda t: str(int(t.timestamp() * 1000)),
        "offset": lambda t: t.isoformat(),  # 2024-01-15T07:58:00+08:00
        "utc": lambda t: t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "naive": lambda t: t.replace(tzinfo=None).isoformat(),  # site local
        "naive-space": lambda t: t.replace(tzinfo=None).isoformat(sep=" "),
    }
    outputs = {}
    for name, fmt in forms.items():
        csv = tmp_path / f"{name}.csv"
        csv.write_text(
            "ts,device,quantity,value\n"
            + "".join(
                f"{fmt(t)},m1,energy_import_kwh,{100 + 0.1 * k:.1f}\n" for k, t in enumerate(times)
            ),
            encoding="utf-8",
        )
        result = cli.run(
            "replay", str(csv), "-c", str(config), "--topics", "energy,intensity", "--quiet"
        )
        _ok(result)
        assert result.stderr == ""
        outputs[name] = result.stdout
    assert forms["offset"](times[0]) == "2024-01-15T07:58:00+08:00"
    assert forms["naive"](times[0]) == "2024-01-15T07:58:00"
    for name, out in outputs.items():
        assert out == outputs["ms"], name
    # and the numbers are the ones of 08:00 local: intervals end at 08:00, 08:05, 08:10
    # local = 00:00, 00:05, 00:10 UTC; 08:00 closes the partial one from 07:58 (1.2 kWh)
    energy = [
        json.loads(x)["payload"]
        for x in outputs["ms"].splitlines()
        if json.loads(x)["topic"].endswith("/energy")
    ]
    utc0 = int(datetime(2024, 1, 15, tzinfo=UTC).timestamp() * 1000)
    assert [(p["ts"], p["energy_kwh"], p["quality"]) for p in energy] == [
        (utc0, 1.2, "partial"),
        (utc0 + 300_000, 3.0, "measured"),
        (utc0 + 600_000, 3.0, "measured"),
    ]


# --- events, the summary and exit code 3 --------------------------------------------------


def test_events_and_energy_of_a_glitch_without_a_limit(
    cli, tmp_path: Path, state_dir: Path
) -> None:
    """A garbage 0 and a value 10^6 kWh too high, no max_power_kw: two `glitch` events,
    exact energy (tests/cases/replay-glitch-default-limit/config.yaml has the arithmetic)."""
    case = "replay-glitch-default-limit"
    config = _case_config(case, tmp_path, state_dir)
    csv = CASES / case / "readings.csv"
    result = cli.run("replay", str(csv), "-c", str(config), "--topics", "energy,events")
    _ok(result)
    assert [json.loads(x) for x in result.stdout.splitlines()] == _expected(case)
    assert result.stderr.splitlines() == [
        "replay: 91 rows read from 1 file: 91 used, 0 skipped; "
        "2024-01-01T00:00:00.000Z .. 2024-01-01T00:15:00.000Z; written: 3 energy, 2 events"
    ]


CONFIG_SDM = """\
site: {{id: plant-a, timezone: UTC}}
gateway: {{id: gw-01}}
buses:
  - {{id: bus-1, tcp: {{host: 127.0.0.1, port: 502}}}}
devices:
  - {{id: m1, bus: bus-1, unit: 1, interval_s: 10, profile: eastron-sdm630}}
publish: {{energy_interval_s: 300}}
state_dir: {state_dir}
"""
T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def _rows(quantity: str, n: int, *, device: str = "m1", step_ms: int = 10_000) -> str:
    """``n`` readings from T0 at ``step_ms``: a counter climbing 0.1 kWh, or 36 kW."""
    return "ts,device,quantity,value\n" + "".join(
        f"{T0_MS + k * step_ms},{device},{quantity},"
        f"{100 + 0.1 * k if quantity == 'energy_import_kwh' else 36.0:.1f}\n"
        for k in range(n)
    )


@pytest.mark.parametrize(
    ("text", "topics", "cause"),
    [
        (
            _rows("active_power_kw", 121),
            "energy",
            "no energy record was produced: no row carries a quantity the core counts: 'm1' "
            "is counted by energy_import_kwh, the input has active_power_kw; a counter "
            "profile fed only power rows: give the counter's rows too, or describe the meter "
            "by inline registers holding only active_power_kw (the core then integrates the "
            "power)",
        ),
        (
            _rows("energy_import_kwh", 121, device="m2"),
            "energy,intensity",
            "no energy or intensity record was produced: no row matched a device and "
            "quantity of the config (see the rows listed above): use the config's device "
            "ids and their profiles' quantity names (`energy-agent profiles ID` lists them)",
        ),
        (
            # microseconds: each ts read as milliseconds would be the year 55969
            _rows("energy_import_kwh", 121).replace("0000,m1", "0000000,m1"),
            "energy",
            "no energy record was produced: no row's ts could be read: give Unix "
            "milliseconds, seconds or ISO 8601",
        ),
        (
            # two minutes of readings, 5-minute intervals: measurements but no record
            _rows("energy_import_kwh", 13),
            "measurements,energy,intensity,events",
            "no energy or intensity record was produced: the readings span only 2 min "
            "(2024-01-01T00:00:00.000Z .. 2024-01-01T00:02:00.000Z): no interval closed; a "
            "record needs readings up to its interval's end (publish.energy_interval_s is "
            "300 s)",
        ),
        (
            "ts,device,quantity,value\n",
            "energy",
            "no energy record was produced: the input has no rows of readings",
        ),
        (
            # ISO times of 1970: seconds taken for milliseconds somewhere upstream
            "ts,device,quantity,value\n"
            + "".join(f"1970-01-20T17:00:{k:02d}Z,m1,energy_import_kwh,{k}\n" for k in range(9)),
            "energy",
            "no energy record was produced: the readings' timestamps lie in 1970..1973 "
            "(1970-01-20T17:00:00.000Z .. 1970-01-20T17:00:08.000Z): Unix seconds read as "
            "milliseconds? give the ts column in Unix milliseconds, seconds or ISO 8601 with "
            "its offset",
        ),
    ],
    ids=["power-rows-only", "unknown-device", "microseconds", "too-short", "empty", "1970"],
)
def test_no_record_exits_3_and_says_why(
    cli, tmp_path: Path, state_dir: Path, text: str, topics: str, cause: str
) -> None:
    config = tmp_path / "sdm.yaml"
    config.write_text(CONFIG_SDM.format(state_dir=state_dir), encoding="utf-8")
    csv = tmp_path / "readings.csv"
    csv.write_text(text, encoding="utf-8")
    result = cli.run("replay", str(csv), "-c", str(config), "--topics", topics)
    assert result.returncode == 3, str(result)
    assert "Traceback" not in result.stderr, str(result)
    *_, summary, last = result.stderr.splitlines()
    assert summary.startswith("replay: "), str(result)
    assert last == f"energy-agent replay: {cause}", str(result)
    if topics.startswith("measurements"):
        assert len(result.stdout.splitlines()) == 13  # one per reading, no record
    else:
        assert result.stdout == ""
    # --quiet keeps the reason
    quiet = cli.run("replay", str(csv), "-c", str(config), "--topics", topics, "--quiet")
    assert quiet.returncode == 3 and quiet.stderr.splitlines()[-1] == last


def test_unix_seconds_are_read_as_such_and_said(cli, tmp_path: Path, state_dir: Path) -> None:
    config = tmp_path / "sdm.yaml"
    config.write_text(CONFIG_SDM.format(state_dir=state_dir), encoding="utf-8")
    csv = tmp_path / "seconds.csv"
    csv.write_text(_rows("energy_import_kwh", 91).replace("000,m1", ",m1"), encoding="utf-8")
    result = cli.run("replay", str(csv), "-c", str(config), "--topics", "energy")
    _ok(result)
    assert [json.loads(x)["payload"]["energy_kwh"] for x in result.stdout.splitlines()] == [
        3.0,
        3.0,
        3.0,
    ]
    assert result.stderr.splitlines() == [
        f"note: {csv}: ts read as Unix seconds",
        "replay: 91 rows read from 1 file: 91 used, 0 skipped; "
        "2024-01-01T00:00:00.000Z .. 2024-01-01T00:15:00.000Z; written: 3 energy",
    ]
