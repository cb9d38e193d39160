"""The core's backends in tests: its test files, numba hidden, the compiled module.

The compiled module (agent.core.aot) is built into a temporary directory.

Built in a subprocess (``python -m agent.core.aot``, as deploy/install.sh does): the
build imports the kernel with numba's JIT, and the test process may already have
imported it otherwise. Loaded under its own name, ``agent.core._kernel_aot``, so a
kernel imported afterwards finds it as it finds the one built next to kernel.py.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent.core import jit, kernel
from agent.core.jit import AOT_MODULE, ENV, Decorator, JitChoice, choose
from tests.support.cli import ROOT, env_with

#: Every unit-test file that runs the kernels (test_jit itself compares the backends),
#: and the ledger's golden vector.
CORE_TESTS = [
    "tests/unit/core/test_core_equivalence.py",
    "tests/unit/core/test_core_semantics.py",
    "tests/unit/core/test_core_accuracy.py",
    "tests/unit/replay/test_replay_cases.py",
    "tests/unit/replay/test_replay.py",
    "tests/unit/core/test_site.py",
    "tests/unit/core/test_calendar.py",
    "tests/unit/core/test_live_factor.py",
    "tests/unit/http/test_http.py",
    # The ledger's canonical form must not depend on how the core runs.
    "tests/unit/ledger/test_ledger_golden.py",
    "tests/unit/ledger/test_jcs.py",
]
HIDDEN = "numba is not installed here (hidden by the test)"


def hide_numba(root: Path) -> Path:
    """A directory that, first on PYTHONPATH, makes ``import numba`` fail with HIDDEN."""
    (root / "numba").mkdir()
    (root / "numba" / "__init__.py").write_text(f"raise ImportError({HIDDEN!r})\n")
    return root


def build_compiled(directory: Path) -> Path:
    """Build the compiled module into ``directory``; its path."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent.core.aot", "--output-dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_with({ENV: None}),
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = directory.glob("_kernel_aot*.so")
    assert proc.stdout.strip() == f"built {path}"
    return path


def load_compiled(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(AOT_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def compiled_installed(compiled: ModuleType | None) -> Iterator[None]:
    """``import agent.core._kernel_aot`` gives ``compiled`` (None: fails, as if not built)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, AOT_MODULE, compiled)  # type: ignore[arg-type]
        yield


def fresh_kernel(setting: str, compiled: ModuleType | None = None) -> ModuleType:
    """``agent/core/kernel.py`` imported afresh with ``ENERGY_AGENT_NUMBA=setting``.

    Kept in ``sys.modules`` under its own name: numba's inliner imports the module of
    the functions it inlines. Compiled without numba's on-disk cache: the cache is
    keyed on the file, and an entry compiled for this module name would break the
    next process that loads ``agent.core.kernel`` from it ("No module named ...")."""
    name = f"kernel_{setting}"
    if name in sys.modules:
        return sys.modules[name]

    def uncached(environ: Mapping[str, str]) -> tuple[JitChoice, Decorator[Any]]:
        choice, njit = choose(environ)
        return choice, lambda *args, **options: njit(*args, **{**options, "cache": False})

    with pytest.MonkeyPatch.context() as mp, compiled_installed(compiled):
        mp.setenv(ENV, setting)
        mp.setattr(jit, "choose", uncached)
        spec = importlib.util.spec_from_file_location(name, kernel.__file__)
        assert spec is not None and spec.loader is not None
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module
