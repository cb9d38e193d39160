"""`status`: the running agent's live picture in a terminal, for SSH sessions on the gateway.

It reads the agent's own /api/state (the document the live page shows) rather
than the state directory or the buses: a second process polling the meters
would fight the agent for the RS-485 line, and the agent already knows
everything. Exit 0 when all is well, 1 when the agent reports a problem (a
failing meter, the MQTT link down, a buffer that grows, a disk that refuses
writes) or cannot be reached, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from agent.cli.common import EXIT_FAILED, EXIT_OK, Commands, UsageError, add_config_arg
from agent.cli.words import add_lang_arg, language, site_time, zone_label
from agent.i18n import Translator

BLOCKS = "▁▂▃▄▅▆▇█"


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "status",
        help="the running agent's health and live values",
        description="Ask the running agent for its state (its /api/state) and show it; exit "
        "0 when all is well, 1 when it reports a problem or cannot be reached.",
    )
    p.add_argument(
        "--url", help="the agent's page, e.g. http://127.0.0.1:8080/ (default: from -c, or that)"
    )
    add_config_arg(p, "take URL and password from a config", required=False)
    p.add_argument("--user", help="basic-auth user (default: the config's, or 'energy')")
    p.add_argument("--password-file", metavar="FILE", help="basic-auth password file")
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds to wait for the agent (default 5)",
    )
    p.add_argument("--json", action="store_true", help="the /api/state document as JSON")
    add_lang_arg(p)
    p.set_defaults(handler=run_status)


def _url_from(args: argparse.Namespace) -> tuple[str, str | None]:
    """The state URL and an Authorization header, from --url or the config's http section."""
    auth: str | None = None
    user = args.user
    password_file = args.password_file
    if args.url:
        base = args.url
    elif args.config:
        from agent.config import load_config

        # only the address and the password file: status needs no MQTT certificates
        http = load_config(args.config, files=False).http
        host = http.host if http.host not in ("0.0.0.0", "::") else "127.0.0.1"
        base = f"http://{f'[{host}]' if ':' in host else host}:{http.port}/"
        password_file = password_file or http.password_file
        user = user or http.username
    else:
        base = "http://127.0.0.1:8080/"
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url: '{base}' is not an http:// or https:// URL")
    if password_file is not None:
        from agent.http.server import read_password

        try:
            password = read_password(password_file)
        except OSError as exc:
            raise UsageError(f"cannot read the password file: {exc}") from None
        token = base64.b64encode(f"{user or 'energy'}:{password}".encode()).decode()
        auth = f"Basic {token}"
    return base.rstrip("/") + "/api/state?history=1", auth


