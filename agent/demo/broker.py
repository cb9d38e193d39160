"""A throwaway mosquitto on a loopback port, for the demo (and tests that want one)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


class Mosquitto:
    """``async with Mosquitto(port):`` a broker on 127.0.0.1:port, anonymous, no persistence.

    ``extra`` is appended to the config (e.g. the bridge tests' queue limits).
    """

    def __init__(self, port: int, binary: str | None = None, extra: str = "") -> None:
        self.port = port
        self.binary = binary or find_mosquitto()
        self.extra = extra
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        if self.binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self._dir = tempfile.TemporaryDirectory(prefix="energy-agent-mosquitto-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nlog_dest none\n" + self.extra,
            encoding="utf-8",
        )
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if self._proc.returncode is not None:
                    raise OSError(f"mosquitto exited with {self._proc.returncode}") from None
                await asyncio.sleep(0.025)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return self
        await self.close()
        raise OSError(f"mosquitto did not listen on port {self.port} within 5 s")

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 3)
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
