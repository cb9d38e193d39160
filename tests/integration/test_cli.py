"""The `energy-agent` command line as users and scripts see it: real subprocesses.

Exit codes are the contract: 0 success, 1 the job ran but a meter failed, 2 the
input is wrong. A user's mistake never shows a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers.profile import ProfileLibrary
from drivers.reader import DeviceReader

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "cases"
LIBRARY = ProfileLibrary()


def _ok(result) -> None:
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr, str(result)


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, str(result)


# --- files only: profiles, schema, check -----------------------------------------------------


def test_profiles_lists_every_builtin_id(cli) -> None:
    # At a terminal's default 80 columns: ids must not be cut or wrapped.
    result = cli.run("profiles", env={"COLUMNS": "80"})
    _ok(result)
    for profile_id in LIBRARY.ids():
        assert re.search(rf"\b{re.escape(profile_id)}\b", result.stdout), profile_id


def test_profiles_json(cli) -> None:
    result = cli.run("profiles", "--json")
    _ok(result)
    profiles = json.loads(result.stdout)
    assert [p["id"] for p in profiles] == LIBRARY.ids()
    for p in profiles:
        assert p["sources"], p["id"]
        assert all(s["title"] and s["trust"] for s in p["sources"]), p["id"]
        assert p["quantities"], p["id"]


def test_profiles_one_shows_registers(cli) -> None:
    result = cli.run("profiles", "eastron-sdm630")
    _ok(result)
    profile = LIBRARY.get("eastron-sdm630")
    for spec in profile.registers:
        assert spec.quantity.value in result.stdout
    assert "0x0048" in result.stdout  # energy_import_kwh, as hex next to decimal
    assert "source" in result.stdout


def test_profiles_unknown_id_suggests(cli) -> None:
    result = cli.run("profiles", "eastron-sdm63O")
    assert result.returncode == 2, str(result)
    assert "did you mean 'eastron-sdm630'" in result.stderr
    _no_traceback(result)


def test_schema(cli) -> None:
    result = cli.run("schema")
    _ok(result)
    schema = json.loads(result.stdout)
    assert {"site", "gateway", "buses", "devices"} <= set(schema["properties"])
    assert {"site", "gateway", "buses", "devices"} <= set(schema["required"])
    assert schema["additionalProperties"] is False  # unknown keys are errors


def test_schema_bridge(cli) -> None:
    result = cli.run("schema", "--bridge")
    _ok(result)
    schema = json.loads(result.stdout)
    assert {"mqtt", "influx", "bridge"} <= set(schema["properties"])


EXAMPLE_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_check_example_configs(cli, config: Path) -> None:
    # --no-files: the certificates and secrets they name are a gateway's, not this machine's
    # (test_config_hostile.py checks that `check` without it lists them)
    result = cli.run("check", "--no-files", "-c", str(config.relative_to(ROOT)))
    _ok(result)
    assert "OK" in result.stdout


def test_check_demo_config_with_its_variables_set(cli, tmp_path: Path) -> None:
    env = {
        "DEMO_LINE_A_PORT": "15020",
        "DEMO_RS485_PORT": str(tmp_path / "rs485"),
        "DEMO_STATE_DIR": str(tmp_path / "state"),
        "DEMO_HTTP_PORT": "18080",
    }
    result = cli.run("check", "-c", "agent/demo/demo.yaml", env=env)
    _ok(result)


def test_check_reports_every_error_and_exits_2(cli) -> None:
    case = CASES / "config-many-errors"
    expected = (case / "expected.err").read_text(encoding="utf-8").splitlines()
    assert len(expected) >= 5
    result = cli.run("check", "-c", "config.yaml", cwd=case, env={"MQTT_HOST": None})
    assert result.returncode == 2, str(result)
    _no_traceback(result)
    assert result.stdout == ""
    *errors, summary = result.stderr.splitlines()
    assert errors == [f"error: {line}" for line in expected], str(result)
    assert summary == f"config.yaml: {len(expected)} problems; nothing was started"


def test_check_refuses_bad_max_inflight_with_line_field_and_fix(cli) -> None:
    case = CASES / "config-max-inflight"
    result = cli.run("check", "--no-files", "-c", "config.yaml", cwd=case)
    assert result.returncode == 2, str(result)
    _no_traceback(result)
    *errors, summary = result.stderr.splitlines()
    assert errors[0] == (
        "error: config.yaml:5: buses[1].max_inflight: max_inflight must be 1..64 (got 0): "
        "1 sends one request at a time; set what the gateway's manual allows, often 4-16 "
        "concurrent requests"
    )
    assert len(errors) == 5 and summary == "config.yaml: 5 problems; nothing was started"


def test_check_warns_where_a_counter_has_only_the_carrier_default(cli) -> None:
    """Exit 0, the OK line, and one warning per device whose glitch limit is its carrier's
    default (the case's config says which and why)."""
    case = CASES / "check-limit-warnings"
    result = cli.run("check", "--no-files", "-c", "config.yaml", cwd=case)
    _ok(result)
    assert result.stdout == (case / "check.stdout").read_text(encoding="utf-8")
    assert result.stderr == (case / "check.stderr").read_text(encoding="utf-8")


def test_check_missing_file(cli, tmp_path: Path) -> None:
    result = cli.run("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2, str(result)
    assert "cannot read the config file" in result.stderr
    _no_traceback(result)


# --- read against `energy-agent simulate` ----------------------------------------------------


@pytest.fixture(scope="module")
def faulty_sim(cli, ports):
    """sdm630s on units 1-4: 1 answers garbage, 2 an exception, 3 nothing, 4 is healthy."""
    port = ports()
    with cli.simulate(
        "--tcp", f"127.0.0.1:{port}", "--profile", "eastron-sdm630", "--units", "1-4",
        "--fault", "1:garbage", "--fault", "2:exception=2", "--fault", "3:timeout",
    ) as banner:  # fmt: skip
        assert "unit 1, 2, 3, 4" in banner
        yield f"127.0.0.1:{port}"


def _read(cli, address: str, unit: int, *extra: str):
    return cli.run(
        "read", "--tcp", address, "--unit", str(unit), "--profile", "eastron-sdm630",
        "--timeout", "0.3", *extra,
    )  # fmt: skip


def test_read_timeout_names_the_unit(cli, faulty_sim) -> None:
    result = _read(cli, faulty_sim, 3)
    assert result.returncode == 1, str(result)
    _no_traceback(result)
    assert "no response" in result.stderr
    assert "unit 3" in result.stderr
    assert "energy-agent scan" in result.stderr  # the hint
    assert result.stdout == ""


def test_read_exception_response(cli, faulty_sim) -> None:
    result = _read(cli, faulty_sim, 2, "--json")
    assert result.returncode == 1, str(result)
    _no_traceback(result)
    assert "exception response 0x02 (illegal data address)" in result.stderr
    assert "unit 2" in result.stderr
    assert result.stdout == ""  # --json prints nothing rather than a partial object


def test_read_garbage_is_a_malformed_response(cli, faulty_sim) -> None:
    result = _read(cli, faulty_sim, 1)
    assert result.returncode == 1, str(result)
    _no_traceback(result)
    first = DeviceReader(LIBRARY.get("eastron-sdm630"), 1).reads[0]
    # one register short: the byte count says so before pymodbus decodes anything
    expected = f"byte count {2 * first.count - 2} for {first.count} registers"
    assert f"{expected} (expected {2 * first.count})" in result.stderr
    assert "unit 1" in result.stderr


def test_read_healthy_unit_next_to_faulty_ones(cli, faulty_sim) -> None:
    result = _read(cli, faulty_sim, 4, "--json")
    _ok(result)
    values = json.loads(result.stdout)
    assert set(values) == {q.value for q in LIBRARY.get("eastron-sdm630").quantities}
    assert 45 < values["frequency_hz"] < 65


def test_read_table_output(cli, faulty_sim) -> None:
    result = _read(cli, faulty_sim, 4)
    _ok(result)
    assert "voltage_l1_v" in result.stdout
    assert "kWh" in result.stdout


# --- bad arguments: exit 2, one clear line, no traceback --------------------------------------


SIMULATE = ["simulate", "--tcp", "127.0.0.1:1", "--profile", "eastron-sdm630"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["read", "--tcp", "nohost", "--profile", "eastron-sdm630"], "'nohost' is not HOST:PORT"),
        (["read", "--tcp", "127.0.0.1:99999", "--profile", "eastron-sdm630"], "HOST:PORT"),
        (
            ["read", "--tcp", "127.0.0.1:502", "--profile", "eastron-sdm63O"],
            "unknown profile 'eastron-sdm63O' — did you mean 'eastron-sdm630'?",
        ),
        (
            ["read", "--rtu-over-tcp", "127.0.0.1", "--profile", "eastron-sdm630"],
            "--rtu-over-tcp: '127.0.0.1' is not HOST:PORT",
        ),
        (["read", "--tcp", "127.0.0.1:502", "--profile", "abb-b23", "--unit", "300"], "0..255"),
        (["read", "--profile", "abb-b23"], "one of the arguments --tcp --rtu --rtu-over-tcp"),
        (["scan", "--tcp", "127.0.0.1:502", "--units", "5-x"], "'5-x' is not a unit id"),
        (["scan", "--tcp", "127.0.0.1:502", "--units", "9-3"], "low to high"),
        (["simulate", "--profile", "eastron-sdm630"], "give an endpoint"),
        ([*SIMULATE, "--fault", "1:boom"], "KIND one of timeout"),
        ([*SIMULATE, "--fault", "9:timeout"], "unit 9 is not simulated"),
        ([*SIMULATE, "--fault", "1:delay"], "delay needs a value"),
        ([*SIMULATE, "--units", "1-2", "--fault", "2:delay=x"], "'x' is not a number"),
        (["check"], "-c/--config"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2(cli, args: list[str], message: str) -> None:
    result = cli.run(*args)
    assert result.returncode == 2, str(result)
    _no_traceback(result)
    assert message in result.stderr, str(result)


def test_read_nobody_listening_exits_1(cli, ports) -> None:
    result = cli.run(
        "read", "--tcp", f"127.0.0.1:{ports()}", "--profile", "eastron-sdm630", "--timeout", "0.3"
    )
    assert result.returncode == 1, str(result)
    _no_traceback(result)
    assert "cannot connect" in result.stderr


def test_python_dash_m_entry_point_handles_errors_too(cli) -> None:
    # `python -m agent.cli.main` runs the module as __main__, a second copy of it;
    # its errors must still be caught (exit 2, no traceback).
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "read", "--tcp", "nohost", "--profile", "abb-b23"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "'nohost' is not HOST:PORT" in proc.stderr


# --- scan, and the agent only ever reads ------------------------------------------------------


async def test_scan_finds_units_and_suggests_their_profiles(simulators, cli) -> None:
    sim = await simulators.start(
        simulators.tcp_endpoint(),
        {1: "eastron-sdm630", 2: "eastron-sdm630", 5: "abb-b23"},
        frozen=False,
    )
    read = await cli.run_async(
        "read", "--tcp", sim.address, "--unit", "5", "--profile", "abb-b23", "--json"
    )
    assert read.returncode == 0, str(read)
    result = await cli.run_async(
        "scan", "--tcp", sim.address, "--units", "1-6", "--json", "--timeout", "0.2"
    )
    _ok(result)
    hits = json.loads(result.stdout)
    assert [h["unit"] for h in hits] == [1, 2, 5], hits
    by_unit = {h["unit"]: h for h in hits}
    assert "eastron-sdm630" in by_unit[1]["profiles"]
    assert "eastron-sdm630" in by_unit[2]["profiles"]
    assert "abb-b23" in by_unit[5]["profiles"]
    # The agent sent read requests only (FC03 holding, FC04 input): never a write.
    codes = set(sim.server.function_codes)
    assert codes, "the simulator saw no requests"
    assert codes <= {3, 4}, sim.server.function_codes


async def test_scan_table_and_nothing_found(simulators, cli) -> None:
    sim = await simulators.start(simulators.tcp_endpoint(), {2: "abb-b23"})
    result = await cli.run_async("scan", "--tcp", sim.address, "--units", "1-3", "--timeout", "0.2")
    _ok(result)
    assert "abb-b23" in result.stdout
    empty = await cli.run_async("scan", "--tcp", sim.address, "--units", "7", "--timeout", "0.2")
    assert empty.returncode == 1, str(empty)
    assert "no unit answered" in empty.stderr
    _no_traceback(empty)


# --- simulate --freeze -----------------------------------------------------------------------


def _read_json(cli, address: str) -> dict[str, float]:
    result = cli.run("read", "--tcp", address, "--profile", "eastron-sdm630", "--json")
    _ok(result)
    values: dict[str, float] = json.loads(result.stdout)
    return values


def test_simulate_freeze_holds_values(cli, ports) -> None:
    address = f"127.0.0.1:{ports()}"
    with cli.simulate("--tcp", address, "--profile", "eastron-sdm630", "--freeze"):
        first = _read_json(cli, address)
        time.sleep(1.0)
        second = _read_json(cli, address)
    assert first == second


def test_simulate_counters_advance_in_real_time(cli, ports) -> None:
    address = f"127.0.0.1:{ports()}"
    with cli.simulate("--tcp", address, "--profile", "eastron-sdm630", "--load-kw", "50"):
        first = _read_json(cli, address)
        time.sleep(1.0)
        second = _read_json(cli, address)
    # ~50 kW for >= 1 s is >= 0.0139 kWh; a float32 near 1000 kWh resolves 6e-5 kWh.
    assert second["energy_import_kwh"] > first["energy_import_kwh"]
    for name in ("energy_export_kwh", "reactive_energy_export_kvarh"):
        assert second[name] >= first[name]  # counters never go down


def test_simulate_stops_cleanly_on_sigterm(cli, ports) -> None:
    address = f"127.0.0.1:{ports()}"
    with cli.simulate("--tcp", address, "--profile", "abb-b23") as banner:
        assert f"tcp://{address}" in banner
    # the fixture sent SIGTERM and waited; a second server can take the port at once
    with cli.simulate("--tcp", address, "--profile", "abb-b23"):
        pass


def test_simulate_port_in_use_exits_2(cli, ports) -> None:
    address = f"127.0.0.1:{ports()}"
    with cli.simulate("--tcp", address, "--profile", "abb-b23"):
        result = cli.run("simulate", "--tcp", address, "--profile", "abb-b23", "--duration", "2")
    assert result.returncode == 2, str(result)
    _no_traceback(result)
    assert "cannot listen" in result.stderr


def test_output_into_a_closed_pipe_is_not_a_traceback(cli) -> None:
    # `energy-agent profiles --json | head -1`: the reader closes before the writer is done.
    proc = subprocess.Popen(
        [*cli.command, "profiles", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err.decode(), err.decode()
    assert proc.returncode == 0
