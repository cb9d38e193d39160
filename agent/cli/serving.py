"""What `run` (and the demo) do once a config is loaded: the agent and its live page.

Two things run side by side in one TaskGroup: the :class:`Agent` (polls, core,
outbox, MQTT) and its live page (:class:`HttpServer`: /, /api/state, /events,
/metrics), which knows the agent only by its status snapshot (``agent.status``).
The page never keeps the agent from working: a port it cannot bind is logged
and the agent goes on without it.

Apart from :mod:`agent.cli.run` so that `run` imports this (numpy, the core, asyncio,
paho, pymodbus, the page) only after its config is loaded: parsing a large config
leaves Python's allocator with arenas of empty pools that the imports then fill,
instead of new ones (200 inline meters: 8-9 MB less resident; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agent.config.models import AgentConfig
from agent.http.limits import Limits
from agent.http.server import TICK_S, HttpServer
from agent.mqttclient import MqttConfigError, client_id_of
from agent.runtime.agent import Agent, now_ms
from drivers.profile import ProfileLibrary

log = logging.getLogger("agent.run")


def run_loaded(config: AgentConfig, config_file: str) -> int:
    """Run the agent of a loaded, accepted config until it stops; the exit code."""
    try:
        agent = Agent(config, ProfileLibrary(), config_file=Path(config_file).resolve())
        # Compiled here, not at the agent's start (where it is then instant), so that the
        # first close said below is the one after the first poll.
        agent.warm_up()
        for line in start_lines(agent, now_ms()):
            log.info("%s", line)
        asyncio.run(_main(agent))
    except MqttConfigError as exc:
        print(f"error: {config_file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # Messages that could be neither stored nor sent were lost at the exit (said in the
    # log): a failed stop, so that systemd and whoever reads its status see it.
    return EXIT_FAILED if agent.lost_at_exit else EXIT_OK


def start_lines(agent: Agent, now: int) -> list[str]:
    """What `run` is about to do, said before it does it: buses, devices, broker, page,
    and when the first record closes (an engineer otherwise watches a silent terminal)."""
    config = agent.config
    lines = []
    for bus in config.buses:
        devices = [d for d in config.devices if d.bus == bus.id]
        listed = ", ".join(
            f"{d.id} (unit {d.unit}, {d.profile or 'inline registers'}, every {d.interval_s:g} s)"
            for d in devices
        )
        lines.append(f"bus {bus.id}: {bus.endpoint().describe()}: {listed}")
    mqtt = config.mqtt
    if mqtt is not None:
        tls = "TLS" if mqtt.tls is not None else "no TLS"
        client_id = client_id_of(mqtt, config.site.id, config.gateway.id)
        lines.append(
            f"broker {mqtt.host}:{mqtt.port} ({tls}) as client id {client_id}, "
            f"topics under {agent.status(now).agent.topic_base}/"
        )
    lines.append(f"live page on http://{config.http.listen}/; state in {config.state_dir}")
    end_ms = agent.interval_end_ms(now)
    zone = ZoneInfo(config.site.timezone)
    at = datetime.fromtimestamp(end_ms / 1000, zone)
    lines.append(
        f"first {config.publish.energy_interval_s} s energy records close at "
        f"{at:%H:%M:%S} {at.tzname()} (site time, in {(end_ms - now) / 1000:.0f} s), "
        "(a meter's first record after a fresh start is partial: it was first read inside "
        f"it); the site's intensity waits up to {config.core.site_hold_s:g} s longer for a "
        "late meter"
    )
    return lines


async def _main(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, agent.stop.set)
    await serve(agent)


def live_page(agent: Agent, *, tick_s: float = TICK_S, limits: Limits | None = None) -> HttpServer:
    """The agent's page: its ``http:`` settings, fed from its status, with its metrics.

    The password file was read with the config (``run_refusal`` said if it cannot be).
    """
    return HttpServer.for_status(
        agent.config.http,
        agent.status,
        agent.metrics,
        tick_s=tick_s,
        limits=limits,
        history=agent.ledger.history.path,
    )


async def serve(agent: Agent, *also: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The agent and its live page (and ``also``, e.g. the demo's table) until ``agent.stop``.

    An error of the agent is raised as itself, not wrapped in the TaskGroup's
    ExceptionGroup, so that ``run`` says it the way it says any other.
    """
    page = live_page(agent)

    async def agent_job() -> None:
        try:
            await agent.run()
        finally:
            agent.stop.set()  # the page and the others end with the agent

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(agent_job(), name="agent")
            tg.create_task(page.serve(agent.stop), name="http")
            for job in also:
                tg.create_task(job(), name=job.__name__)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
