"""Fixtures every test may use: the CLI runner, free ports, socat pty pairs, simulators.

The helpers behind them live in tests/support (cli.py, simulators.py); tests
import those, never this file.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from drivers.simulator.ptypair import PtyPair
from tests.support.cli import Cli, free_port
from tests.support.simulators import Simulators


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
