"""Alarms end to end: a simulated meter stops answering (fault injection), the agent (a
subprocess) raises an ``offline`` alarm, then clears it when the meter answers again.

Real parts on loopback, each stopped at the end: mosquitto, the in-process Modbus
simulator whose ``Faults`` the test switches, ``energy-agent run``, a recording
paho subscriber, a fresh subscriber that must get the retained message, and a
stdlib HTTP server receiving the webhook (it answers its first POST with 500,
so the agent must retry).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.contract.models import AlarmModel
from drivers.simulator.meter import Faults
from tests.support.mqtt import Received, Subscriber, agent_config, have_mosquitto, wait_until
from tests.support.run_rig import Rig, tcp_bus
from tests.support.simulators import Simulators
from tests.support.webhook import Receiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]

ALARMS = "energy/v1/plant-t/gw-t/alarms"
#: 3 s: the rule's minutes, small enough for a test.
OFFLINE_MIN = 0.05


@pytest.fixture
async def rig(
    tmp_path: Path, cli: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, list(cli.command), tmp_path_factory.mktemp("numba-cache"))
    try:
        yield r
    finally:
        print(r.report())  # shown by pytest when the test failed
        await r.close()


def alarms(sub: Subscriber) -> list[Received]:
    return [m for m in sub.received() if m.topic == ALARMS]


async def test_an_offline_meter_raises_and_clears_retained_and_by_webhook(
    rig: Rig, simulators: Simulators
) -> None:
    broker = await rig.broker()
    sim = await simulators.start(
        simulators.tcp_endpoint(), {1: "eastron-sdm630", 2: "eastron-sdm630"}, frozen=False
    )
    rules = [{"id": "meter-off", "condition": "offline", "minutes": OFFLINE_MIN}]
    with Receiver([500]).serving() as hook:
        config = agent_config(
            rig.tmp,
            buses=[tcp_bus("line-a", sim, timeout_s=0.3, retries=0)],
            devices=[{"id": "main", "bus": "line-a", "unit": 1, "profile": "eastron-sdm630"},
                     {"id": "press", "bus": "line-a", "unit": 2, "profile": "eastron-sdm630",
                      "parent": "main"}],
            mqtt={"host": "127.0.0.1", "port": broker.port},
            alarms={"rules": rules, "webhook": {"url": hook.url, "timeout_s": 2}},
        )  # fmt: skip
        agent = rig.agent(config).start()
        live = await rig.subscriber(broker.port, "live")
        await wait_until(
            lambda: any(m.kind == "measurements" and "/press/" in m.topic
                        for m in live.received()), 60, "press's first poll",
        )  # fmt: skip
        assert alarms(live) == []  # both answer: nothing raised

        # The fault: press stops answering. 3 s later (its last answer + OFFLINE_MIN):
        sim.models[2].faults = Faults(timeout=1.0)
        await live.wait_for(lambda _: len(alarms(live)) == 1, 30, "the raise")
        raised = alarms(live)[0].json()
        AlarmModel.model_validate(raised, strict=True)
        assert (raised["rule"], raised["subject"], raised["state"]) == (
            "meter-off", "press", "raised"
        )  # fmt: skip
        assert raised["value"] >= OFFLINE_MIN and raised["limit"] == OFFLINE_MIN
        assert [a["subject"] for a in raised["active"]] == ["press"]
        assert raised["text"].startswith("press has not answered for")

        # A subscriber that comes now gets it retained.
        fresh = await rig.subscriber(broker.port, "fresh", topic=ALARMS)
        await fresh.wait_for(lambda ms: len(ms) == 1, 10, "the retained raise")
        (retained,) = fresh.received()
        assert retained.retain and retained.json() == raised

        # The webhook: its first POST got 500; the retry brought the same body.
        await wait_until(lambda: len(hook.bodies) == 1, 20, "the raise by webhook")
        assert hook.refused == 1 and hook.bodies[0] == raised

        # The meter answers again: cleared, retained, by webhook.
        sim.models[2].faults = Faults()
        await live.wait_for(lambda _: len(alarms(live)) == 2, 90, "the clear")
        cleared = alarms(live)[1].json()
        assert (cleared["subject"], cleared["state"], cleared["active"]) == (
            "press", "cleared", []
        )  # fmt: skip
        assert cleared["text"] == "meter-off cleared for press"
        await wait_until(lambda: len(hook.bodies) == 2, 20, "the clear by webhook")
        assert hook.bodies[1] == cleared
        later = await rig.subscriber(broker.port, "later", topic=ALARMS)
        await later.wait_for(lambda ms: len(ms) == 1, 10, "the retained clear")
        assert later.received()[0].retain and later.received()[0].json() == cleared

        assert agent.running, rig.report()
        assert await agent.terminate() == 0, rig.report()
        assert "alarm meter-off/press raised" in agent.output()
