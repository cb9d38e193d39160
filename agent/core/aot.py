"""Compile the core's kernels ahead of time into an extension module (the "aot" backend).

Run: ``python -m agent.core.aot [--output-dir DIR] [--cpu NAME]`` (deploy/install.sh
runs it after installing; it needs numba, a C compiler and Python's headers).

Why: a process that JIT-compiles the kernels maps numba and LLVM (about 100 MB of
file-backed memory, 69 MB of it libllvmlite.so, and 40 MB more of Python objects:
docs/performance.md). The extension module built here holds the same kernels as
machine code, compiled by the same numba from the same source, and imports neither
numba nor llvmlite: the agent that loads it (:mod:`agent.core.jit`) runs at compiled
speed in the memory of the plain-Python core.

The module stores the hash of the source it was built from (``source_hash()``);
:mod:`agent.core.jit` refuses a module whose hash is not that of the kernel it runs
with, so an upgrade that changes the kernel without rebuilding falls back to numba's
JIT and says so, instead of running old machine code against new state columns.

The exported entry points take the arrays the engine allocates (C-contiguous, fixed
dtypes: :data:`agent.core.jit.ENTRY_POINTS`). A compiled module does not check what it is given, as
numba's dispatcher does; :func:`agent.core.jit.guarded` does, in the kernel module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.core.jit import AOT_MODULE, BUILD, ENTRY_POINTS, ENV, ArgSpec, source_hash

_HERE = Path(__file__).resolve().parent


def signature(name: str) -> str:
    """Entry point ``name``'s signature as numba spells it (from :data:`ENTRY_POINTS`)."""
    returns, args = ENTRY_POINTS[name]
    return f"{returns}({', '.join(_numba_type(a) for a in args)})"


def _numba_type(arg: ArgSpec) -> str:
    if arg is None:
        return "int64"
    dtype, ndim = arg
    return f"{dtype}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


def build(output_dir: Path = _HERE, cpu: str = "") -> Path:
    """Compile the kernels into ``output_dir``; return the module's path.

    ``cpu`` is LLVM's CPU name: empty for the architecture's generic CPU (the module
    runs on every CPU of it, like the container image's ``NUMBA_CPU_NAME=generic``
    cache), ``host`` for the CPU building it.
    """
    if "numba" in sys.modules or "agent.core.kernel" in sys.modules:
        raise RuntimeError(f"build the compiled core in a process of its own ({BUILD})")
    output_dir.mkdir(parents=True, exist_ok=True)
    # A module left from the previous version goes first: if this build fails, the
    # agent uses numba's JIT quietly rather than refusing a stale module at every start.
    for old in output_dir.glob(f"{AOT_MODULE.rpartition('.')[2]}.*"):
        old.unlink()
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".aot-build-") as tmp:
        # numba's on-disk cache stays out of it: what pycc compiles into it refers to a
        # module "<dynamic>" that a JIT process loading it later cannot import.
        os.environ["NUMBA_CACHE_DIR"] = str(Path(tmp) / "numba-cache")
        os.environ[ENV] = "jit"  # the kernel as numba compiles it, not a module built before
        return _compile(output_dir, cpu, Path(tmp))


def _compile(output_dir: Path, cpu: str, tmp: Path) -> Path:
    # numba's pycc is untyped: Any, not a stream of no-untyped-call errors
    CC: Any = importlib.import_module("numba.pycc").CC
    from agent.core import kernel

    class InOrder(CC):  # type: ignore[misc]
        """pycc compiles its exports sorted by name; compiled after ``range_sums``,
        ``update`` fails to type (numba 0.68.1: "No conversion from Literal[int](0) to
        Literal[int](2) for 'flags'"; numba's JIT compiles it in either order), so
        the exports are compiled in the order they are added: ``update`` first."""

        @property
        def _export_entries(self) -> list[Any]:
            return list(self._exported_functions.values())

    if kernel.JIT.backend.value != "numba":
        raise RuntimeError(f"numba cannot compile the kernels here: {kernel.JIT.reason}")
    expected = source_hash()
    cc = InOrder(AOT_MODULE.rpartition(".")[2], source_module=kernel)
    cc.output_dir = str(output_dir)
    cc.target_cpu = cpu
    cc.verbose = False
    for name in ENTRY_POINTS:
        cc.export(name, signature(name))(getattr(kernel, name).py_func)

    def hash_of_source() -> int:
        return expected

    cc.export("source_hash", "int64()")(hash_of_source)
    old = tempfile.tempdir
    tempfile.tempdir = str(tmp)  # pycc's own build directory, removed with tmp
    try:
        cc.compile()
    finally:
        tempfile.tempdir = old
    return output_dir / str(cc.output_file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.core.aot",
        description="compile the core's kernels ahead of time (the agent then needs no numba "
        "at run time: docs/deploy.md)",
    )
    parser.add_argument("--output-dir", type=Path, default=_HERE, help="default: agent/core")
    parser.add_argument(
        "--cpu", default="", help="LLVM CPU name (default: the generic CPU of this architecture)"
    )
    args = parser.parse_args(argv)
    path = build(args.output_dir, args.cpu)
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
