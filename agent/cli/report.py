"""`energy-agent report`: the period's energy and carbon report as HTML, XLSX and CSV.

Exit codes (docs/report.md): 0 written; 1 the source could not be read (a store
that is down, a damaged history); 2 a wrong argument, config or tariff; 3 no
energy record in the period (an empty period, one before the history starts).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.common import EXIT_FAILED, EXIT_NOTHING, EXIT_OK, Commands, UsageError
from agent.config import load_config
from agent.contract import DEFAULT_PREFIX
from agent.i18n import LANGUAGES

if TYPE_CHECKING:
    from agent.config.models import AgentConfig
    from agent.report.period import Period
    from agent.report.sources import Source


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "report",
        help="the period's energy and carbon report (HTML, XLSX, CSV) from history or store",
        description="Totals, per device, tree level, line and product; scope 1 and 2 CO2, "
        "standard coal, per-unit figures, peak demand, coverage, time-of-use cost, baseline "
        "and targets, and the ledger's verification of every hour (docs/report.md). Exit 0 "
        "written, 1 source unreadable, 2 wrong input, 3 no record in the period.",
    )
    p.add_argument(
        "--period",
        metavar="PERIOD",
        help="2026 (a year), 2026-11 (a month), 2026-W47 (an ISO week) or "
        "2026-11-01..2026-11-15 (days, both included), in the site's time zone",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "-c", "--config", metavar="FILE",
        help="the gateway's config: site, zone, devices and their tree, factors, and the "
        "`report:` section (lines, products, tariff, baseline, targets)",
    )  # fmt: skip
    which.add_argument(
        "--configs",
        type=Path,
        metavar="DIR",
        help="with --influx: a report for every gateway whose config (*.yaml) is in DIR, "
        "each into --out/SITE/GATEWAY (the central side's monthly run)",
    )
    p.add_argument(
        "--due",
        action="store_true",
        help="instead of --period: write the ended days and months of report.schedule that "
        "have no report yet to state_dir/reports/ from the history (run it daily)",
    )
    p.add_argument(
        "--now-ms",
        type=int,
        metavar="MS",
        help="--due: take this time (Unix ms) as now, e.g. to make up reports further back",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--history", type=Path, metavar="STATE_DIR", help="the gateway's own history (state_dir)"
    )
    src.add_argument(
        "--jsonl", type=Path, metavar="FILE", help="records as `replay` or `history export` write"
    )
    src.add_argument(
        "--influx",
        metavar="URL",
        help="the central store: VictoriaMetrics (export API), or InfluxDB 2 with --bucket",
    )
    p.add_argument("--org", help="--influx, InfluxDB 2: the organisation")
    p.add_argument("--bucket", help="--influx: read InfluxDB 2 with Flux from this bucket")
    p.add_argument("--token-file", type=Path, metavar="FILE", help="--influx, InfluxDB 2: token")
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="--jsonl of a `history export`: the gateway's public key, to verify its ledger",
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="folder to write (default report-PERIOD)"
    )
    p.add_argument(
        "--lang", choices=LANGUAGES, default="en", help="the report's language (default en)"
    )
    p.set_defaults(handler=run_report)


def _source(args: argparse.Namespace, site: str, gateway: str, prefix: str) -> Source:
    from agent.report.sources import HistorySource, JsonLinesSource, StoreSource

    if args.history is not None:
        return HistorySource(args.history, prefix=prefix)
    if args.jsonl is not None:
        keys = None
        if args.public_key is not None:
            from agent.cli.verify import read_public_keys

            keys = read_public_keys(args.public_key)
        return JsonLinesSource(args.jsonl, prefix=prefix, public_keys=keys)
    if args.bucket is None:
        from agent.store.victoria import VictoriaMetricsStore

        return StoreSource(
            VictoriaMetricsStore(args.influx), f"VictoriaMetrics {args.influx}",
            site=site, gateway=gateway,
        )  # fmt: skip
    if args.org is None or args.token_file is None:
        raise UsageError("--bucket (InfluxDB 2) needs --org and --token-file")
    from agent.config.secrets import read_secret
    from confdoc.errors import FileRefused

    try:
        # The secret-file rule of the config (agent/config/secrets.py): the first line.
        token = read_secret(args.token_file)
    except FileRefused as exc:
        raise UsageError(f"--token-file {args.token_file}: {exc}") from None
    from agent.store.flux import FluxStore

    store = FluxStore(args.influx, org=args.org, bucket=args.bucket, token=token)
    return StoreSource(store, f"InfluxDB {args.influx} {args.bucket}", site=site, gateway=gateway)


def _period_and_source(args: argparse.Namespace, config: AgentConfig) -> tuple[Period, Source]:
    """``--period`` in the config's zone and the source of its gateway's records."""
    from agent.report import ReportError
    from agent.report.period import parse_period

    prefix = config.mqtt.prefix if config.mqtt is not None else DEFAULT_PREFIX
    try:
        period = parse_period(args.period, config.site.timezone)
        return period, _source(args, config.site.id, config.gateway.id, prefix)
    except ReportError as exc:
        raise UsageError(str(exc)) from None


def run_report(args: argparse.Namespace) -> int:
    if args.influx is None and (args.bucket or args.org or args.token_file):
        raise UsageError("--org, --bucket and --token-file go with --influx URL")
    given = args.history or args.jsonl or args.influx
    if args.configs is not None:
        if args.influx is None or args.period is None or args.due:
            raise UsageError("--configs DIR goes with --period and --influx URL (the store)")
        return run_all(args)
    if args.due:
        if args.period or given or args.out:
            raise UsageError("--due takes only -c CONFIG: it reads the config's own history")
        return run_due(args.config, args.now_ms or time.time_ns() // 1_000_000)
    if args.period is None or not given:
        raise UsageError(
            "give --period and one of --history, --jsonl, --influx (or --due -c CONFIG)"
        )
    config = load_config(args.config)
    period, source = _period_and_source(args, config)
    out = args.out or Path(f"report-{period.text.replace('..', '_')}")
    return _one(config, source, period, out, args.lang, Path(args.config))


def _one(
    config: AgentConfig, source: Source, period: Period, out: Path, lang: str, config_file: Path
) -> int:
    from agent.report import NoRecords, ReportError, SourceDown
    from agent.report.build import make_report
    from agent.report.output import write_report

    try:
        report = make_report(
            config, source, period, config_file=config_file, now_ms=time.time_ns() // 1_000_000
        )
        written = write_report(report, out, lang)
    except NoRecords as exc:
        print(f"energy-agent report: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except SourceDown as exc:
        print(f"energy-agent report: cannot read the source: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    finally:
        source.close()
    fig = report.figures
    print(
        f"{period.text}: {fig.records} records of {len(fig.per_device)} devices -> "
        f"{len(written)} files in {out}",
        file=sys.stderr,
    )
    return EXIT_OK


def run_due(config_path: str, now_ms: int) -> int:
    """The scheduled reports (agent/report/schedule.py): each ended period of
    ``report.schedule`` without a report in ``state_dir/reports/`` yet."""
    from agent.report import ReportError
    from agent.report.period import parse_period
    from agent.report.schedule import due
    from agent.report.sources import HistorySource

    config = load_config(config_path)
    rep = config.report
    if not rep.schedule:
        raise UsageError("report.schedule is empty: list `day` and/or `month` to use --due")
    prefix = config.mqtt.prefix if config.mqtt is not None else DEFAULT_PREFIX
    folder = config.state_dir / "reports"
    worst = EXIT_OK
    for text in due(now_ms, config.site.timezone, rep.schedule):
        out = folder / text.replace("..", "_").split("_")[0]
        if (out / "report.html").exists():
            continue
        try:
            source: Source = HistorySource(config.state_dir, prefix=prefix)
        except ReportError as exc:
            raise UsageError(str(exc)) from None
        period = parse_period(text, config.site.timezone)
        code = _one(config, source, period, out, rep.lang, Path(config_path))
        if code == EXIT_FAILED:
            worst = EXIT_FAILED
    return worst


def run_all(args: argparse.Namespace) -> int:
    """Every gateway config in ``--configs``, each from the store into OUT/SITE/GATEWAY.
    Exit 1 if any store read failed, 3 if no gateway had a record, else 0."""
    files = sorted(p for p in args.configs.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    if not files:
        raise UsageError(f"--configs {args.configs}: no *.yaml file there")
    base = args.out or Path(f"report-{args.period.replace('..', '_')}")
    codes = []
    for file in files:
        config = load_config(file)
        period, source = _period_and_source(args, config)
        out = base / config.site.id / config.gateway.id
        print(f"{file.name}: {config.site.id}/{config.gateway.id}", file=sys.stderr)
        codes.append(_one(config, source, period, out, args.lang, file))
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return EXIT_NOTHING if all(c == EXIT_NOTHING for c in codes) else EXIT_OK
