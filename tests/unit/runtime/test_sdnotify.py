"""The notify protocol against real AF_UNIX datagram sockets, as systemd listens on them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, State


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_and_status_arrive_in_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.notify(State.READY, status="polling 12 devices,\n outbox 0")
    assert sock.recv(4096).decode().splitlines() == [
        "READY=1",
        "STATUS=polling 12 devices, outbox 0",
    ]


def test_abstract_namespace_socket() -> None:
    name = f"energy-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.notify(State.WATCHDOG)
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.notify(State.READY, status="x")
    assert n.watchdog_s is None


def test_vanished_manager_does_not_raise(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.notify(State.STOPPING)


def test_relative_socket_name_is_refused() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "notify"}).enabled


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "own", 15.0),
        ("30000000", "other", None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    usec: str, pid: str | None, expected: float | None
) -> None:
    env = {"WATCHDOG_USEC": usec}
    if pid == "own":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert Notifier(env).watchdog_s == expected
