"""`bridge -c FILE`: the central MQTT -> InfluxDB writer, until SIGTERM or Ctrl-C.

Exit codes: 0 after an orderly stop (what was written is acknowledged, the rest
stays at the broker); 1 when the stop had to leave a thread behind (a write or
paho's thread did not finish in time: nothing it held was acknowledged, the broker
delivers it again) or the metrics port cannot be bound; 2 for a config error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from agent.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands, add_config_arg


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "bridge",
        help="central MQTT -> InfluxDB writer (shared subscription)",
        description="Subscribe to the gateways' records through a shared subscription, "
        "validate them, write them to InfluxDB and acknowledge each only once it is written. "
        "Runs until SIGTERM or Ctrl-C.",
    )
    add_config_arg(p, "the bridge's config file (mqtt, influx and bridge sections)")
    p.add_argument(
        "--client-id",
        metavar="ID",
        help="MQTT client id (default: mqtt.client_id, else energy-bridge-HOST-GROUP); "
        "keep it stable: the broker keeps unacknowledged messages under it",
    )
    p.set_defaults(handler=run_bridge)


def run_bridge(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `energy-agent --help` should not load two
    # network clients, and the bridge must not pull in drivers or numba.
    from agent.bridge.app import Bridge
    from agent.bridge.consumer import BridgeSetupError
    from agent.config.bridge import load_bridge_config

    config = load_bridge_config(args.config)
    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    try:
        bridge = Bridge(config, client_id=args.client_id)
    except BridgeSetupError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def on_signal(signum: int, frame: FrameType | None) -> None:
        bridge.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        clean = bridge.run()
    except OSError as exc:  # e.g. the metrics port is taken
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if clean else EXIT_FAILED
