"""Give back the memory of the compiler once the kernels are loaded.

numba needs LLVM (llvmlite's shared library, ~70 MB of code pages on x86_64)
to compile the core's kernels or load them from its cache. After that the
kernels are plain machine code and LLVM is not touched again, yet its pages
stay resident and count in the process' RSS, which is what a gateway's
monitoring (and the issue's 150 MB budget) looks at. They are clean, file-backed
pages: ``madvise(MADV_PAGEOUT)`` lets the kernel drop them now instead of
under memory pressure. Nothing is lost; if LLVM is needed again (a kernel
called with new argument types), the pages are read back from the file.

Linux 5.4+ only; elsewhere, or when the kernel refuses, nothing happens.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21
#: Shared libraries that only the compiler uses.
COMPILER_LIBRARIES = ("libllvmlite.so",)


def compiler_mappings(maps: str) -> list[tuple[int, int]]:
    """(start, end) of every mapping of a compiler library in a /proc/PID/maps text."""
    out = []
    for line in maps.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].rsplit("/", 1)[-1] in COMPILER_LIBRARIES:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end))
    return out


def release_compiler_pages() -> int:
    """Ask the kernel to drop LLVM's resident pages; returns how many mappings it took."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text(encoding="ascii", errors="replace")
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as exc:
        log.debug("cannot release the compiler's pages: %s", exc)
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    done = 0
    for start, end in compiler_mappings(maps):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            done += 1
        else:
            err = ctypes.get_errno()
            log.debug("madvise(MADV_PAGEOUT) refused: %s", errno.errorcode.get(err, err))
            break  # an older kernel: it will refuse every mapping
    return done
