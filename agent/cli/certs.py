"""`energy-agent certs`: a pilot CA and the certificates the broker ACL is built on.

A gateway's certificate names it ``{site}/{gateway}``: with mosquitto's
``use_identity_as_username`` that common name becomes the MQTT username, and the
shipped ACL (deploy/mosquitto/acl) lets that user publish under
``energy/v1/{site}/{gateway}/#`` only. Adding a gateway is then one command here
and no change on the broker.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from agent.cli.common import EXIT_OK, Commands, UsageError
from agent.config.models import ID_RX

#: Where the README's examples keep a gateway's files.
GATEWAY_DIR = "/etc/energy-agent"
INSTALL_HINT = (
    "needs the Python package `cryptography`: install it with "
    "`pip install 'energy-agent[certs]'` (or `pip install cryptography`) "
    "into the environment energy-agent runs from"
)


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "certs",
        help="pilot CA, broker and gateway certificates for MQTT over TLS",
        description="A small CA for a pilot: create it (init), then the broker's certificate "
        "(server) and one per gateway or service (client). A gateway's identity SITE/NAME is "
        "its MQTT username, which the shipped broker ACL is built on.",
    )
    certs = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser, days: int) -> None:
        q.add_argument("--dir", required=True, type=Path, help="where the CA and certificates live")
        q.add_argument(
            "--days",
            type=int,
            default=days,
            metavar="N",
            help=f"validity in days (default {days})",
        )
        q.add_argument("--force", action="store_true", help="replace existing files")
        q.set_defaults(handler=run_certs)

    q = certs.add_parser("init", help="create the CA (ca.pem, ca.key)")
    common(q, 3650)
    q.add_argument(
        "--cn",
        default="energy-agent pilot CA",
        help="the CA's common name (default: energy-agent pilot CA)",
    )

    q = certs.add_parser("server", help="the broker's certificate (server.pem, server.key)")
    common(q, 825)
    q.add_argument(
        "--host", action="append", default=[], metavar="DNS", help="a name clients connect to"
    )
    q.add_argument(
        "--ip", action="append", default=[], metavar="IP", help="an address clients connect to"
    )

    q = certs.add_parser(
        "client",
        help="a gateway's certificate (--site S --name G: identity S/G) or a service's "
        "(--name bridge)",
    )
    common(q, 825)
    q.add_argument("--name", required=True, help="gateway id (with --site), or a service name")
    q.add_argument("--site", help="the gateway's site id: the identity becomes SITE/NAME")


def _id(value: str, option: str) -> str:
    if not ID_RX.match(value):
        raise UsageError(
            f"{option} '{value}': use lower-case letters, digits, '-' and '_', starting "
            "with a letter or digit (the same ids as site.id and gateway.id)"
        )
    return value


def _ips(values: list[str]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_address(v))
        except ValueError:
            raise UsageError(f"--ip '{v}' is not an IP address (e.g. 192.0.2.10)") from None
    return tuple(out)


def run_certs(args: argparse.Namespace) -> int:
    try:
        from agent import pki
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "cryptography":
            raise
        raise UsageError(INSTALL_HINT) from exc
    directory: Path = args.dir
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {directory} is not a directory")
    overwrite = pki.Overwrite.REPLACE if args.force else pki.Overwrite.REFUSE
    try:
        if args.certs_command == "init":
            done = pki.create_ca(directory, args.cn, args.days, overwrite)
            print(f"CA '{done.common_name}': {done.cert} (give to brokers and gateways)")
            print(f"CA key: {done.key} (keep offline; it signs every identity)")
            return EXIT_OK
        if args.certs_command == "server":
            hosts = tuple(args.host)
            ips = _ips(args.ip)
            if not hosts and not ips:
                raise UsageError("give the name(s) clients connect to: --host DNS and/or --ip IP")
            cn = hosts[0] if hosts else str(ips[0])
            done = pki.issue(
                directory, "server", cn, pki.Purpose.SERVER,
                dns=hosts, ips=ips, days=args.days, overwrite=overwrite,
            )  # fmt: skip
            names = ", ".join([*hosts, *map(str, ips)])
            print(f"broker certificate for {names}: {done.cert}, key {done.key}")
            return EXIT_OK
        name = _id(args.name, "--name")
        if args.site is not None:
            identity, stem = f"{_id(args.site, '--site')}/{name}", f"{args.site}.{name}"
        else:
            identity, stem = name, name
        done = pki.issue(
            directory, stem, identity, pki.Purpose.CLIENT, days=args.days, overwrite=overwrite
        )
    except pki.PkiError as exc:
        raise UsageError(str(exc)) from exc
    print(f"client certificate for identity '{identity}' (its MQTT username): {done.cert}")
    print(f"key: {done.key} (copy to that machine only, keep mode 0600)")
    print(
        f"on that machine, as {GATEWAY_DIR}/ca.pem, mqtt.pem and mqtt.key, with:\n"
        f"  mqtt: {{port: 8883, tls: {{ca: {GATEWAY_DIR}/ca.pem, "
        f"cert: {GATEWAY_DIR}/mqtt.pem, key: {GATEWAY_DIR}/mqtt.key}}}}"
    )
    return EXIT_OK
