"""`energy-agent`: argument parsing and the one place exit codes are decided.

Exit codes: 0 success, 1 the job ran but failed (a meter did not answer),
2 the input is wrong (bad config, bad arguments, unknown profile). A user never
sees a traceback for their own mistakes; a traceback means a bug in here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from agent import __version__

# Re-exported: what the commands share lives in agent.cli.common (they never import main).
from agent.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, parse_units
from confdoc.errors import DocumentError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "parse_units",
]

Handler = Callable[[argparse.Namespace], int]


def _usage_errors() -> tuple[type[Exception], ...]:
    """UsageError, and a wrong ENERGY_AGENT_NUMBA (raised when the core is loaded).

    Imported only when a command has failed: `bridge` must not load the core's package.
    """
    from agent.core.jit import JitSettingError

    return UsageError, JitSettingError


def _add_endpoint_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    where = p.add_mutually_exclusive_group(required=required)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP device or gateway")
    where.add_argument("--rtu", metavar="DEVICE", help="serial device, e.g. /dev/ttyUSB0")
    where.add_argument(
        "--rtu-over-tcp", metavar="HOST:PORT", help="RTU frames through a serial device server"
    )
    p.add_argument("--baudrate", type=int, help="serial speed (default: the profile's, or 9600)")
    p.add_argument("--parity", choices=["N", "E", "O"], help="serial parity (default: profile's)")
    p.add_argument("--stopbits", type=int, choices=[1, 2], help="serial stop bits")


def build_parser() -> argparse.ArgumentParser:
    from agent.cli import bridge, certs, demo, info, read, replay_cli, run, simulate, status

    parser = argparse.ArgumentParser(
        prog="energy-agent",
        description="Edge agent for factory gateways: Modbus meters to live energy, CO2 and "
        "carbon intensity.",
    )
    parser.add_argument("--version", action="version", version=f"energy-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="simulated plant read live, nothing to configure")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--no-rtu", action="store_true", help="do not use a socat serial pair")
    p.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="MQTT broker to start: mosquitto when installed, else a built-in demo broker "
        "(default auto)",
    )
    p.set_defaults(handler=demo.run_demo)

    p = sub.add_parser("run", help="the main job on a gateway: poll, compute, publish")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.set_defaults(handler=run.run_agent)

    p = sub.add_parser("bridge", help="central MQTT -> InfluxDB writer (shared subscription)")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument(
        "--client-id",
        help="MQTT client id (default: mqtt.client_id, else energy-bridge-HOST-GROUP); "
        "keep it stable: the broker keeps unacknowledged messages under it",
    )
    p.set_defaults(handler=bridge.run_bridge)

    p = sub.add_parser("simulate", help="serve simulated meters over Modbus TCP or RTU")
    p.add_argument("-c", "--config", metavar="FILE", help="plant file: endpoints and meters")
    _add_endpoint_args(p, required=False)
    p.add_argument("--profile", help="profile of the simulated meters")
    p.add_argument("--units", default=None, help="unit ids, e.g. 1 or 1-4 or 1,3,7")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--load-kw", type=float, default=20.0, help="typical active power")
    p.add_argument(
        "--near-wrap",
        type=float,
        metavar="UNITS",
        help="start integer counters this far below their wrap point",
    )
    p.add_argument(
        "--freeze",
        action="store_true",
        help="freeze time: values stay constant (for exact comparisons)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="UNIT:KIND[=VALUE]",
        help="inject a fault: timeout, exception=CODE, garbage, reset=SECONDS, "
        "delay=SECONDS (probabilities as timeout=0.3)",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(handler=simulate.run_simulate)

    p = sub.add_parser("read", help="one-shot read of a device with a profile")
    _add_endpoint_args(p)
    p.add_argument("--unit", type=int, help="unit id (default: the profile's)")
    p.add_argument("--profile", required=True, help="profile id, see `energy-agent profiles`")
    p.add_argument("--json", action="store_true", help="one JSON object keyed by quantity")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    p.add_argument("--retries", type=int, default=1)
    p.set_defaults(handler=read.run_read)

    p = sub.add_parser("scan", help="find responding unit ids on a bus and suggest profiles")
    _add_endpoint_args(p)
    p.add_argument("--units", default="1-247", help="unit ids to try (default 1-247)")
    p.add_argument("--timeout", type=float, default=0.3, help="seconds per request")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=read.run_scan)

    replay_cli.add_parser(sub)

    p = sub.add_parser(
        "check", help="validate a config file and the files it names, as `run` would"
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument(
        "--no-files",
        action="store_true",
        help="check the document only, not the password, token and certificate files it "
        "names (for a config meant for another machine)",
    )
    p.set_defaults(handler=info.run_check)

    p = sub.add_parser("profiles", help="list built-in meter profiles")
    p.add_argument("--json", action="store_true")
    p.add_argument("id", nargs="?", help="show one profile's registers")
    p.set_defaults(handler=info.run_profiles)

    p = sub.add_parser("status", help="the running agent's health and live values")
    p.add_argument(
        "--url", help="the agent's page, e.g. http://127.0.0.1:8080/ (default: from -c, or that)"
    )
    p.add_argument("-c", "--config", metavar="FILE", help="take URL and password from a config")
    p.add_argument("--user", help="basic-auth user (default: the config's, or 'energy')")
    p.add_argument("--password-file", metavar="FILE", help="basic-auth password file")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")
    p.add_argument("--json", action="store_true", help="the /api/state document as JSON")
    p.set_defaults(handler=status.run_status)

    certs.add_parser(sub)

    p = sub.add_parser("schema", help="JSON Schema of the config file")
    p.add_argument("--bridge", action="store_true", help="the bridge's config instead")
    p.set_defaults(handler=info.run_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
