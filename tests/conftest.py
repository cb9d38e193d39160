"""Fixtures every test may use: the CLI runner, free ports, socat pty pairs, simulators.

The helpers behind them live in tests/support (cli.py, simulators.py); tests
import those, never this file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

# The core's backend is the test's choice, not the checkout's: a module built by
# `python -m agent.core.aot` next to kernel.py would otherwise switch every test (and
# every CLI subprocess, which inherits this) from numba's JIT to it. tests/unit/core/
# test_jit.py and tests/integration/test_aot_core.py run the compiled module on purpose;
# ENERGY_AGENT_NUMBA=off (test_without_numba) is left as it is.
assert "agent.core.kernel" not in sys.modules
os.environ.setdefault("ENERGY_AGENT_NUMBA", "jit")

from drivers.simulator.ptypair import PtyPair  # noqa: E402
from tests.support.cli import Cli, free_port  # noqa: E402
from tests.support.simulators import Simulators  # noqa: E402


@pytest.fixture(scope="session")
def cli() -> Iterator[Cli]:
    runner = Cli()
    yield runner
    runner.stop_all()


@pytest.fixture(scope="session")
def ports() -> Callable[[], int]:
    """Call it for each free loopback port a test needs."""
    return free_port


@pytest.fixture
async def socat_pair() -> AsyncIterator[PtyPair]:
    """A real socat pty pair (a virtual RS-485 cable): ``pair.a`` <-> ``pair.b``."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat); RTU tests need its pty pair")
    async with PtyPair(prefer_socat=True) as pair:
        assert pair.kind == "socat", f"expected a socat pair, got {pair.kind!r}"
        yield pair


@pytest.fixture
async def simulators() -> AsyncIterator[Simulators]:
    async with contextlib.AsyncExitStack() as stack:
        yield Simulators(stack)
