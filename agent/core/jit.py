"""How the kernels run: compiled ahead of time, by numba's JIT, or as plain Python.

Three backends run **the same kernel source** (:mod:`agent.core.kernel`):

* ``aot``: an extension module built from it by :mod:`agent.core.aot` (numba's
  ahead-of-time compiler, at install time). The process then imports neither numba
  nor llvmlite: compiled speed in the memory of the plain-Python core (numba and
  LLVM map about 100 MB: docs/performance.md). Used when it is present and was built
  from this very source (its hash): a stale module is refused, with a warning, and
  the next backend is used;
* ``numba``: numba compiles the kernels when the process starts (cached on disk);
* ``python``: the kernels' own code, run by Python.

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

``ENERGY_AGENT_NUMBA``: unset (or ``auto``) takes the first backend that can run;
``aot`` the same, but warns when the compiled module is missing; ``jit`` skips the
compiled module (numba's JIT, else Python); ``off`` runs Python. The Python
fallback is also taken when numba cannot be imported, or when numba's own
``NUMBA_DISABLE_JIT=1`` is set (numba's ``njit`` then returns the function
unchanged: the same plain-Python kernels, reported the same way). The choice is
made once, when the kernel module is imported, and is exposed as
``agent.core.kernel.JIT``.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

#: The environment variable that chooses how the core runs.
ENV = "ENERGY_AGENT_NUMBA"
_OFF = frozenset({"off", "0", "no", "false"})
_AUTO = frozenset({"", "auto", "on", "1", "yes", "true"})
_JIT = frozenset({"jit", "numba"})
_AOT = "aot"
HOW_TO_GET_NUMBA = (
    "install numba in the agent's environment (`pip install numba`; it has wheels for "
    "x86_64 and 64-bit ARM, not for 32-bit ARM)"
)
#: The command that builds the compiled module (:mod:`agent.core.aot`).
BUILD = "python -m agent.core.aot"
#: The compiled module, inside this package.
AOT_MODULE = "agent.core._kernel_aot"
_HERE = Path(__file__).resolve().parent
#: What the compiled code depends on: the kernel and the constants it compiles in.
SOURCES = (_HERE / "kernel.py", _HERE / "channels.py")

#: The compiled entry points' arguments: (dtype, dimensions) of each array, in the
#: layout the engine allocates (C-contiguous); ``None`` for an int64 scalar.
ArgSpec = tuple[str, int] | None
_I2, _F2, _I1, _F1 = ("int64", 2), ("float64", 2), ("int64", 1), ("float64", 1)
ENTRY_POINTS: dict[str, tuple[str, tuple[ArgSpec, ...]]] = {
    "update": (
        "UniTuple(int64, 3)",
        (
            *(_I2, _F2, _F2, ("uint8", 2), ("uint16", 3), _I2),  # I, F, rings, events
            *(_I1, _I1, _F1),  # chans, ts, vals
            *(None, None, None),  # start, interval_slots, align
            *(_I1, _I2, _F2, _I2, _F1),  # month_starts, out_si, out_sf, out_ei, out_ef
        ),
    ),
    "range_sums": ("void", (_I2, _F2, _I1, _I1, _F2)),
    "weighted_range_sums": ("void", (_I2, _F2, _I1, _F2, _I1, _I1, _F2)),
    "tail_sums": ("void", (_F2, None, _I1, _I2, ("float64", 3))),
}

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[..., Callable[[F], F]]


class Backend(StrEnum):
    AOT = "aot"  # compiled ahead of time by agent.core.aot; no numba in the process
    NUMBA = "numba"  # compiled by numba when the process starts
    PYTHON = "python"  # the same kernels, interpreted


class JitSettingError(ValueError):
    """``ENERGY_AGENT_NUMBA`` has a value that is none of its settings."""


@dataclass(frozen=True)
class JitChoice:
    backend: Backend
    #: Why the kernels do not run compiled ahead of time (empty when they do, or when
    #: numba compiles them and no compiled module was there to refuse).
    reason: str = ""
    #: What to do to get the compiled kernels back.
    remedy: str = ""
    #: The compiled module (Backend.AOT only).
    compiled: ModuleType | None = field(default=None, compare=False, repr=False)

    def warning(self) -> str | None:
        """The message a user sees at start, or None when all is as it should be."""
        if self.backend is Backend.AOT:
            return None
        if self.backend is Backend.NUMBA:
            if not self.reason:
                return None
            return (
                f"the core's compiled module is not used ({self.reason}): numba compiles "
                f"the kernels instead (same results, more memory); {self.remedy}"
            )
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


def _import_aot() -> ModuleType:
    return importlib.import_module(AOT_MODULE)


def source_hash(sources: Sequence[Path] = SOURCES) -> int:
    """The kernel source's identity, as a non-negative int64 (the compiled module keeps it)."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    return int.from_bytes(digest.digest()[:8], "big") >> 1


