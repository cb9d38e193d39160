"""The real CLI as a subprocess, free loopback ports, the repository's root.

Nothing listens anywhere but 127.0.0.1; everything started is stopped by its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


#: Under pytest-xdist (scripts/test runs two workers) each worker takes only the ports
#: of its own residue, so two workers can never be handed the same free port between
#: the moment it is found and the moment a server binds it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_RESIDUE = int(_WORKER[2:]) if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else 0


#: Ports this process has handed out: a test asks for two or three in a row before
#: any server binds them, and ``bind(0)`` may draw the same free port twice.
_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (this worker's share),
    never one this process handed out before.

    The share is ``(port >> 1) % workers``, not the port's parity: Linux hands out
    odd ports for ``bind(0)`` (even ones are kept for ``connect``).
    """
    port = 0
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if (port >> 1) % _WORKERS == _RESIDUE % _WORKERS and port not in _GIVEN:
            break
    _GIVEN.add(port)  # a thousand draws elsewhere: take the last rather than hang
    return port


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("energy-agent")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "agent.cli.main"]


def env_with(extra: Mapping[str, str | None] | None) -> dict[str, str]:
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
            env=env_with(env),
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
            env=env_with(env),
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
            env=env_with(None),
            cwd=ROOT,
        )
        self._procs.append(proc)
        try:
            banner = _wait_for_line(proc, "ready", ready_timeout)
            yield banner
        finally:
            stop_process(proc)
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._procs):
            stop_process(proc)
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


def stop_process(proc: subprocess.Popen[bytes]) -> None:
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
