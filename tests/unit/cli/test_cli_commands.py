"""The command line's shape: one module per command, help for everything, light start-up.

* every command (and certs' actions) answers ``--help`` with exit 0 and its usage;
* every option says what it is for (``-c FILE`` included);
* each ``agent/cli/<command>.py`` registers exactly its own command, every such module
  is listed in ``COMMANDS``, and none imports ``agent.cli.main`` back;
* running ``bridge`` or ``check`` loads neither numba, nor the core, nor the runtime,
  nor Modbus: checked in a fresh interpreter, through ``main`` itself.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.cli
from agent.cli.main import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[3]
CLI = ROOT / "agent" / "cli"
#: Modules of agent/cli that are no command.
SUPPORT = {"main", "common", "words", "serving"}
#: Options hidden on purpose (help=SUPPRESS): a benchmark's knob, not a user's.
HIDDEN = {("replay", "--reader")}


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def every_parser() -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command path, parser) for every command and sub-action, depth first."""
    todo: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = [((), build_parser())]
    while todo:
        path, parser = todo.pop()
        yield path, parser
        todo.extend(((*path, name), p) for name, p in sub_parsers(parser).items())


PATHS = sorted(path for path, _ in every_parser() if path)


def test_the_parser_holds_every_command_in_help_order() -> None:
    assert tuple(sub_parsers(build_parser())) == COMMANDS
    assert ("certs", "init") in PATHS  # the walk reaches nested actions


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_command_answers_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: energy-agent {' '.join(path)} ")
    assert "options:" in out


@pytest.mark.parametrize("argv", [["--help"], ["-h", "run"], ["-v", "--help", "bridge"]])
def test_top_level_help_lists_every_command_with_its_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name, parser in sub_parsers(build_parser()).items():
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(maxsplit=1)) == 2, f"{name} has no help line"
        assert parser.description, f"`energy-agent {name} --help` says nothing about it"


def test_every_option_and_command_has_help() -> None:
    missing = []
    for path, parser in every_parser():
        where = " ".join(("energy-agent", *path))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                # a command's (or action's) line in its parent's help
                lines = action._get_subactions()
                missing += [f"{where} {a.dest}" for a in lines if not (a.help or "").strip()]
                continue
            name = max(action.option_strings, key=len, default=action.dest)
            if action.help == argparse.SUPPRESS:
                assert (" ".join(path), name) in HIDDEN, f"{where} {name} is hidden"
            elif not (action.help or "").strip():
                missing.append(f"{where} {name}")
    assert missing == []


def test_every_option_with_a_default_says_it() -> None:
    """`--timeout SECONDS  seconds to wait` leaves the user guessing how long: an option
    that has a default names it ("default" in its help), flags and lists excepted."""
    silent = []
    for path, parser in every_parser():
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if action.default in (None, False, [], argparse.SUPPRESS):
                continue
            if "default" not in (action.help or ""):
                silent.append(f"energy-agent {' '.join(path)} {action.option_strings[-1]}")
    assert silent == []


def command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(agent.cli.__path__) if m.name not in SUPPORT)


def test_each_command_module_registers_its_own_command() -> None:
    assert sorted(COMMANDS) == command_modules()
    for name in COMMANDS:
        parser = argparse.ArgumentParser(prog="energy-agent")
        commands = parser.add_subparsers(dest="command")
        importlib.import_module(f"agent.cli.{name}").register(commands)
        assert list(commands.choices) == [name]


def test_no_command_imports_main_back() -> None:
    for path in sorted(CLI.glob("*.py")):
        if path.stem == "main":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert "agent.cli.main" not in names, f"{path.name} imports agent.cli.main"


HEAVY = ("numba", "agent.core", "agent.runtime", "pymodbus", "serial", "drivers.transport")


def modules_after(argv: list[str]) -> tuple[int, set[str]]:
    """Exit code and every module loaded by ``energy-agent ARGV`` in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from agent.cli.main import main\n"
        f"rc = main({argv!r})\n"
        "print(json.dumps([rc, sorted(sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    rc, modules = json.loads(out.stdout.splitlines()[-1])
    return rc, set(modules)


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m in HEAVY or m.startswith(tuple(h + "." for h in HEAVY)))


def test_bridge_loads_no_core_numba_or_modbus(tmp_path: Path) -> None:
    rc, modules = modules_after(["bridge", "-c", str(tmp_path / "missing.yaml")])
    assert rc == 2  # the config is missing: the command itself ran and said so
    assert "agent.cli.bridge" in modules
    assert heavy(modules) == []


def test_run_loads_its_config_before_the_runtime(tmp_path: Path) -> None:
    """Issue 18: `run` imports numpy, the core and the runtime only once its config is
    loaded, so that they fill the memory the parsing left free (200 meters: 8-9 MB less
    RSS). A config that does not load stops `run` before any of them is imported."""
    config = tmp_path / "config.yaml"
    config.write_text("site: {id: plant-a, timezone: UTC}\nbuses: []\n", encoding="utf-8")
    rc, modules = modules_after(["run", "-c", str(config)])
    assert rc == 2  # the config is refused (no gateway, no devices): run said so
    assert "agent.cli.run" in modules and "agent.config.models" in modules
    assert heavy(modules) == []
    assert sorted(m for m in modules if m == "numpy" or m.startswith("agent.http")) == []


def test_check_loads_no_core_numba_or_runtime() -> None:
    config = ROOT / "tests" / "cases" / "config-ok-design-example" / "config.yaml"
    rc, modules = modules_after(["check", "--no-files", "-c", str(config)])
    assert rc == 0
    assert "agent.cli.check" in modules
    # The config names its buses' endpoints, so drivers.transport may load; Modbus may not.
    assert [m for m in heavy(modules) if m != "drivers.transport"] == []
