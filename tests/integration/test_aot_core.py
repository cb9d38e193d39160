"""The core compiled ahead of time (``python -m agent.core.aot``): numba's numbers, no numba.

The module is built into a temporary directory and loaded, in a subprocess where
``import numba`` fails (as on a gateway where it is not installed), under the
name the agent imports it by. Then:

* the core's unit tests (kernel against reference, worked examples, accuracy,
  the golden replay cases, the site, the live page's state, the ledger's golden
  vector) pass on the compiled kernels, and the process never imported numba or
  llvmlite;
* ``energy-agent replay`` prints the same bytes as with numba's JIT.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.jit import ENV
from tests.support.cli import ROOT, Cli, env_with
from tests.support.core_backends import CORE_TESTS, build_compiled, hide_numba

pytestmark = pytest.mark.integration

CASES = ROOT / "tests" / "cases"
#: Loads the compiled module given as the first argument as agent.core._kernel_aot, then
#: runs the rest of the command line: pytest, or the CLI.
PRELOAD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("agent.core._kernel_aot", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["agent.core._kernel_aot"] = module
what, args = sys.argv[2], sys.argv[3:]
if what == "pytest":
    import pytest
    rc = int(pytest.main(["-q", "-p", "no:cacheprovider", *args]))
else:
    from agent.cli.main import main
    rc = main(args)
from agent.core import kernel
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"numba", "llvmlite"})
print(f"JIT {kernel.JIT.backend} | loaded: {loaded}", file=sys.stderr)
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_compiled(tmp_path_factory.mktemp("aot"))


@pytest.fixture(scope="module")
def no_numba(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """``import numba`` fails, as where it is not installed (see test_without_numba)."""
    root = hide_numba(tmp_path_factory.mktemp("no-numba"))
    return {"PYTHONPATH": str(root), ENV: "aot", "NUMBA_DISABLE_JIT": None}


def _run(
    compiled: Path, env: dict[str, str | None], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELOAD, str(compiled), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with(env),
        cwd=ROOT,
        check=False,
    )


def test_the_core_test_suite_passes_on_the_compiled_kernels_without_numba(
    compiled: Path, no_numba: dict[str, str | None]
) -> None:
    proc = _run(compiled, no_numba, "pytest", *CORE_TESTS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = [line for line in proc.stdout.splitlines() if " passed" in line]
    assert summary and not any(w in summary[-1] for w in ("failed", "error", "skipped"))
    assert int(summary[-1].split(" passed")[0].split()[-1]) > 100, summary
    assert proc.stderr.splitlines()[-1] == "JIT aot | loaded: []", proc.stderr[-500:]


@pytest.mark.parametrize("case", ["replay-all-topics", "replay-dst-fall"])
def test_replay_prints_numbas_bytes(
    cli: Cli, compiled: Path, no_numba: dict[str, str | None], case: str
) -> None:
    args = ("replay", "-c", str(CASES / case / "config.yaml"), str(CASES / case / "readings.csv"))
    jitted = cli.run(*args, env={ENV: "jit", "NUMBA_DISABLE_JIT": None})
    assert jitted.returncode == 0, jitted
    assert jitted.stdout.count("\n") > 5
    aot = _run(compiled, no_numba, "cli", *args)
    assert aot.returncode == 0, aot.stderr
    assert aot.stdout == jitted.stdout
    *said, last = aot.stderr.splitlines()
    assert last == "JIT aot | loaded: []" and said == jitted.stderr.splitlines(), aot.stderr
