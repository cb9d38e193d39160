"""Two agents with the same client id against a real mosquitto: each knocks the other off
every second. The link recognises it, says why in the log and in its state, and the
status's health names it even in the moments the link is connected."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config.common import Mqtt
from agent.mqttclient import TAKEOVER
from agent.runtime.mqtt import MqttLink
from agent.runtime.status import _link_problems
from agent.status import LinkStatus
from tests.support.cli import free_port
from tests.support.mqtt import Broker, have_mosquitto, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
]

CLIENT_ID = "energy-agent-plant-x-gw-1"


async def test_two_clients_with_one_id_are_recognised_and_explained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    settings = Mqtt(host="127.0.0.1", port=broker.port)
    links = [MqttLink(settings, client_id=CLIENT_ID, will=None, birth=None) for _ in range(2)]
    caplog.set_level(logging.INFO, logger="agent.runtime.mqtt")
    try:
        for link in links:
            link.start()
        await wait_until(
            lambda: all(link.state.last_error.startswith(TAKEOVER) for link in links),
            30,
            "both links to recognise the takeover",
        )
        # the broker saw it too: the clash is real, not a guess of ours
        assert f"Client {CLIENT_ID} already connected, closing old connection" in broker.logs()
        for link in links:
            assert link.state.disconnects >= 3
            assert f"'{CLIENT_ID}'" in link.state.last_error
            assert "gateway.id" in link.state.last_error
        explained = [r for r in caplog.records if TAKEOVER in r.getMessage()]
        assert 1 <= len(explained) <= 2  # once per link and minute, not every second
        # status: a problem whether the link is up or down at this instant
        for connected in (True, False):
            status = LinkStatus(connected, "127.0.0.1:1883", links[0].state.last_error, 5, 4)
            assert [p for p in _link_problems(status) if TAKEOVER in p], connected
    finally:
        for link in links:
            await link.stop()
        await broker.stop()


async def test_a_lone_client_is_not_taken_over(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    link = MqttLink(Mqtt(host="127.0.0.1", port=broker.port), client_id=CLIENT_ID, will=None,
                    birth=None)  # fmt: skip
    try:
        link.start()
        await wait_until(lambda: link.state.connected, 10, "the connection")
        await link.stop()
        link.start()  # our own disconnect and a reconnect: no takeover
        await wait_until(lambda: link.state.connected, 10, "the reconnection")
        assert link.state.last_error == ""
        assert _link_problems(LinkStatus(True, "x", None, 2, 1)) == []
    finally:
        await link.stop()
        await broker.stop()
