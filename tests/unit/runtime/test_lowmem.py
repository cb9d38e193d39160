"""Releasing LLVM's pages after the kernels are loaded: less RSS, same results."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.runtime.lowmem import compiler_mappings

ROOT = Path(__file__).resolve().parents[3]
CASE = ROOT / "tests" / "cases" / "replay-all-topics"

MAPS = """\
7f0000000000-7f0000100000 r--p 00000000 08:01 123 /venv/llvmlite/binding/libllvmlite.so
7f0000100000-7f0002000000 r-xp 00100000 08:01 123 /venv/llvmlite/binding/libllvmlite.so
7f0003000000-7f0003001000 rw-p 00000000 00:00 0
7f0004000000-7f0004100000 r-xp 00000000 08:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0005000000-7f0005001000 r--p 00000000 08:01 124 /tmp/not-libllvmlite.so.txt
"""


def test_only_the_compiler_library_is_chosen() -> None:
    assert compiler_mappings(MAPS) == [
        (0x7F0000000000, 0x7F0000100000),
        (0x7F0000100000, 0x7F0002000000),
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) is Linux")
def test_rss_drops_and_the_kernels_still_give_the_same_numbers(tmp_path: Path) -> None:
    """In a fresh process: kernels loaded, pages released, RSS lower, results unchanged.

    The kernel drops only pages no other process maps, and this test's own process
    (and any other numba user on the machine) maps llvmlite too: the child loads a
    private copy of llvmlite, as a gateway's only numba process would have it.
    """
    import llvmlite

    private = tmp_path / "site"
    shutil.copytree(Path(llvmlite.__file__).parent, private / "llvmlite")
    code = textwrap.dedent(
        f"""
        import re
        from pathlib import Path
        from agent.config.load import load_config
        from agent.contract import encode
        from agent.replay import Backfill
        from agent.runtime.lowmem import release_compiler_pages
        from drivers.profile import ProfileLibrary

        def rss():
            return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1])

        case = Path({str(CASE)!r})
        lib = ProfileLibrary()
        config = load_config(case / "config.yaml", profiles=lib)
        def run():
            backfill = Backfill(config, lib, [case / "readings.csv"])
            return [m.topic + " " + encode(m.payload).decode() for b in backfill.run() for m in b]
        first = run()
        before = rss()
        taken = release_compiler_pages()
        after = rss()
        assert run() == first, "the kernels gave other numbers after the release"
        import llvmlite
        assert llvmlite.__file__.startswith({str(private)!r}), llvmlite.__file__
        print(taken, before, after)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(private), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    taken, before, after = (int(x) for x in proc.stdout.split())
    assert taken >= 1
    assert after < before - 20_000  # kB: LLVM's code pages are tens of MB
