"""mbpoll (Debian's Modbus client, libmodbus-based, not pymodbus) reads the simulator and agrees.

This checks the simulator and our decoding against an independent implementation
of the protocol and of the word orders: if the simulator encoded a value wrongly
and our reader decoded it with the same mistake, the round trip would still pass,
but mbpoll would disagree.

mbpoll prints ``%g`` (6 significant digits), so its numbers are compared with a
relative tolerance of 1e-5 on top of the register's own resolution.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import pytest

from drivers.decode import resolution
from drivers.quantities import Quantity as Q
from drivers.registers import DataType, RegisterSpec, Table, WordOrder

pytestmark = pytest.mark.integration

#: mbpoll prints 6 significant digits.
MBPOLL_REL = 1e-5
#: ``[72]: 	1023.43``; 16-bit registers above 32767 print as ``36807 (-28729)``.
_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)(?:\s+\(-?\d+\))?\s*$", re.MULTILINE)


@pytest.fixture
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.skip("mbpoll is not installed (apt-get install mbpoll)")
    return path


async def run_mbpoll(mbpoll: str, *args: str, time_limit: float = 15.0) -> dict[int, str]:
    """Run mbpoll once (``-1``), return {reference: printed value}; 0-based refs (``-0``)."""
    proc = await asyncio.create_subprocess_exec(
        mbpoll,
        "-1",
        "-0",
        "-o",
        "2",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(time_limit):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"mbpoll {' '.join(args)} did not finish in {time_limit} s") from None
    text = out.decode()
    assert proc.returncode == 0, f"mbpoll {' '.join(args)} -> {proc.returncode}\n{text}{err!r}"
    values = {int(ref): value for ref, value in _LINE.findall(text)}
    assert values, f"mbpoll printed no values:\n{text}"
    return values


def _table_flag(spec: RegisterSpec, kind: str = "") -> str:
    table = "3" if spec.table is Table.INPUT else "4"
    return f"{table}:{kind}" if kind else table


def _close(value: float, truth: float, spec: RegisterSpec, ratios: dict[str, float]) -> bool:
    tol = resolution(spec, truth, ratios) + MBPOLL_REL * abs(truth)
    return abs(value - truth) <= tol


async def test_sdm630_floats_agree_with_truth_and_with_read(simulators, cli, mbpoll) -> None:
    unit = 5
    sim = await simulators.start(simulators.tcp_endpoint(), {unit: "eastron-sdm630"}, seed=21)
    profile, truth = sim.profiles[unit], sim.truth(unit)
    v1 = profile.spec(Q.VOLTAGE_L1_V)
    energy = profile.spec(Q.ENERGY_IMPORT_KWH)
    assert v1 is not None and energy is not None
    assert v1.type is DataType.FLOAT32 and v1.table is Table.INPUT
    voltages = [profile.spec(q) for q in (Q.VOLTAGE_L1_V, Q.VOLTAGE_L2_V, Q.VOLTAGE_L3_V)]
    assert [s.address for s in voltages if s] == [v1.address, v1.address + 2, v1.address + 4]

    tcp = ["-m", "tcp", "-p", str(sim.endpoint.port), "-a", str(unit)]
    got_v = await run_mbpoll(
        mbpoll, *tcp, "-t", "3:float", "-B", "-r", str(v1.address), "-c", "3", "127.0.0.1"
    )
    got_e = await run_mbpoll(
        mbpoll, *tcp, "-t", _table_flag(energy, "float"), "-B", "-r", str(energy.address),
        "127.0.0.1",
    )  # fmt: skip
    assert sorted(got_v) == [v1.address, v1.address + 2, v1.address + 4]

    result = await cli.run_async(
        "read", "--tcp", sim.address, "--unit", str(unit), "--profile", profile.id, "--json"
    )
    assert result.returncode == 0, str(result)
    read = json.loads(result.stdout)

    for spec in [*voltages, energy]:
        assert spec is not None
        printed = (got_e if spec is energy else got_v)[spec.address]
        value = float(printed) * spec.scale
        assert _close(value, truth[spec.quantity], spec, {}), (spec.quantity, printed)
        assert _close(value, read[spec.quantity.value], spec, {}), (spec.quantity, printed, read)


async def test_abb_b23_uint32_and_uint64_holding(simulators, mbpoll) -> None:
    unit = 9
    sim = await simulators.start(simulators.tcp_endpoint(), {unit: "abb-b23"}, seed=4)
    profile, truth = sim.profiles[unit], sim.truth(unit)
    tcp = ["-m", "tcp", "-p", str(sim.endpoint.port), "-a", str(unit)]

    v1 = profile.spec(Q.VOLTAGE_L1_V)
    assert v1 is not None
    assert (v1.table, v1.address, v1.type) == (Table.HOLDING, 0x5B00, DataType.UINT32)
    # mbpoll's :int is a signed 32-bit integer: fine for a voltage in 0.1 V.
    got = await run_mbpoll(mbpoll, *tcp, "-t", "4:int", "-B", "-r", str(v1.address), "127.0.0.1")
    assert _close(int(got[v1.address]) * v1.scale, truth[Q.VOLTAGE_L1_V], v1, {}), got

    # 64-bit counters: mbpoll has no 64-bit type; read the four raw words and combine
    # them most significant first (ABB's order), independently of drivers.decode.
    energy = profile.spec(Q.ENERGY_IMPORT_KWH)
    assert energy is not None and energy.type is DataType.UINT64
    assert energy.word_order is WordOrder.BIG
    words = await run_mbpoll(
        mbpoll, *tcp, "-t", _table_flag(energy), "-r", str(energy.address), "-c", "4", "127.0.0.1"
    )
    raw = 0
    for address in range(energy.address, energy.address + 4):
        raw = (raw << 16) | (int(words[address]) & 0xFFFF)
    assert _close(raw * energy.scale, truth[Q.ENERGY_IMPORT_KWH], energy, {}), words


async def test_carlo_gavazzi_em24_little_word_order(simulators, cli, mbpoll) -> None:
    unit = 2
    profile_id = "carlo-gavazzi-em24"
    if profile_id not in simulators.library.ids():
        pytest.skip(f"no {profile_id} profile")
    sim = await simulators.start(simulators.tcp_endpoint(), {unit: profile_id}, seed=8)
    profile, truth = sim.profiles[unit], sim.truth(unit)
    little = [
        r for r in profile.registers if r.word_order is WordOrder.LITTLE and r.type.words == 2
    ]
    assert little, "the EM24 profile has CDAB int32 values"
    tcp = ["-m", "tcp", "-p", str(sim.endpoint.port), "-a", str(unit)]
    result = await cli.run_async(
        "read", "--tcp", sim.address, "--unit", str(unit), "--profile", profile_id, "--json"
    )
    assert result.returncode == 0, str(result)
    read = json.loads(result.stdout)
    for spec in little[:3] + [s for s in little if s.quantity is Q.ENERGY_IMPORT_KWH]:
        kind = "float" if spec.type.is_float else "int"
        # Without -B mbpoll uses little-endian word order (CDAB), as the meter does.
        got = await run_mbpoll(
            mbpoll, *tcp, "-t", _table_flag(spec, kind), "-r", str(spec.address), "127.0.0.1"
        )
        value = float(got[spec.address]) * spec.scale
        assert _close(value, truth[spec.quantity], spec, {}), (spec.quantity, got)
        assert _close(value, read[spec.quantity.value], spec, {}), (spec.quantity, got, read)
        # And with big word order (-B) it is a different, wrong number: the test can tell.
        wrong = await run_mbpoll(
            mbpoll, *tcp, "-t", _table_flag(spec, kind), "-B", "-r", str(spec.address),
            "127.0.0.1",
        )  # fmt: skip
        assert not _close(float(wrong[spec.address]) * spec.scale, truth[spec.quantity], spec, {})


async def test_mbpoll_over_rtu_through_socat(simulators, mbpoll, socat_pair) -> None:
    unit = 4
    endpoint = simulators.serial_endpoint(socat_pair.b, "eastron-sdm630")
    sim = await simulators.start(endpoint, {unit: "eastron-sdm630"}, seed=2)
    profile, truth = sim.profiles[unit], sim.truth(unit)
    parity = {"N": "none", "E": "even", "O": "odd"}[endpoint.parity]
    freq = profile.spec(Q.FREQUENCY_HZ)
    v1 = profile.spec(Q.VOLTAGE_L1_V)
    assert freq is not None and v1 is not None
    rtu = ["-m", "rtu", "-b", str(endpoint.baudrate), "-P", parity, "-s", str(endpoint.stopbits)]
    for spec in (v1, freq):
        got = await run_mbpoll(
            mbpoll, *rtu, "-a", str(unit), "-t", _table_flag(spec, "float"), "-B",
            "-r", str(spec.address), socat_pair.a,
        )  # fmt: skip
        assert _close(float(got[spec.address]), truth[spec.quantity], spec, {}), got
