"""The terminal's language and clock: which language a command speaks, and how it
writes a time of the site.

Language: ``--lang`` when given, else the locale the shell exports (``LC_ALL``,
then ``LC_MESSAGES``, then ``LANG``, as POSIX orders them), so that a gateway
set up with ``LANG=zh_CN.UTF-8`` answers in Chinese without an option; anything
that is not Chinese is English (:func:`agent.i18n.resolve`). Error messages on
stderr and the logs stay English: they are searched for and pasted into issues.

Times: on the site's clock (``site.timezone``, the zone "today" is counted in),
24-hour, with the zone's offset, whatever the zone of the terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import i18n

LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


def add_lang_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lang",
        metavar="LANG",
        help=f"language of the output: {' or '.join(i18n.LANGUAGES)} "
        "(default: from LC_ALL, LC_MESSAGES or LANG; English unless Chinese)",
    )


def language(given: str | None, env: Mapping[str, str] | None = None) -> str:
    """The shipped language for ``--lang`` (when given) or the locale's environment."""
    if given:
        return i18n.resolve(given)
    env = os.environ if env is None else env
    for name in LOCALE_VARIABLES:
        value = env.get(name)
        if value:  # the first one set decides, as for every program on the machine
            return i18n.resolve(value.partition(".")[0])
    return i18n.DEFAULT


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def site_time(ms: int, zone: str) -> str:
    """``HH:MM:SS`` of ``ms`` on the site's clock."""
    return dt.datetime.fromtimestamp(ms / 1000, _zone(zone)).strftime("%H:%M:%S")


def zone_label(ms: int, zone: str) -> str:
    """``Asia/Shanghai (UTC+08:00)``: the zone and its offset at ``ms``."""
    offset = dt.datetime.fromtimestamp(ms / 1000, _zone(zone)).strftime("%z")
    return f"{zone} (UTC{offset[:3]}:{offset[3:]})"