def _load_compiled(
    import_aot: Callable[[], ModuleType], expected: int, *, asked: bool
) -> tuple[ModuleType | None, str]:
    """The compiled module if it can run this kernel, else (None, why not; "" when
    it is simply not built and nobody asked for it)."""
    try:
        compiled = import_aot()
    except ModuleNotFoundError as exc:
        if exc.name != AOT_MODULE:
            return None, f"{AOT_MODULE} cannot be imported: {exc}"
        return None, f"{ENV}={_AOT} but {AOT_MODULE} is not built" if asked else ""
    except ImportError as exc:  # e.g. built against another numpy
        return None, f"{AOT_MODULE} cannot be imported: {exc}"
    built_from = int(compiled.source_hash())
    if built_from != expected:
        where = getattr(compiled, "__file__", AOT_MODULE)
        return None, (
            f"{where} was built from another version of agent/core/kernel.py "
            f"(source hash {built_from:x}, this one is {expected:x})"
        )
    return compiled, ""


def choose(
    environ: Mapping[str, str],
    import_numba: Callable[[], ModuleType] = _import_numba,
    import_aot: Callable[[], ModuleType] = _import_aot,
    expected_hash: Callable[[], int] = source_hash,
) -> tuple[JitChoice, Decorator[Any]]:
    """Decide how the kernels run: (the choice and its reason, the ``njit`` to use)."""
    raw = environ.get(ENV, "")
    setting = raw.strip().lower()
    if setting in _OFF:
        return JitChoice(Backend.PYTHON, f"{ENV}={raw}", f"unset {ENV}"), _keep
    if setting not in _AUTO | _JIT | {_AOT}:
        raise JitSettingError(
            f"{ENV}={raw!r} is not a setting: use {ENV}=off to run the core without numba, "
            f"{ENV}=jit to have numba compile it at start (not the module `{BUILD}` "
            f"builds), or leave it unset to use the fastest that can run"
        )
    refused = ""
    if setting not in _JIT:
        compiled, refused = _load_compiled(import_aot, expected_hash(), asked=setting == _AOT)
        if compiled is not None:
            return JitChoice(Backend.AOT, compiled=compiled), _keep
    rebuild = f"to use it, build it again with `{BUILD}` (docs/deploy.md)"
    try:
        numba = import_numba()
    except (ImportError, OSError) as exc:  # not installed, or its LLVM cannot be loaded
        reason = "; ".join(filter(None, [refused, f"numba cannot be imported: {exc}"]))
        remedy = HOW_TO_GET_NUMBA if not refused else f"{HOW_TO_GET_NUMBA}; or {rebuild}"
        return JitChoice(Backend.PYTHON, reason, remedy), _keep
    if numba.config.DISABLE_JIT:
        reason = "NUMBA_DISABLE_JIT is set"
        return JitChoice(Backend.PYTHON, reason, "unset NUMBA_DISABLE_JIT"), numba.njit
    return JitChoice(Backend.NUMBA, refused, rebuild if refused else ""), numba.njit


def guarded(compiled: ModuleType, name: str) -> Callable[..., Any]:
    """The compiled entry point ``name``, refusing arrays of another dtype or layout.

    numba's dispatcher checks its arguments' types; a compiled module reads whatever
    memory it is handed as the dtype it was built for. The engine always passes its
    own arrays, so a refusal here is a bug caught before it corrupts the state.
    """
    func = getattr(compiled, name)
    want = [None if a is None else (np.dtype(a[0]), a[1]) for a in ENTRY_POINTS[name][1]]

    def call(*args: Any) -> Any:
        for i, (arg, w) in enumerate(zip(args, want, strict=True)):
            if w is not None and not (
                type(arg) is np.ndarray
                and arg.dtype == w[0]
                and arg.ndim == w[1]
                and arg.flags.c_contiguous
            ):
                raise TypeError(
                    f"{name}: argument {i} must be a C-contiguous {w[0]} array of "
                    f"{w[1]} dimensions, not {getattr(arg, 'dtype', type(arg))!r} "
                    f"{getattr(arg, 'shape', '')}"
                )
        return func(*args)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = func.__doc__
    return call
