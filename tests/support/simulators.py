"""Simulated meters served over real Modbus by the test's own event loop, and the
comparison of what a reader decoded with what the simulator holds.
"""

from __future__ import annotations

import contextlib
import os
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from drivers.decode import resolution
from drivers.profile import Profile, ProfileLibrary
from drivers.quantities import Quantity
from drivers.simulator.meter import Faults, MeterModel
from drivers.simulator.server import SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing
from tests.support.cli import LOOPBACK, free_port

# --- in-process simulators ------------------------------------------------------------------

#: A frozen instant for simulators whose values must not move between reads.
T0 = 1_700_000_000.0
#: Transformer ratios simulated meters report; non-trivial so a reader that ignores
#: a ratio register reads a value off by this factor. Other ratio names get 5.
RATIO_VALUES = {"ct": 40.0, "pt": 10.0}
#: Relative slack on top of the register's resolution (float64 rounding of the scaling).
REL_EPS = 1e-9


def pty_parity(parity: str) -> str:
    """``parity`` if a pseudo-terminal accepts it here, else "N".

    Some kernels (seen on a 6.18 VM kernel) refuse PARENB without PARODD on a pty
    with EINVAL, so pyserial cannot open a pty with even parity there. A pty
    carries bytes, not bits, so parity never matters on it; only opening fails.
    """
    if parity == "N":
        return parity
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[2] |= termios.PARENB
        if parity == "O":
            attrs[2] |= termios.PARODD
        else:
            attrs[2] &= ~termios.PARODD
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except termios.error:
        return "N"
    finally:
        os.close(slave)
        os.close(master)
    return parity


def ratio_values(profile: Profile) -> dict[str, float]:
    return {name: RATIO_VALUES.get(name, 5.0) for name in profile.ratios}


def mismatches(
    profile: Profile,
    got: Mapping[str, float | None],
    truth: Mapping[Quantity, float],
    ratios: Mapping[str, float],
    *,
    rel: float = REL_EPS,
) -> list[str]:
    """Every quantity of ``got`` that is farther from the truth than its register can tell."""
    out = []
    for spec in profile.registers:
        q = spec.quantity
        if q.value not in got:
            continue
        value, true = got[q.value], truth[q]
        tol = resolution(spec, true, ratios) + rel * abs(true)
        if value is None or not abs(value - true) <= tol:
            out.append(f"{q.value}: got {value!r}, truth {true!r} (tolerance {tol:.3g})")
    return out


@dataclass
class Sim:
    """A running simulator: its server and the meter models behind it, by unit id."""

    server: SimulatorServer
    models: dict[int, MeterModel]
    profiles: dict[int, Profile]
    ratios: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def endpoint(self) -> Endpoint:
        return self.server.endpoint

    @property
    def address(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    def truth(self, unit: int) -> dict[Quantity, float]:
        return self.models[unit].values()

    def mismatches(self, unit: int, got: Mapping[str, float | None], **kw: float) -> list[str]:
        return mismatches(self.profiles[unit], got, self.truth(unit), self.ratios[unit], **kw)


class Simulators:
    """Starts in-process SimulatorServers in the test's loop; the fixture stops them all."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.library = ProfileLibrary()
        self._stack = stack

    @staticmethod
    def tcp_endpoint(framing: Framing = Framing.TCP) -> Endpoint:
        return Endpoint(framing, host=LOOPBACK, port=free_port())

    def serial_endpoint(self, device: str, profile_id: str) -> Endpoint:
        """The device end of a pty pair with the profile's serial defaults.

        Where the pty refuses the profile's parity (see :func:`pty_parity`) the
        endpoint says "N"; the caller then passes ``--parity N`` to the reader too.
        """
        s = self.library.get(profile_id).serial
        return Endpoint(
            Framing.RTU,
            device=device,
            baudrate=s.baudrate,
            parity=pty_parity(s.parity),
            stopbits=s.stopbits,
            bytesize=s.bytesize,
        )

    async def start(
        self,
        endpoint: Endpoint,
        meters: Mapping[int, str],
        *,
        seed: int = 1,
        frozen: bool = True,
        faults: Mapping[int, Faults] | None = None,
    ) -> Sim:
        models: dict[int, MeterModel] = {}
        profiles: dict[int, Profile] = {}
        ratios: dict[int, dict[str, float]] = {}
        for i, (unit, profile_id) in enumerate(sorted(meters.items())):
            profile = self.library.get(profile_id)
            profiles[unit] = profile
            ratios[unit] = ratio_values(profile)
            models[unit] = MeterModel(
                profile,
                kind=profile.kind,
                seed=seed + i,
                ratios=dict(ratios[unit]),
                faults=(faults or {}).get(unit, Faults()),
            )
        devices = [SimulatedDevice(u, m) for u, m in models.items()]
        server = SimulatorServer(endpoint, devices, clock=(lambda: T0) if frozen else time.time)
        await self._stack.enter_async_context(server)
        return Sim(server, models, profiles, ratios)
