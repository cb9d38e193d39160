"""Topics built from the kinds and read back: a round trip, and nothing else matches."""

from __future__ import annotations

import pytest
from paho.mqtt.client import topic_matches_sub

from agent.contract import (
    KINDS,
    Message,
    MessageKind,
    Scope,
    TopicError,
    TopicRef,
    Topics,
    parse_topic,
    subscription_filters,
)

T = Topics("energy/v1", "plant-a", "gw-01")


def device_of(kind: MessageKind) -> str | None:
    return "press-1" if KINDS[kind].scope is Scope.DEVICE else None


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_kind_round_trips(kind: MessageKind) -> None:
    m = T.message(kind, {"ts": 1}, device_of(kind))
    assert m.kind is kind and m.device == device_of(kind)
    assert parse_topic(m.topic) == TopicRef(kind, "plant-a", "gw-01", device_of(kind))


def test_the_topics_are_the_documented_ones() -> None:
    assert [T.topic(k, device_of(k)) for k in MessageKind] == [
        "energy/v1/plant-a/gw-01/status",
        "energy/v1/plant-a/gw-01/press-1/status",
        "energy/v1/plant-a/gw-01/press-1/measurements",
        "energy/v1/plant-a/gw-01/press-1/energy",
        "energy/v1/plant-a/gw-01/intensity",
        "energy/v1/plant-a/gw-01/press-1/events",
        "energy/v1/plant-a/gw-01/ledger",
        "energy/v1/plant-a/gw-01/alarms",
    ]


def test_a_topic_needs_a_device_exactly_when_the_kind_is_a_devices() -> None:
    with pytest.raises(ValueError, match="device"):
        T.topic(MessageKind.ENERGY)
    with pytest.raises(ValueError, match="device"):
        T.topic(MessageKind.INTENSITY, "press-1")


def test_the_filters_match_every_kind_and_nothing_else() -> None:
    filters = subscription_filters("energy/v1")
    for kind in MessageKind:
        topic = T.topic(kind, device_of(kind))
        assert sum(topic_matches_sub(f, topic) for f in filters) == 1, topic
    for other in (
        "energy/v1/plant-a/gw-01/press-1/intensity",
        "energy/v1/plant-a/gw-01/energy",
        "energy/v1/plant-a/gw-01/press-1/x/energy",
        "energy/v2/plant-a/gw-01/status",
    ):
        assert not any(topic_matches_sub(f, other) for f in filters), other
        with pytest.raises(TopicError):
            parse_topic(other)


def test_an_unknown_topic_says_what_is_expected() -> None:
    with pytest.raises(TopicError) as e:
        parse_topic("energy/v1/plant-a/gw-01/press-1/intensity")
    assert str(e.value) == (
        "unknown topic (expected {site}/{gateway}/status|intensity|ledger|alarms or "
        "{site}/{gateway}/{device}/status|measurements|energy|events under the prefix)"
    )


def test_a_bad_id_is_named() -> None:
    with pytest.raises(TopicError, match="device id 'Press' does not match"):
        parse_topic("energy/v1/plant-a/gw-01/Press/energy")


def test_a_message_read_back_from_replay_output_knows_its_kind() -> None:
    line = {"topic": "energy/v1/plant-a/gw-01/press-1/energy", "payload": {"ts": 5}}
    m = Message.from_json_line(line)
    assert (m.kind, m.device, m.as_json_line()) == (MessageKind.ENERGY, "press-1", line)
