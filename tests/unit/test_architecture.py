"""Who may import whom, read from the source as it is (``ast``, nothing imported).

Every import counts: at the top, inside a function (a lazy import is still a
dependency) and under ``if TYPE_CHECKING:`` (a type-only cycle is still a
cycle a reader has to untangle). ``from package import name`` counts as an
import of ``package.name`` when that is a module, else of ``package``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agent"
#: The runtime's parts a view must not reach into: it renders ``Agent.status()``.
RUNTIME_PARTS = frozenset({"site", "link", "outbox", "pump", "devices"})


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(module name, line) of every import in ``path``, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def _internal(name: str) -> str | None:
    """The module of ``agent`` that importing ``name`` runs, if it is one of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _ in _imported(module, path):
            target = _internal(name)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_import_graph_of_agent_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["agent.cli.run"], "the graph was not read"
    assert cycles(graph) == []


def test_type_only_and_lazy_imports_count_and_close_cycles(tmp_path: Path) -> None:
    """The check itself: imports under TYPE_CHECKING and inside functions are read, and
    a cycle through them is found."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from agent.runtime.agent import Agent\n"
        "def f():\n"
        "    from ..http import state\n"
    )
    names = [name for name, _ in _imported("agent.cli.m", source)]
    assert names == ["typing", "agent.runtime.agent", "agent.http.state"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_http_layer_depends_on_the_status_types_not_on_the_runtime() -> None:
    """The page renders the status; it cannot reach the runtime, not even through another
    module."""
    graph = import_graph()
    for module in (m for m in MODULES if m.startswith("agent.http")):
        reached = sorted(m for m in reachable(graph, module) if m.startswith("agent.runtime"))
        assert reached == [], f"{module} reaches {reached}"
    assert "agent.status" in graph["agent.http.state"]


def test_the_status_types_import_only_the_standard_library() -> None:
    """Anything may depend on agent.status, so it must cost nothing to import."""
    names = {
        name.partition(".")[0] for name, _ in _imported("agent.status", MODULES["agent.status"])
    }
    assert names <= {"__future__", "collections", "dataclasses"}, names


def test_nothing_outside_the_runtime_reads_the_agents_parts() -> None:
    """``agent.site``, ``agent.link``, ``agent.outbox``, ``agent.pump`` and
    ``agent.devices`` are the runtime's: every view reads ``agent.status()``."""
    found = []
    for module, path in MODULES.items():
        if module.startswith("agent.runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and node.attr in RUNTIME_PARTS):
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if "agent" in name.lower():
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}.{node.attr}")
    assert found == []


# --- the tests' own layout --------------------------------------------------------------------

TESTS = ROOT / "tests"


def _test_imports() -> Iterator[tuple[Path, str, int]]:
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                yield path, name, node.lineno


def test_no_test_module_imports_another_or_the_conftest() -> None:
    """Shared test code lives in tests/support; a test file or conftest is nobody's library."""
    bad = sorted(
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path, name, line in _test_imports()
        if name.startswith(("tests.unit", "tests.integration", "tests.conftest"))
    )
    assert bad == []


def test_unit_tests_live_in_the_room_they_test() -> None:
    """tests/unit mirrors the package: only the cross-cutting architecture test is at the top."""
    flat = sorted(p.name for p in (TESTS / "unit").glob("test_*.py"))
    assert flat == ["test_architecture.py"]


# --- sizes: a reader holds a function or a class in their head --------------------------------

#: The numba kernel's update is one loop over readings, by design (docs/core.md); so are
#: the ledger's bulk kernels, one loop over a block's rows (a byte scanner moved out into
#: a function of its own cost 10 % of their time: docs/performance.md).
LONG_BY_DESIGN = {
    ("agent/core/kernel.py", "update"),
    ("agent/ledger/bulk_kernel.py", "scan"),
    ("agent/ledger/bulk_site.py", "scan_site"),
}


def _definitions() -> Iterator[tuple[str, ast.AST, int]]:
    for package in ("agent", "drivers", "confdoc"):
        for path in (ROOT / package).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    assert node.end_lineno is not None
                    yield rel, node, node.end_lineno - node.lineno + 1


def test_no_function_over_80_lines() -> None:
    long = sorted(
        f"{rel}: {node.name} ({n} lines)"
        for rel, node, n in _definitions()
        if not isinstance(node, ast.ClassDef) and n > 80 and (rel, node.name) not in LONG_BY_DESIGN
    )
    assert long == []


def test_no_class_over_250_lines() -> None:
    big = sorted(
        f"{rel}: {node.name} ({n} lines)"
        for rel, node, n in _definitions()
        if isinstance(node, ast.ClassDef) and n > 250
    )
    assert big == []
