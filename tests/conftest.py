"""Shared helpers: free loopback ports, the real CLI as a subprocess, socat pty pairs.

Everything a fixture starts (processes, pty pairs) is stopped by the fixture, and
nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.decode import resolution
from drivers.profile import Profile, ProfileLibrary
from drivers.quantities import Quantity
from drivers.simulator.meter import Faults, MeterModel
from drivers.simulator.ptypair import PtyPair
from drivers.simulator.server import SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("energy-agent")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "agent.cli.main"]


def _env(extra: Mapping[str, str | None] | None) -> dict[str, str]:
    """The test's environment plus ``extra``; a ``None`` value removes that variable."""
    env = dict(os.environ)
    env["COLUMNS"] = "200"  # rich tables: no wrapped ids in a narrow pseudo-terminal
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"energy-agent {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Cli:
    """Runs ``energy-agent`` as a subprocess, always with a timeout."""

    def __init__(self) -> None:
        self.command = cli_command()
        self._procs: list[subprocess.Popen[bytes]] = []

    def run(
        self,
        *args: str,
        timeout: float = 30.0,
        env: Mapping[str, str | None] | None = None,
        cwd: str | Path | None = None,
    ) -> CliResult:
        proc = subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(env),
            cwd=cwd or ROOT,
            check=False,
        )
        return CliResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    async def run_async(
        self,
        *args: str,
        time_limit: float = 30.0,
        env: Mapping[str, str | None] | None = None,
        cwd: str | Path | None = None,
    ) -> CliResult:
        """For tests whose Modbus server runs in the test's own event loop."""
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(env),
            cwd=cwd or ROOT,
        )
        try:
            async with asyncio.timeout(time_limit):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(
                f"energy-agent {' '.join(args)} did not finish in {time_limit} s"
            ) from None
        assert proc.returncode is not None
        return CliResult(tuple(args), proc.returncode, out.decode(), err.decode())

    @contextlib.contextmanager
    def simulate(self, *args: str, ready_timeout: float = 15.0) -> Iterator[str]:
        """``energy-agent simulate ARGS`` until the block ends; yields its stdout up to "ready"."""
        proc = subprocess.Popen(
            [*self.command, "simulate", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(None),
            cwd=ROOT,
        )
        self._procs.append(proc)
        try:
            banner = _wait_for_line(proc, "ready", ready_timeout)
            yield banner
        finally:
            _stop(proc)
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._procs):
            _stop(proc)
        self._procs.clear()


def _wait_for_line(proc: subprocess.Popen[bytes], line: str, timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while f"\n{line}\n" not in "\n" + buf.decode(errors="replace"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no '{line}' line within {timeout} s; stdout so far: {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"simulate exited ({proc.wait()}) before '{line}': {buf!r}\n{err}")
        buf += chunk
    return buf.decode()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


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


# --- in-process simulators ------------------------------------------------------------------

#: A frozen instant for simulators whose values must not move between reads.
T0 = 1_700_000_000.0
#: Transformer ratios simulated meters report; non-trivial so a reader that ignores
#: a ratio register reads a value off by this factor. Other ratio names get 5.
RATIO_VALUES = {"ct": 40.0, "pt": 10.0}
#: Relative slack on top of the register's resolution (float64 rounding of the scaling).
REL_EPS = 1e-9


def pty_parity(parity: str) -> str:
    """``parity`` if a pseudo-terminal accepts it here, else "N".

    Some kernels (seen on a 6.18 VM kernel) refuse PARENB without PARODD on a pty
    with EINVAL, so pyserial cannot open a pty with even parity there. A pty
    carries bytes, not bits, so parity never matters on it; only opening fails.
    """
    if parity == "N":
        return parity
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[2] |= termios.PARENB
        if parity == "O":
            attrs[2] |= termios.PARODD
        else:
            attrs[2] &= ~termios.PARODD
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except termios.error:
        return "N"
    finally:
        os.close(slave)
        os.close(master)
    return parity


def ratio_values(profile: Profile) -> dict[str, float]:
    return {name: RATIO_VALUES.get(name, 5.0) for name in profile.ratios}


def mismatches(
    profile: Profile,
    got: Mapping[str, float | None],
    truth: Mapping[Quantity, float],
    ratios: Mapping[str, float],
    *,
    rel: float = REL_EPS,
) -> list[str]:
    """Every quantity of ``got`` that is farther from the truth than its register can tell."""
    out = []
    for spec in profile.registers:
        q = spec.quantity
        if q.value not in got:
            continue
        value, true = got[q.value], truth[q]
        tol = resolution(spec, true, ratios) + rel * abs(true)
        if value is None or not abs(value - true) <= tol:
            out.append(f"{q.value}: got {value!r}, truth {true!r} (tolerance {tol:.3g})")
    return out


@dataclass
class Sim:
    """A running simulator: its server and the meter models behind it, by unit id."""

    server: SimulatorServer
    models: dict[int, MeterModel]
    profiles: dict[int, Profile]
    ratios: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def endpoint(self) -> Endpoint:
        return self.server.endpoint

    @property
    def address(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    def truth(self, unit: int) -> dict[Quantity, float]:
        return self.models[unit].values()

    def mismatches(self, unit: int, got: Mapping[str, float | None], **kw: float) -> list[str]:
        return mismatches(self.profiles[unit], got, self.truth(unit), self.ratios[unit], **kw)


class Simulators:
    """Starts in-process SimulatorServers in the test's loop; the fixture stops them all."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.library = ProfileLibrary()
        self._stack = stack

    @staticmethod
    def tcp_endpoint(framing: Framing = Framing.TCP) -> Endpoint:
        return Endpoint(framing, host=LOOPBACK, port=free_port())

    def serial_endpoint(self, device: str, profile_id: str) -> Endpoint:
        """The device end of a pty pair with the profile's serial defaults.

        Where the pty refuses the profile's parity (see :func:`pty_parity`) the
        endpoint says "N"; the caller then passes ``--parity N`` to the reader too.
        """
        s = self.library.get(profile_id).serial
        return Endpoint(
            Framing.RTU,
            device=device,
            baudrate=s.baudrate,
            parity=pty_parity(s.parity),
            stopbits=s.stopbits,
            bytesize=s.bytesize,
        )

    async def start(
        self,
        endpoint: Endpoint,
        meters: Mapping[int, str],
        *,
        seed: int = 1,
        frozen: bool = True,
        faults: Mapping[int, Faults] | None = None,
    ) -> Sim:
        models: dict[int, MeterModel] = {}
        profiles: dict[int, Profile] = {}
        ratios: dict[int, dict[str, float]] = {}
        for i, (unit, profile_id) in enumerate(sorted(meters.items())):
            profile = self.library.get(profile_id)
            profiles[unit] = profile
            ratios[unit] = ratio_values(profile)
            models[unit] = MeterModel(
                profile,
                kind=profile.kind,
                seed=seed + i,
                ratios=dict(ratios[unit]),
                faults=(faults or {}).get(unit, Faults()),
            )
        devices = [SimulatedDevice(u, m) for u, m in models.items()]
        server = SimulatorServer(endpoint, devices, clock=(lambda: T0) if frozen else time.time)
        await self._stack.enter_async_context(server)
        return Sim(server, models, profiles, ratios)


@pytest.fixture
async def simulators() -> AsyncIterator[Simulators]:
    async with contextlib.AsyncExitStack() as stack:
        yield Simulators(stack)
