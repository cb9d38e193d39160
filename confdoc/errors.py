"""One exception tree for the config diagnostics, and the :class:`Problem` they list.

A document with problems raises one :class:`DocumentError` listing all of them,
so one run of ``check`` shows every mistake, not the first. The drivers' profile
error and the agent's config error are kinds of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ConfdocError(Exception):
    """Base of everything this package raises on purpose."""


#: A "word" this long in a message is a value quoted from the document, not prose.
_LONG_WORD = re.compile(r"\S{61,}")
#: Longer messages are cut: the longest written on purpose lists a choice of 24 names.
MAX_MESSAGE = 1000


@dataclass(frozen=True)
class Problem:
    """One problem in a YAML document: where it is, what is wrong, how to fix it.

    A message quotes values from the document ("unknown bus '...'"), and a document
    can hold a megabyte in one value: long quoted words and long messages are cut,
    so a problem stays one line on a terminal whatever the file says.
    """

    path: str
    message: str
    file: str = ""
    line: int | None = None

    def __post_init__(self) -> None:
        message = self.message
        if len(message) > 200:
            message = _LONG_WORD.sub(lambda m: m[0][:59] + "…", message)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        object.__setattr__(self, "message", message)

    def __str__(self) -> str:
        where = self.path or "(top level)"
        pos = ""
        if self.file:
            pos = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{pos}{where}: {self.message}"


class DocumentError(ConfdocError):
    """A YAML document (profile or config) has problems; all of them are listed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FileRefused(ConfdocError):
    """A named file cannot be used: missing, unreadable, not a regular file, too large.

    Carries the reason only; whoever named the file adds which file and where it
    was named (a config's field and line), and never its content.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
