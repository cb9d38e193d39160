"""Run a command and read its own peak RSS from the kernel, not the parent's.

Why a launcher: on Linux a child's ``ru_maxrss`` starts at the resident size of
the process it was forked from (``dup_mm`` copies the high-water mark, and it
survives ``exec``). Forked straight from a pytest process that has grown to
500 MB, a 60 MB `check` reads as 536 MB. This file, run as a script, is a fresh
small interpreter: it forks the command, takes ``wait4``'s usage and writes the
peak to a file, so the figure is the command's own (plus a few MB of this
launcher's image at fork).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float
    timed_out: bool


def run(
    cmd: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Finished:
    """Run ``cmd`` through the launcher; its exit code, output, wall time and peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = Path(tmp) / "peak"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, __file__, str(report), *cmd],
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()  # the launcher's SIGKILL leaves the child; it has a watchdog
            proc.wait()
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        peak_kib = int(report.read_text()) if report.exists() else 0
        return Finished(
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            seconds,
            peak_kib / 1024,
            timed_out,
        )


def _main(argv: list[str]) -> int:
    report, cmd = argv[0], argv[1:]
    child = subprocess.Popen(cmd)
    parent = os.getppid()
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if os.getppid() != parent:  # the test gave up on us: do not leave the command behind
            child.kill()
            os.wait4(child.pid, 0)
            return 124
        time.sleep(0.01)
    Path(report).write_text(str(usage.ru_maxrss))  # KiB on Linux
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
