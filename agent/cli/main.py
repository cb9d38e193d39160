"""`energy-agent`: the top-level parser, and the one place errors become exit codes.

Each command is a module ``agent/cli/<command>.py`` whose ``register(commands)``
adds its sub-parser, options (each with its help) and ``handler``; what commands
share (exit codes, :class:`UsageError`, ``-c FILE``, the Modbus endpoint options)
is in :mod:`agent.cli.common`. Only the module of the command being run is
imported: ``bridge`` must load neither Modbus nor numba nor the core, and a
command starts no slower for the others. ``--help`` imports them all.

A new command: ``agent/cli/<name>.py`` with ``register`` (help on the command and
every option) and a handler returning an exit code, and ``<name>`` in
:data:`COMMANDS`; tests/unit/cli/test_cli_commands.py checks both and the help.

Exit codes: 0 success, 1 the job ran but failed (a meter did not answer),
2 the input is wrong (bad config, bad arguments, unknown profile). A user never
sees a traceback for their own mistakes; a traceback means a bug in here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from agent import __version__
from agent.cli.common import EXIT_OK, EXIT_USAGE, Commands, Handler, UsageError
from confdoc.errors import DocumentError

#: Every command, in the order ``energy-agent --help`` lists them: agent/cli/<name>.py each.
COMMANDS = (
    "demo",
    "run",
    "bridge",
    "simulate",
    "read",
    "scan",
    "replay",
    "check",
    "profiles",
    "status",
    "certs",
    "keys",
    "history",
    "verify",
    "report",
    "schema",
)


def _usage_errors() -> tuple[type[Exception], ...]:
    """UsageError, and a wrong ENERGY_AGENT_NUMBA if the core was loaded (only it raises that).

    Looked up, not imported: `bridge` must not load the core's package, not even to fail.
    """
    jit = sys.modules.get("agent.core.jit")
    return (UsageError,) if jit is None else (UsageError, jit.JitSettingError)


def _named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, if it is one and not asked for the top-level help.

    ``energy-agent`` has no option with a value, so the command is the first word
    that is not an option.
    """
    for arg in argv:
        if arg in ("-h", "--help"):
            return None  # `energy-agent -h run` shows every command
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def add_command(commands: Commands, name: str) -> None:
    """Add command ``name``'s parser: its module's ``register``."""
    module = importlib.import_module(f"agent.cli.{name}")
    add: Callable[[Commands], None] = module.register
    add(commands)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with only its command if it names one, else with all (for
    ``--help`` and for the list of choices a mistyped command is shown)."""
    parser = argparse.ArgumentParser(
        prog="energy-agent",
        description="Edge agent for factory gateways: Modbus meters to live energy, CO2 and "
        "carbon intensity.",
        epilog="`energy-agent COMMAND --help` shows a command's options. Exit codes: 0 done, "
        "1 the job ran but failed, 2 a wrong argument or config.",
    )
    parser.add_argument("--version", action="version", version=f"energy-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol details")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    named = None if argv is None else _named_command(argv)
    for name in (named,) if named else COMMANDS:
        add_command(commands, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pymodbus logs every frame at debug and every timeout as an error; our own
    # errors say the same with unit and address, so it stays quiet unless -v.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    handler: Handler = args.handler
    try:
        return handler(args)
    except _usage_errors() as exc:
        print(f"energy-agent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DocumentError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`energy-agent profiles --json | head`): not an error.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
