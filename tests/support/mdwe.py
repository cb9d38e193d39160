"""Run a program under the kernel's memory-deny-write-execute, as systemd would.

Shared by the deploy tests (why the agent's unit says MemoryDenyWriteExecute=no)
and the no-numba tests (the agent without numba runs under it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The kernel's own memory-deny-write-execute (PR_SET_MDWE, Linux 6.3+), which is what
# systemd's MemoryDenyWriteExecute=yes applies (or the same rule as a seccomp filter);
# it survives execve, so the program started here runs under it. 77: not this kernel.
MDWE_LAUNCHER = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def mdwe_prefix(tmp: Path) -> list[str]:
    launcher = tmp / "mdwe.py"
    launcher.write_text(MDWE_LAUNCHER)
    probe = run(sys.executable, launcher, "/bin/true")
    if probe.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert probe.returncode == 0, probe.stderr
    return [sys.executable, str(launcher)]


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=60, check=False
    )
