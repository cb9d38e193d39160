"""Every profile round-trips through the simulator: what `read` returns is the simulated truth.

The simulator runs in-process with a frozen clock, so its meter models hold still
and ``model.values()`` is exactly what the registers encode. The reader is the
real CLI in a subprocess (``energy-agent read --json``), over Modbus TCP, over RTU
through a socat pty pair, and once over RTU-over-TCP. Each value must lie within
the resolution of its register (``drivers.decode.resolution``) of the truth: a
wrong scale, word order, address or ratio is off by far more than that.
"""

from __future__ import annotations

import json

import pytest

from drivers.profile import ProfileLibrary
from drivers.simulator.ptypair import PtyPair
from drivers.transport import Framing

pytestmark = pytest.mark.integration

PROFILE_IDS = ProfileLibrary().ids()
#: Not the profiles' default unit 1, so a reader that ignores --unit gets no answer.
UNIT = 7


def _seed(profile_id: str) -> int:
    return 11 + PROFILE_IDS.index(profile_id)


def _read_args(where: list[str], profile_id: str, unit: int = UNIT) -> list[str]:
    return [
        "read",
        *where,
        "--unit",
        str(unit),
        "--profile",
        profile_id,
        "--json",
        "--timeout",
        "2",
    ]


def _check(sim, unit: int, result) -> None:
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    got = json.loads(result.stdout)
    profile = sim.profiles[unit]
    assert set(got) == {q.value for q in profile.quantities}, str(result)
    assert sim.mismatches(unit, got) == [], str(result)


def test_profiles_exist() -> None:
    assert len(PROFILE_IDS) >= 8, PROFILE_IDS


@pytest.mark.parametrize("profile_id", PROFILE_IDS)
async def test_tcp(profile_id: str, simulators, cli) -> None:
    sim = await simulators.start(
        simulators.tcp_endpoint(), {UNIT: profile_id}, seed=_seed(profile_id)
    )
    result = await cli.run_async(*_read_args(["--tcp", sim.address], profile_id))
    _check(sim, UNIT, result)


@pytest.mark.parametrize("profile_id", PROFILE_IDS)
async def test_rtu_through_socat(profile_id: str, simulators, cli, socat_pair: PtyPair) -> None:
    # The simulator sits on one end of the virtual cable with the profile's serial
    # settings; `read` opens the other end with no serial flags: the profile's defaults.
    endpoint = simulators.serial_endpoint(socat_pair.b, profile_id)
    sim = await simulators.start(endpoint, {UNIT: profile_id}, seed=_seed(profile_id))
    where = ["--rtu", socat_pair.a]
    if endpoint.parity != sim.profiles[UNIT].serial.parity:
        where += ["--parity", endpoint.parity]  # this kernel's pty refuses the profile's parity
    result = await cli.run_async(*_read_args(where, profile_id))
    _check(sim, UNIT, result)


async def test_rtu_over_tcp(simulators, cli) -> None:
    profile_id = "eastron-sdm630"
    sim = await simulators.start(simulators.tcp_endpoint(Framing.RTU_OVER_TCP), {3: profile_id})
    result = await cli.run_async(*_read_args(["--rtu-over-tcp", sim.address], profile_id, 3))
    _check(sim, 3, result)


async def test_two_units_on_one_bus_are_not_mixed_up(simulators, cli) -> None:
    # Same profile, different seeds: a reader answering from the wrong unit disagrees.
    sim = await simulators.start(
        simulators.tcp_endpoint(), {1: "eastron-sdm630", 2: "eastron-sdm630"}, seed=5
    )
    assert sim.truth(1) != sim.truth(2)
    for unit in (1, 2):
        result = await cli.run_async(*_read_args(["--tcp", sim.address], "eastron-sdm630", unit))
        _check(sim, unit, result)