def fetch_state(url: str, auth: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if auth:
        req.add_header("Authorization", auth)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        doc: dict[str, Any] = json.loads(resp.read().decode("utf-8"))
        return doc


def _n(v: object, digits: int) -> str:
    return "—" if not isinstance(v, int | float) else f"{v:,.{digits}f}"


def _spark(points: list[list[float]], width: int = 24) -> str:
    if len(points) < 2:
        return ""
    vals = [p[1] for p in points]
    # the last `width` buckets, each the mean of its points
    step = max(1, len(vals) // width + (len(vals) % width > 0))
    means = [sum(vals[i : i + step]) / len(vals[i : i + step]) for i in range(0, len(vals), step)]
    lo, hi = min(means), max(means)
    if hi - lo < 1e-9:
        return BLOCKS[3] * len(means)
    return "".join(BLOCKS[int((v - lo) / (hi - lo) * (len(BLOCKS) - 1))] for v in means)


def _ago(t: Translator, s: object) -> str:
    if not isinstance(s, int | float):
        return t("status.never")
    if s < 60:
        return t("status.ago_s", n=f"{s:.1f}")
    if s < 3600:
        return t("status.ago_min", m=int(s // 60), s=int(s % 60))
    return t("status.ago_h", h=f"{s / 3600:.1f}")


def render(doc: dict[str, Any], lang: str | None = None, url: str | None = None) -> Group:
    """The page's picture as rich renderables: header, alerts, site, demand, devices, in
    ``lang`` (default English), times on the site's clock."""
    t = Translator(lang)
    site = doc["site"]
    return Group(
        *_header(t, doc, url),
        _site_table(t, site, doc["agent"].get("timezone") or "UTC"),
        _demand_table(t, site["demand"]),
        _devices_table(t, doc["devices"], (doc.get("history") or {}).get("power_kw", {})),
    )


def _header(t: Translator, doc: dict[str, Any], url: str | None) -> list[Text]:
    """Who, whether all is well and every problem, then the link, the disk and the buffer."""
    a, mqtt, buf = doc["agent"], doc["mqtt"], doc["buffer"]
    health = (
        Text(t("status.all_ok"), style="bold green")
        if doc["health"]["state"] == "ok"
        else Text(t("status.attention"), style="bold red")
    )
    who = t("status.who", site=a["site"], gateway=a["gateway"], version=a["version"])
    lines = [
        Text.assemble(
            (f"{a['site_name']}", "bold"),
            f"  {who}" + (t("status.no_numba") if a.get("core") == "python" else "") + "  ",
            health,
        )
    ]
    zone = a.get("timezone") or "UTC"
    lines.append(
        Text(
            t(
                "status.read_from",
                url=url or "?",
                time=site_time(doc["ts"], zone),
                zone=zone_label(doc["ts"], zone),
            ),
            style="dim",
        )
    )
    lines += [Text(f"  ! {problem}", style="bold red") for problem in doc["health"]["problems"]]
    lines += _alarms(t, doc.get("alarms"), zone)
    why = f": {mqtt['last_error']}" if mqtt["last_error"] else ""
    link = (
        Text(t("status.mqtt_ok"), style="green")
        if mqtt["connected"]
        else Text(t("status.mqtt_down", broker=mqtt["broker"], error=why), style="bold red")
    )
    storage = doc.get("storage") or {"ok": True}
    disk = (
        Text(t("status.disk_ok"), style="green")
        if storage["ok"]
        else Text(t("status.storage_failing", n=storage["unstored"]), style="bold red")
    )
    waiting = (
        t("status.buffer", n=f"{buf['depth']:,}")
        + (t("status.buffer_oldest", s=f"{buf['oldest_age_s']:.0f}") if buf["oldest_age_s"] else "")
        + (t("status.buffer_growing") if buf["growing"] else "")
    )
    lines.append(
        Text.assemble(
            link,
            "   ",
            disk,
            "   ",
            (waiting, "bold yellow" if buf["alarm"] else ""),
            "   " + t("status.acked", n=f"{buf['acked']:,}"),
        )
    )
    return lines + _ledger(t, doc.get("ledger"))


def _alarms(t: Translator, alarms: object, zone: str) -> list[Text]:
    """The alarms the agent raised (an agent without alarms sends none: nothing shown)."""
    if not isinstance(alarms, list) or not alarms:
        return []
    out = [Text(t("status.alarms", n=len(alarms)), style="bold red")]
    for a in alarms:
        since = site_time(a["since_ms"], zone) if isinstance(a.get("since_ms"), int) else "?"
        text = t(
            "status.alarm",
            subject=a.get("subject") or a.get("rule"),
            text=a.get("text") or a.get("rule"),
            since=since,
        )
        out.append(Text(f"  ! {text}", style="bold red"))
    return out


def _ledger(t: Translator, ledger: dict[str, Any] | None) -> list[Text]:
    """The ledger in one line, and the history's size warning if there is one."""
    if ledger is None:
        return []  # an agent from before the ledger
    if ledger["on"]:
        line = Text(
            t(
                "status.ledger_on",
                seq=ledger["seq"],
                period=ledger["period_s"],
                key=ledger["key_id"],
            ),
            style="green",
        )
    else:
        line = Text(t("status.ledger_off", reason=ledger["reason"]), style="yellow")
    warning = ledger["history"].get("warning")
    return [line] + ([Text(f"  ! {warning}", style="bold yellow")] if warning else [])


def _site_table(t: Translator, site: dict[str, Any], zone: str) -> Table:
    it, hour, today = site["intensity"] or {}, site["intensity_1h"] or {}, site["today"] or {}
    summary = Table(title=t("status.site"), title_justify="left", show_header=True)
    summary.add_column("", justify="left")
    summary.add_column(t("status.col_value"), justify="right")
    summary.add_column(t("status.col_unit"), justify="left")
    g_kwh = "g CO₂/kWh"
    summary.add_row(t("status.intensity_15m"), _n(it.get("intensity_g_per_kwh"), 0), g_kwh)
    summary.add_row(t("status.co2_per_unit"), _n(it.get("kgco2_per_unit"), 3), "kg")
    summary.add_row(t("status.energy_per_unit"), _n(it.get("kwh_per_unit"), 3), "kWh")
    summary.add_row(t("status.intensity_1h"), _n(hour.get("intensity_g_per_kwh"), 0), g_kwh)
    summary.add_row(
        t("status.power_now") + ("" if site["power_complete"] else t("status.incomplete")),
        _n(site["power_kw"], 1),
        "kW",
    )
    summary.add_row(t("status.today_energy"), _n(today.get("energy_kwh"), 1), "kWh")
    summary.add_row(t("status.today_co2"), _n(today.get("co2_kg"), 1), "kg")
    summary.add_row(t("status.today_coal"), _n(today.get("tce"), 4), "tce")
    summary.add_row(t("status.demand_now"), _n(site["demand"]["now_kw"], 1), "kW")
    notes = []
    if isinstance(it.get("ts"), int):
        notes.append(t("status.interval_end", time=site_time(it["ts"], zone)))
    held = site.get("held")
    if held:
        notes.append(
            t(
                "status.held",
                time=site_time(held["end_ms"], zone),
                meters=", ".join(held["waiting_for"]),
                until=site_time(held["until_ms"], zone),
            )
        )
    if notes:
        summary.caption = "\n".join(notes)
        summary.caption_justify = "left"
    return summary


def _demand_table(t: Translator, demand: dict[str, Any]) -> Table:
    table = Table(title=t("status.demand_title"), title_justify="left")
    table.add_column(t("status.col_meter"))
    table.add_column(t("status.col_now"), justify="right")
    table.add_column(t("status.col_peak"), justify="right")
    table.add_column(t("status.col_share"), justify="right")
    period = demand["period_min"]
    for m in demand["meters"]:
        have = m.get("window_min")
        if have is not None and have < period:
            share = t("status.warming_up", have=have, period=period)  # not "100 %" of itself
        elif m["now_kw"] is not None and m["peak_kw"]:
            share = f"{100 * m['now_kw'] / m['peak_kw']:.0f} %"
        else:
            share = ""
        table.add_row(m["device"], _n(m["now_kw"], 1), _n(m["peak_kw"], 1), share)
    return table


def _devices_table(t: Translator, devices: list[dict[str, Any]], history: dict[str, Any]) -> Table:
    table = Table(title=t("status.devices"), title_justify="left")
    for col, just in (
        ("col_device", "left"),
        ("col_status", "left"),
        ("col_last", "right"),
        ("col_power", "right"),
        ("col_spark", "left"),
        ("col_counter", "right"),
    ):
        table.add_column(t(f"status.{col}"), justify=just)  # type: ignore[arg-type]
    for d in devices:
        if d["state"] == "ok":
            status = Text(t("status.ok"), style="green")
        elif d["state"] == "error":
            status = Text(t("status.error", reason=d["reason"] or "").strip(), style="bold red")
        else:
            status = Text(t("status.waiting"), style="yellow")
        main = d["main"]
        table.add_row(
            ("└ " if d["parent"] else "") + d["id"],
            status,
            _ago(t, d["age_s"]),
            _n(d["power_kw"], 2),
            _spark(history.get(d["id"], [])),
            "" if main["value"] is None else f"{main['value']:,.2f} {main['unit']}",
        )
    return table


def run_status(args: argparse.Namespace) -> int:
    url, auth = _url_from(args)
    try:
        doc = fetch_state(url, auth, timeout=args.timeout)
    except urllib.error.HTTPError as exc:
        hint = " (give --password-file, or -c with the agent's config)" if exc.code == 401 else ""
        print(f"energy-agent status: {url}: HTTP {exc.code} {exc.reason}{hint}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"energy-agent status: cannot read {url}: {reason} (is the agent running? "
            "see http.listen in its config)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    # Which agent answered: the default port may be another agent's (docs: two on one host).
    source = (
        "--url" if args.url else f"from {args.config}" if args.config else "default; -c or --url"
    )
    if args.json:
        doc.pop("history", None)
        print(json.dumps(doc, indent=2))
        print(f"read {url} ({source})", file=sys.stderr)
    else:
        console = Console() if sys.stdout.isatty() else Console(width=140)
        console.print(render(doc, language(args.lang), f"{url} ({source})"))
    return EXIT_OK if doc["health"]["state"] == "ok" else EXIT_FAILED


__all__ = ["fetch_state", "render", "run_status"]
