"""agent.mqttclient.TakeoverWatch: a second client with our id is recognised, a flaky
network or our own disconnect is not. Times in seconds, by hand."""

from __future__ import annotations

from agent.mqttclient import SESSION_TAKEN_OVER, TAKEOVER, UNSPECIFIED, TakeoverWatch


def test_three_quick_drops_in_the_window_are_a_takeover() -> None:
    w = TakeoverWatch("energy-agent-p-g")
    # connected at 0, 2, 4; dropped 1.5 s after each (mosquitto closes the old socket)
    for t in (0.0, 2.0):
        w.connected(t)
        assert w.dropped(UNSPECIFIED, False, t + 1.5) is None
    w.connected(4.0)
    text = w.dropped(UNSPECIFIED, False, 5.5)
    assert text is not None and text.startswith(TAKEOVER)
    assert "3 times in 4 s" in text  # drops at 1.5, 3.5, 5.5
    assert "'energy-agent-p-g'" in text and "gateway.id" in text
    assert w.active(5.5 + 120) and not w.active(5.5 + 120.1)


def test_reason_code_0x8e_is_a_takeover_at_once() -> None:
    w = TakeoverWatch("c")
    w.connected(0.0)
    text = w.dropped(SESSION_TAKEN_OVER, True, 100.0)
    assert text is not None and "reason code 0x8E" in text


def test_long_lived_connections_our_own_disconnect_and_spread_drops_are_not() -> None:
    w = TakeoverWatch("c")
    for t in (0.0, 100.0, 200.0):  # a connection of 31 s: longer than short_s (30)
        w.connected(t)
        assert w.dropped(UNSPECIFIED, False, t + 31.0) is None
    for t in (300.0, 302.0, 304.0):  # our own "Normal disconnection" (reason code 0)
        w.connected(t)
        assert w.dropped(0, False, t + 1.0) is None
    for t in (400.0, 470.0, 540.0):  # quick drops, but 140 s from first to third > 120 s
        w.connected(t)
        assert w.dropped(UNSPECIFIED, False, t + 1.0) is None
    assert w.dropped(UNSPECIFIED, False, 600.0) is None  # never connected since: a failed connect
    assert not w.active(600.0)
