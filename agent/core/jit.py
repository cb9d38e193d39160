"""numba when it can run, the same kernels as plain Python when it cannot.

numba has no wheels for 32-bit ARM (armv7 gateways), and a broken or missing
LLVM must not keep a gateway from counting energy. So :mod:`agent.core.kernel`
takes its ``njit`` from :func:`choose`: numba's, or a decorator that leaves the
function as it is. The fallback runs **the kernel's own code** as Python on the
same numpy arrays, rather than switching the engine to
:mod:`agent.core.reference`, because:

* the results are bit-identical, not merely close. The kernels use no
  ``fastmath`` and no parallel reductions, so numba performs the same IEEE
  float64 operations in the same order as Python does; the reference is a
  different algorithm (a list of counter points, differences of C(t)) that
  agrees with the kernel only to within rounding, which the equivalence tests
  allow for;
* the snapshot is the kernel's state arrays: a gateway that gains or loses
  numba (an upgrade, ``ENERGY_AGENT_NUMBA=off`` for a diagnosis) continues its
  counters from the same file;
* the reference keeps every accepted reading of every channel in lists, so it
  grows without bound in a process that runs for months; the kernel's state is
  a fixed ring per channel;
* the engine, the site, the snapshot and the tests stay one code path.

The price is speed (see docs/performance.md, "Core without numba"), which a
small gateway's fleet does not need.

The fallback is taken when ``ENERGY_AGENT_NUMBA=off``, when numba cannot be
imported, or when numba's own ``NUMBA_DISABLE_JIT=1`` is set (numba's ``njit``
then returns the function unchanged: the same plain-Python kernels, reported
the same way). The choice is made once, when the kernel module is imported,
and is exposed as ``agent.core.kernel.JIT``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import Any, TypeVar

#: The environment variable that turns numba off for the core.
ENV = "ENERGY_AGENT_NUMBA"
_OFF = frozenset({"off", "0", "no", "false"})
_AUTO = frozenset({"", "auto", "on", "1", "yes", "true"})
HOW_TO_GET_NUMBA = (
    "install numba in the agent's environment (`pip install numba`; it has wheels for "
    "x86_64 and 64-bit ARM, not for 32-bit ARM)"
)

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[..., Callable[[F], F]]


class Backend(StrEnum):
    NUMBA = "numba"  # compiled by numba
    PYTHON = "python"  # the same kernels, interpreted


class JitSettingError(ValueError):
    """``ENERGY_AGENT_NUMBA`` has a value that is neither on nor off."""


@dataclass(frozen=True)
class JitChoice:
    backend: Backend
    #: Why the kernels run as Python (empty when numba compiles them).
    reason: str = ""
    #: What to do to get the compiled kernels back.
    remedy: str = ""

    def warning(self) -> str | None:
        """The message a user sees at start, or None when numba compiles the core."""
        if self.backend is Backend.NUMBA:
            return None
        return (
            f"the core runs without numba ({self.reason}): its results are identical, "
            "but it is slower (about 2x the core's CPU when polling, 40x when replaying a "
            f"file; see docs/performance.md); to compile it, {self.remedy}"
        )


def _keep(*_args: Any, **_options: Any) -> Callable[[F], F]:
    """``njit(...)`` without numba: the function itself, run by Python."""

    def decorate(func: F) -> F:
        return func

    return decorate


def _import_numba() -> ModuleType:
    return importlib.import_module("numba")


def choose(
    environ: Mapping[str, str],
    import_numba: Callable[[], ModuleType] = _import_numba,
) -> tuple[JitChoice, Decorator[Any]]:
    """Decide how the kernels run: (the choice and its reason, the ``njit`` to use)."""
    raw = environ.get(ENV, "")
    setting = raw.strip().lower()
    if setting in _OFF:
        return JitChoice(Backend.PYTHON, f"{ENV}={raw}", f"unset {ENV}"), _keep
    if setting not in _AUTO:
        raise JitSettingError(
            f"{ENV}={raw!r} is not a setting: use {ENV}=off to run the core without numba, "
            f"or leave it unset to use numba when it is installed"
        )
    try:
        numba = import_numba()
    except (ImportError, OSError) as exc:  # not installed, or its LLVM cannot be loaded
        reason = f"numba cannot be imported: {exc}"
        return JitChoice(Backend.PYTHON, reason, HOW_TO_GET_NUMBA), _keep
    if numba.config.DISABLE_JIT:
        reason = "NUMBA_DISABLE_JIT is set"
        return JitChoice(Backend.PYTHON, reason, "unset NUMBA_DISABLE_JIT"), numba.njit
    return JitChoice(Backend.NUMBA), numba.njit
