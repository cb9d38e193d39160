"""systemd's notify protocol, without the systemd Python package.

With ``Type=notify`` systemd counts the agent as started only after ``READY=1``
(so ``systemctl start`` returns once the core is compiled and the buses are
being polled, not when the interpreter has merely started), and with
``WatchdogSec=`` it restarts an agent whose event loop stopped turning: a
process that is alive but hung is the failure a plain ``Restart=`` never sees.
The bridge uses it the same way (:mod:`agent.bridge.app`), which is why it lives
outside :mod:`agent.runtime`: the bridge imports nothing of the gateway's runtime.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named
in ``$NOTIFY_SOCKET``; a leading ``@`` names a socket in the abstract namespace.
Outside systemd the variable is unset and every call does nothing, so the
agent runs the same in a terminal, in a container and in the tests.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from enum import StrEnum

log = logging.getLogger(__name__)


class State(StrEnum):
    READY = "READY=1"
    STOPPING = "STOPPING=1"
    WATCHDOG = "WATCHDOG=1"


class Notifier:
    """Sends notifications to the service manager that started this process, if any."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            # Abstract namespace: the name starts with a NUL byte instead of the "@".
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        elif path:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying", path)
        self.watchdog_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *states: State, status: str | None = None) -> bool:
        """Send the states (and a one-line ``STATUS=``) in one datagram; True if sent.

        A failure is logged and swallowed: a service manager that went away must not
        stop the agent from polling meters.
        """
        if self.address is None:
            return False
        lines = [str(s) for s in states]
        if status is not None:
            lines.append("STATUS=" + " ".join(status.split()))
        if not lines:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify the service manager at %r: %s", self.address, exc)
            return False
        return True


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd set for this very process, as sd_watchdog_enabled()
    advises; None when there is no watchdog (or it is meant for another process)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
