"""A virtual serial cable: two pty paths, bytes written to one come out of the other.

socat (Debian's `socat`) is the standard tool and is used when installed; the
pure-Python relay does the same with two ``openpty`` pairs so a demo works on
a machine without it. Either way the agent opens an ordinary serial device
path with pyserial, exactly as it would open /dev/ttyUSB0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import termios
import tty
from pathlib import Path
from types import TracebackType
from typing import Self


class PtyPair:
    """``async with PtyPair() as pair:`` then ``pair.a`` and ``pair.b`` are linked paths."""

    def __init__(self, *, prefer_socat: bool = True) -> None:
        self.prefer_socat = prefer_socat
        self.a = ""
        self.b = ""
        self.kind = ""
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._fds: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        socat = shutil.which("socat") if self.prefer_socat else None
        if socat:
            await self._start_socat(socat)
        else:
            self._start_relay()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start_socat(self, socat: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="energy-agent-pty-")
        a = Path(self._dir.name) / "a"
        b = Path(self._dir.name) / "b"
        self._proc = await asyncio.create_subprocess_exec(
            socat,
            "-d",
            "-d",
            f"pty,raw,echo=0,link={a}",
            f"pty,raw,echo=0,link={b}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            if a.exists() and b.exists():
                break
            if self._proc.returncode is not None:
                raise OSError(f"socat exited with {self._proc.returncode}")
            await asyncio.sleep(0.01)
        else:
            await self.close()
            raise OSError("socat did not create its pty links within 2 s")
        self.a, self.b, self.kind = str(a), str(b), "socat"

    def _start_relay(self) -> None:
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (m1, m2, s1, s2):
            tty.setraw(fd, termios.TCSANOW)
            os.set_blocking(fd, False)
        self._fds = [m1, m2, s1, s2]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(m1, self._pump, m1, m2)
        self._loop.add_reader(m2, self._pump, m2, m1)
        self.a, self.b, self.kind = os.ttyname(s1), os.ttyname(s2), "python"

    @staticmethod
    def _pump(src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(src, 4096)
            if data:
                os.write(dst, data)

    async def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 2)
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None
        if self._loop is not None:
            for fd in self._fds[:2]:
                self._loop.remove_reader(fd)
            self._loop = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
