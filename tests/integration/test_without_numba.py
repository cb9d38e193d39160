"""A gateway where numba cannot run (32-bit ARM has no wheels): same numbers, a warning.

numba is made unimportable for a subprocess the way it is on such a gateway: a
directory first on its PYTHONPATH holds a ``numba`` package whose import raises
ImportError. Then:

* the core's unit tests (kernel against reference, the worked examples, the
  accuracy check, the golden replay cases, the site, the live page's state) pass
  with ``ENERGY_AGENT_NUMBA=off`` and numba unimportable, and the process reports
  that its kernels ran as Python;
* ``energy-agent replay`` prints the same bytes as with numba, whichever way numba
  is out of the picture (unimportable, ``ENERGY_AGENT_NUMBA=off``,
  ``NUMBA_DISABLE_JIT=1``, or a sandbox where memory may not become executable,
  as under systemd's ``MemoryDenyWriteExecute=yes``), and says why on stderr;
* ``energy-agent demo`` runs, warns once with the reason, and its /api/state and
  ``energy-agent status`` say that the core runs without numba.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.core.jit import ENV
from tests.support.cli import ROOT, Cli, cli_command, env_with, free_port
from tests.support.core_backends import CORE_TESTS, HIDDEN, hide_numba
from tests.support.mdwe import mdwe_prefix

pytestmark = pytest.mark.integration

CASES = ROOT / "tests" / "cases"
WARNING = "the core runs without numba"

# pytest in the subprocess, then what the kernel module decided in that same process.
RUNNER = """
import sys
import pytest
rc = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])
from agent.core import kernel
print(f"JIT {kernel.JIT.backend} | {kernel.JIT.reason} | numba loaded: {'numba' in sys.modules}")
sys.exit(int(rc))
"""


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Environment changes that make ``import numba`` fail, as where it is not installed."""
    root = hide_numba(tmp_path_factory.mktemp("no-numba"))
    return {"PYTHONPATH": str(root), ENV: None, "NUMBA_DISABLE_JIT": None}


def test_the_core_test_suite_passes_without_numba(hidden: dict[str, str | None]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *CORE_TESTS],
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with({**hidden, ENV: "off"}),
        cwd=ROOT,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    summary = [line for line in out.splitlines() if re.search(r"\d+ passed", line)]
    assert summary and not re.search(r"failed|error|skipped", summary[-1]), summary
    assert int(re.search(r"(\d+) passed", summary[-1])[1]) > 100  # type: ignore[index]
    assert out.splitlines()[-1] == f"JIT python | {ENV}=off | numba loaded: False", out[-500:]


@pytest.mark.parametrize("case", ["replay-all-topics", "replay-dst-fall"])
def test_replay_prints_the_same_bytes_without_numba(
    cli: Cli, hidden: dict[str, str | None], case: str
) -> None:
    args = ("replay", "-c", str(CASES / case / "config.yaml"), str(CASES / case / "readings.csv"))
    with_numba = cli.run(*args, env={ENV: None, "NUMBA_DISABLE_JIT": None})
    assert with_numba.returncode == 0, with_numba
    assert with_numba.stdout.count("\n") > 5 and WARNING not in with_numba.stderr
    ways = {
        f"numba cannot be imported: {HIDDEN}": hidden,
        f"{ENV}=off": {**hidden, ENV: "off"},
        "NUMBA_DISABLE_JIT is set": {ENV: None, "NUMBA_DISABLE_JIT": "1"},
    }
    for reason, env in ways.items():
        without = cli.run(*args, env=env)
        assert without.returncode == 0, without
        assert without.stdout == with_numba.stdout, reason
        assert f"warning: {WARNING} ({reason})" in without.stderr, without
        assert without.stderr.count(WARNING) == 1


def test_replay_falls_back_where_memory_may_not_become_executable(cli: Cli, tmp_path: Path) -> None:
    """numba is installed but LLVM cannot run: the import fails with PermissionError."""
    case = CASES / "replay-all-topics"
    args = ("replay", "-c", str(case / "config.yaml"), str(case / "readings.csv"))
    with_numba = cli.run(*args, env={ENV: None, "NUMBA_DISABLE_JIT": None})
    assert with_numba.returncode == 0, with_numba
    sandboxed = subprocess.run(
        [*mdwe_prefix(tmp_path), *cli_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_with({ENV: None, "NUMBA_DISABLE_JIT": None}),
        cwd=ROOT,
        check=False,
    )
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert sandboxed.stdout == with_numba.stdout
    assert f"{WARNING} (numba cannot be imported: " in sandboxed.stderr
    assert "cannot allocate executable memory" in sandboxed.stderr


def test_a_misspelt_setting_is_a_usage_error(cli: Cli) -> None:
    case = CASES / "replay-single-meter"
    result = cli.run(
        "replay", "-c", str(case / "config.yaml"), str(case / "readings.csv"), env={ENV: "of"}
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert f"{ENV}='of'" in result.stderr and f"{ENV}=off" in result.stderr


def _get_state(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


async def test_demo_without_numba_warns_once_and_shows_it(
    cli: Cli, hidden: dict[str, str | None]
) -> None:
    http_port = free_port()
    env = {**hidden, "DEMO_HTTP_PORT": str(http_port), "DEMO_MQTT_PORT": str(free_port())}
    demo = asyncio.create_task(
        cli.run_async(
            "demo", "--no-rtu", "--broker", "embedded", "--duration", "15", time_limit=90, env=env
        )
    )
    doc = None
    status = None
    try:
        deadline = time.monotonic() + 60
        # until a meter has been polled and fed through the core
        while time.monotonic() < deadline and not demo.done():
            doc = await asyncio.to_thread(_get_state, http_port)
            if doc is not None and any(d["state"] == "ok" for d in doc["devices"]):
                break
            await asyncio.sleep(0.5)
        status = await cli.run_async(
            "status", "--url", f"http://127.0.0.1:{http_port}/", env={"COLUMNS": "200"}
        )
        result = await demo
    finally:
        if not demo.done():
            demo.cancel()
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr, result
    assert f"core: python (numba cannot be imported: {HIDDEN})" in result.stdout, result
    assert result.stderr.count(WARNING) == 1, result
    assert f"{WARNING} (numba cannot be imported: {HIDDEN})" in result.stderr
    assert "pip install numba" in result.stderr
    assert doc is not None and any(d["state"] == "ok" for d in doc["devices"]), doc
    assert doc["agent"]["core"] == "python"
    assert status is not None and "core without numba" in status.stdout, status
