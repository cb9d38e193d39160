"""The transport against a real pymodbus server: bounded timeouts, reconnects,
serial-line serialisation, and error mapping with unit and address."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.errors import ConnectionLost, ModbusTimeout, RetryableError
from drivers.profile import ProfileLibrary
from drivers.reader import DeviceReader
from drivers.registers import FunctionCode, Table
from drivers.simulator.meter import Faults, MeterModel
from drivers.simulator.ptypair import PtyPair
from drivers.simulator.server import SimulatedDevice, SimulatorServer
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing
from tests.support.cli import free_port

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def _sdm630_device(unit: int, faults: Faults | None = None) -> SimulatedDevice:
    profile = ProfileLibrary().get("eastron-sdm630")
    return SimulatedDevice(unit, MeterModel(profile, seed=unit, faults=faults or Faults()))


async def test_dead_unit_costs_timeout_times_attempts_and_says_where() -> None:
    port = free_port()
    ep = Endpoint(Framing.TCP, host="127.0.0.1", port=port)
    server = SimulatorServer(ep, [_sdm630_device(1, Faults(timeout=1.0))], clock=lambda: T0)
    async with server, ModbusTransport(ep, Timing(timeout_s=0.2, retries=2)) as tr:
        started = time.monotonic()
        with pytest.raises(ModbusTimeout) as info:
            await tr.read(1, FunctionCode.READ_INPUT_REGISTERS, 0x48, 2)
        elapsed = time.monotonic() - started
    err = info.value
    assert (err.unit, err.address, err.function_code) == (1, 0x48, 4)
    assert "unit 1" in str(err) and "address 72" in str(err)
    assert isinstance(err, RetryableError)
    # three attempts of 0.2 s each, no hidden pymodbus retries on top
    assert 0.55 <= elapsed < 1.5
    assert server.function_codes[4] == 3


async def test_reconnects_after_the_server_comes_back() -> None:
    port = free_port()
    ep = Endpoint(Framing.TCP, host="127.0.0.1", port=port)
    profile = ProfileLibrary().get("eastron-sdm630")
    reader = DeviceReader(profile, 1)
    async with ModbusTransport(ep, Timing(timeout_s=0.3, retries=0)) as tr:
        async with SimulatorServer(ep, [_sdm630_device(1)], clock=lambda: T0):
            first = await reader.read(tr)
        # server gone: a retryable error naming the bus, not a hang or a crash
        with pytest.raises((ConnectionLost, ModbusTimeout)):
            await reader.read(tr)
        async with SimulatorServer(ep, [_sdm630_device(1)], clock=lambda: T0):
            second = await reader.read(tr)
    assert second == first


async def test_serial_line_carries_one_request_at_a_time_with_the_frame_gap(
    socat_pair: PtyPair,
) -> None:
    a, b = socat_pair.a, socat_pair.b
    devices = [_sdm630_device(u) for u in (1, 2, 3, 4)]
    gap = 0.1
    server = SimulatorServer(Endpoint(Framing.RTU, device=b), devices, clock=lambda: T0)
    async with (
        server,
        ModbusTransport(
            Endpoint(Framing.RTU, device=a),
            Timing(timeout_s=1.0, retries=0, inter_frame_delay_s=gap),
        ) as tr,
    ):
        await tr.read(1, FunctionCode.READ_INPUT_REGISTERS, 0, 2)  # open the line
        started = time.monotonic()
        results = await asyncio.gather(
            *(tr.read(u, FunctionCode.READ_INPUT_REGISTERS, 0, 2) for u in (1, 2, 3, 4))
        )
        elapsed = time.monotonic() - started
    # each answer belongs to its own unit (no crossed frames) ...
    for d, words in zip(devices, results, strict=True):
        assert words == d.image.read(Table.INPUT, 0, 2)
    # ... and four exchanges needed at least four frame gaps (the first follows the warm-up).
    assert elapsed >= 4 * gap * 0.95


def test_only_read_function_codes_can_be_sent() -> None:
    with pytest.raises(ValueError):
        FunctionCode(6)  # write single register does not exist for the agent
    with pytest.raises(ValueError):
        FunctionCode(16)
