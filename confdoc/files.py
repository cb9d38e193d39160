"""Reading a file someone named, without trusting what it turns out to be.

Configs, profiles and secret files are named by people, in configs and on
command lines, and a typo or a hostile edit can point one anywhere. Read
naively, ``/dev/zero`` never ends (2.4 GB before anything noticed), a FIFO
without a writer blocks the process for good (an event loop, signal handlers
included), and a 100 MB file is parsed for minutes. So: ``stat`` first and
accept regular files only, open non-blocking (a FIFO swapped in after the
``stat`` cannot block either, and ``fstat`` on the open file sees it), and read
at most ``limit + 1`` bytes, whatever the size claimed.

Here because the YAML loader beside it reads every config and profile with it;
the agent's secret reader builds on it too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from confdoc.errors import FileRefused

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def size_text(n: int) -> str:
    """``65536`` -> ``64 KiB``: limits as people write them."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return f"it is {kind}, not a regular file"
    return "it is not a regular file"


def read_bounded(path: str | Path, limit: int, what: str = "this file") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit``; FileRefused says why not.

    ``what`` names the kind of file in the message about its size ("a config file").
    """
    try:
        # stat follows symlinks on purpose: secrets mounted by systemd or containers are links.
        reason = _not_regular(os.stat(path).st_mode)
        if reason is not None:
            raise FileRefused(reason)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    try:
        reason = _not_regular(os.fstat(fd).st_mode)  # replaced between stat and open
        if reason is not None:
            raise FileRefused(reason)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise FileRefused(f"it is larger than {size_text(limit)}, the limit for {what}")
    return data
