"""Several Modbus TCP requests in flight on one connection (a bus's ``max_inflight``).

Against the project's pymodbus simulator (50 meters behind one port) and against a
hand-written server that works on requests at once and answers in the order they
finish, with delays, or wrongly: every answer reaches the request it answers, a
bad answer fails only what it has to, and nothing wrong ever becomes a value.
Times are compared within one test (one connection at 1 against the same at 8),
never against a clock budget: the benchmark (bench/bench_topology.py) measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from agent.runtime.scheduler import Backoff, BusPoller, DevicePoll
from drivers.endpoint import Transport
from drivers.errors import (
    ConnectionLost,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    TransportError,
)
from drivers.image import RegisterImage
from drivers.pipeline import RECONNECT_CAP_S, PipelinedTransport
from drivers.profile import RegisterMap
from drivers.quantities import Quantity
from drivers.reader import DeviceReader
from drivers.registers import DataType, FunctionCode, RegisterSpec, Table
from drivers.simulator.meter import Faults
from drivers.transport import Endpoint, Framing, Timing, open_bus
from tests.support.cli import LOOPBACK, free_port
from tests.support.hostile_modbus import Answer, HostileServer, HostileUnit
from tests.support.pipelined_modbus import Fault, OutOfOrderServer, Unit, word
from tests.support.simulators import Simulators

pytestmark = pytest.mark.integration

FC04 = FunctionCode.READ_INPUT_REGISTERS


def _tcp(port: int) -> Endpoint:
    return Endpoint(Framing.TCP, host=LOOPBACK, port=port)


async def _read_all(
    tr: Transport, units: Sequence[int], address: int = 10, count: int = 3
) -> dict[int, list[int] | TransportError]:
    """Every unit's read at once, as the scheduler's tasks on one bus send them."""
    got = await asyncio.gather(
        *(tr.read(u, FC04, address, count) for u in units), return_exceptions=True
    )
    out: dict[int, list[int] | TransportError] = {}
    for u, r in zip(units, got, strict=True):
        assert isinstance(r, list | TransportError), repr(r)  # nothing else escapes
        out[u] = r
    return out


def _right(unit: int, address: int = 10, count: int = 3) -> list[int]:
    return [word(unit, address + i) for i in range(count)]


# --- the project's simulator (pymodbus' server) ----------------------------------------------


async def test_fifty_meters_behind_one_simulator_port_at_eight_in_flight(
    simulators: Simulators,
) -> None:
    units = range(1, 51)
    sim = await simulators.start(simulators.tcp_endpoint(), dict.fromkeys(units, "eastron-sdm630"))
    readers = {u: DeviceReader(sim.profiles[u], u) for u in units}
    timing = Timing(timeout_s=2.0, retries=0, max_inflight=8)
    async with open_bus(sim.endpoint, timing, name="gw") as tr:
        assert isinstance(tr, PipelinedTransport)
        for _ in range(2):  # the second poll reuses the connection and skips the ratios
            samples = await asyncio.gather(*(readers[u].read(tr) for u in units))
            for u, sample in zip(units, samples, strict=True):
                got = {q.value: v for q, v in sample.values.items()}
                assert sim.mismatches(u, got) == [], f"unit {u}"
                assert dict(sample.ratios) == sim.ratios[u]
    assert set(sim.server.function_codes) <= {3, 4}  # reads only, as ever


async def test_the_simulator_works_on_requests_at_once(simulators: Simulators) -> None:
    """The simulator answers requests on one connection concurrently (pymodbus 3.16's own
    handler did not: it kept all but one frame of a receive and answered with the latest
    request's transaction id); 20 meters that take 50 ms each are read in about 50 ms at
    20 in flight, against about a second one at a time."""
    units = range(1, 21)
    slow = {u: Faults(delay_s=0.05) for u in units}
    sim = await simulators.start(
        simulators.tcp_endpoint(), dict.fromkeys(units, "eastron-sdm630"), faults=slow
    )
    took = {}
    for inflight in (1, 20):
        async with open_bus(sim.endpoint, Timing(timeout_s=3.0, max_inflight=inflight)) as tr:
            started = time.monotonic()
            got = await _read_all(tr, list(units), address=0, count=2)
            took[inflight] = time.monotonic() - started
        assert all(isinstance(v, list) for v in got.values()), got
    assert took[1] >= 20 * 0.05  # one after another: the delays add up
    assert took[20] < took[1] / 4, took


# --- a server that answers out of order ------------------------------------------------------


async def test_out_of_order_answers_reach_their_own_request() -> None:
    units = {u: Unit(delay_s=0.02) for u in range(1, 51)}
    async with OutOfOrderServer(units, jitter_s=0.02) as server:
        took = {}
        for inflight in (1, 8):
            server.peak_inflight = 0
            timing = Timing(timeout_s=2.0, retries=0, max_inflight=inflight)
            async with open_bus(_tcp(server.port), timing) as tr:
                started = time.monotonic()
                got = await _read_all(tr, list(units))
                took[inflight] = time.monotonic() - started
            assert got == {u: _right(u) for u in units}
            # never more in flight than allowed, and at 8 the server had 8 at once
            assert server.peak_inflight == inflight
        # the answers really came in another order than the requests went out
        assert server.answered != sorted(server.answered)
    # 50 x 20-40 ms one at a time against about 50/8 of that (a loose bound: not a timing test)
    assert took[8] < took[1] / 3, took


async def test_a_bad_answer_fails_only_its_own_request() -> None:
    units = {u: Unit(delay_s=0.01 * (u % 5)) for u in range(1, 21)}
    units[5] = Unit(delay_s=0.01, fault=Fault.EXCEPTION)
    units[6] = Unit(delay_s=0.01, fault=Fault.OTHER_UNIT)
    units[7] = Unit(fault=Fault.SILENT)
    async with OutOfOrderServer(units, jitter_s=0.01) as server:
        timing = Timing(timeout_s=0.3, retries=0, max_inflight=8)
        async with open_bus(_tcp(server.port), timing, name="gw") as tr:
            got = await _read_all(tr, list(units))
        assert server.connections == 1  # none of it reset the connection
    assert {u: v for u, v in got.items() if u not in (5, 6, 7)} == {
        u: _right(u) for u in units if u not in (5, 6, 7)
    }
    exc, other, silent = got[5], got[6], got[7]
    assert isinstance(exc, ModbusExceptionResponse)
    assert str(exc) == (
        "exception response 0x02 (illegal data address) (bus gw, unit 5, FC04 address 10 count 3)"
    )
    assert isinstance(other, MalformedResponse)
    assert other.detail == "answer from unit 7 to a request for unit 6"
    assert isinstance(silent, ModbusTimeout) and silent.unit == 7


async def test_the_agents_poller_gets_each_meters_own_values_and_errors() -> None:
    """The bus poller as `run` builds it: 50 tasks on one connection, 8 in flight; each
    device's result carries its own meter's value (register 0 of unit u holds u x 256)."""
    regmap = RegisterMap(
        registers=(
            RegisterSpec(
                quantity=Quantity.ACTIVE_POWER_KW,
                table=Table.INPUT,
                address=0,
                type=DataType.UINT16,
            ),
        )
    )
    units = {u: Unit(delay_s=0.02) for u in range(1, 51)}
    units[13] = Unit(delay_s=0.01, fault=Fault.OTHER_UNIT)
    results: dict[str, list[float | str | None]] = {}

    def on_result(p: DevicePoll, ts: int, values: object, error: object, *_: object) -> None:
        got = values[Quantity.ACTIVE_POWER_KW] if isinstance(values, dict) else str(error)
        results.setdefault(p.device_id, []).append(got)

    async with OutOfOrderServer(units, jitter_s=0.02) as server:
        timing = Timing(timeout_s=1.0, retries=0, max_inflight=8)
        async with open_bus(_tcp(server.port), timing, name="gw") as tr:
            polls = [
                DevicePoll(f"m{u}", DeviceReader(regmap, u), 0.5, Backoff(0.5, 5.0)) for u in units
            ]
            poller = BusPoller("gw", tr, polls, on_result, serial=False, slots=1)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(1.2, stop.set)
            await poller.run(stop)
        assert server.peak_inflight == 8
    assert set(results) == {f"m{u}" for u in units}
    wrong = "answer from unit 14 to a request for unit 13"
    for u in units:
        want = [f"{wrong} (bus gw, unit 13, FC04 address 0 count 1)"] if u == 13 else [u * 256.0]
        assert set(results[f"m{u}"]) == set(want), u  # every poll of the run, 2 or 3 each


@pytest.mark.parametrize(
    ("fault", "error", "detail"),
    [
        (Fault.GARBAGE, MalformedResponse, "not a Modbus TCP answer (protocol id 57005, not 0)"),
        (Fault.UNKNOWN_TID, MalformedResponse, "which is not in flight; connection reset"),
        (Fault.CLOSE_MID_FRAME, ConnectionLost, "connection closed by the other end"),
    ],
)
async def test_a_broken_stream_fails_what_is_in_flight_then_reconnects(
    fault: Fault, error: type[TransportError], detail: str
) -> None:
    # unit 1 answers first (10 ms) while units 2-8 are still in flight (200 ms)
    units = {u: Unit(delay_s=0.2) for u in range(2, 9)}
    units[1] = Unit(delay_s=0.01, fault=fault)
    async with OutOfOrderServer(units) as server:
        timing = Timing(timeout_s=1.0, retries=0, max_inflight=8)
        async with open_bus(_tcp(server.port), timing) as tr:
            got = await _read_all(tr, list(units))
            for u, v in got.items():
                assert isinstance(v, error), (u, v)
                assert detail in v.detail and v.unit == u
            units[1].fault = Fault.NONE  # the gateway is itself again: read on a new connection
            again = await _read_all(tr, list(units))
        assert server.connections == 2
    assert again == {u: _right(u) for u in units}


async def test_a_late_answer_is_skipped_and_a_neighbour_still_gets_its_own() -> None:
    # unit 1 times out at 0.5 s and answers at 0.8 s, while unit 2's request (sent at
    # 0.5 s, answered at 0.95 s) is in flight: the late answer must not disturb it
    units = {1: Unit(delay_s=0.8), 2: Unit(delay_s=0.45)}
    async with OutOfOrderServer(units) as server:
        timing = Timing(timeout_s=0.5, retries=0, max_inflight=4)
        async with open_bus(_tcp(server.port), timing) as tr:
            with pytest.raises(ModbusTimeout):
                await tr.read(1, FC04, 10, 3)
            assert await tr.read(2, FC04, 10, 3) == _right(2)
            units[1].delay_s = 0.0
            assert await tr.read(1, FC04, 20, 3) == _right(1, 20)
        assert server.connections == 1
        assert len(server.answered) == 3  # the late one was sent, and skipped


async def test_a_cancelled_poll_leaves_the_connection_to_the_others() -> None:
    units = {1: Unit(delay_s=0.1), 2: Unit(delay_s=0.2)}
    async with OutOfOrderServer(units) as server:
        timing = Timing(timeout_s=1.0, retries=0, max_inflight=4)
        async with open_bus(_tcp(server.port), timing) as tr:
            first = asyncio.create_task(tr.read(1, FC04, 10, 3))
            second = asyncio.create_task(tr.read(2, FC04, 10, 3))
            await asyncio.sleep(0.02)
            first.cancel()  # the agent stopping a poll; its answer still comes at 0.1 s
            assert await second == _right(2)
            assert await tr.read(1, FC04, 10, 3) == _right(1)
        assert server.connections == 1


async def test_a_dead_gateway_costs_one_connection_attempt_per_delay() -> None:
    port = free_port()
    async with open_bus(_tcp(port), Timing(timeout_s=0.5, retries=0, max_inflight=8)) as tr:
        got = await _read_all(tr, list(range(1, 51)))
        errors = [v for v in got.values() if isinstance(v, ConnectionLost)]
        assert len(errors) == 50
        # one attempt was made; the 49 others were told when the next one is due
        tried = [e for e in errors if "next attempt in" not in e.detail]
        assert len(tried) == 1 and "cannot connect to tcp://127.0.0.1" in tried[0].detail
        async with OutOfOrderServer({u: Unit() for u in range(1, 51)}, port=port):
            deadline = time.monotonic() + RECONNECT_CAP_S
            while True:  # the scheduler's next poll, until the delay has passed
                got = await _read_all(tr, list(range(1, 51)))
                if all(isinstance(v, list) for v in got.values()) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
    assert got == {u: _right(u) for u in range(1, 51)}


# --- the hostile meters of tests/support/hostile_modbus.py, through the new client ----------

#: What each hostile answer becomes: the pymodbus path's texts (drivers.frames), except that
#: an answer under a transaction id nobody asked resets the connection here.
HOSTILE: dict[Answer, tuple[type[TransportError], str]] = {
    Answer.OTHER_FUNCTION: (MalformedResponse, "function code 3 to a function code 4 request"),
    Answer.OTHER_TRANSACTION: (MalformedResponse, "which is not in flight; connection reset"),
    Answer.ZERO_TRANSACTION: (MalformedResponse, "answer to transaction 0, which is not in"),
    Answer.OTHER_UNIT: (MalformedResponse, "answer from unit 2 to a request for unit 1"),
    Answer.TRUNCATED: (MalformedResponse, "(truncated frame)"),
    Answer.OVERSIZED_COUNT: (MalformedResponse, "byte count 255 for 4 registers (expected 8)"),
    Answer.EXTRA_REGISTERS: (MalformedResponse, "byte count 16 for 4 registers (expected 8)"),
    Answer.GARBAGE: (MalformedResponse, "not a Modbus TCP answer"),
    Answer.UNKNOWN_FUNCTION: (MalformedResponse, "function code 65 to a function code 4 request"),
}


@pytest.mark.parametrize("answer", list(HOSTILE))
async def test_a_hostile_answer_is_an_error_never_data(answer: Answer) -> None:
    kind, text = HOSTILE[answer]
    words = [0x4366, 0x0000, 0x4248, 0x0000]
    img = RegisterImage()
    img.set_words(Table.INPUT, 0, words)
    healthy = RegisterImage()
    healthy.set_words(Table.INPUT, 0, [2, 0, 2, 0])
    units = {1: HostileUnit(img, answer), 2: HostileUnit(healthy)}
    timing = Timing(timeout_s=0.5, retries=1, max_inflight=8)
    async with HostileServer(units) as server, open_bus(_tcp(server.port), timing) as tr:
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await tr.read(1, FC04, 0, 4)
        took = time.monotonic() - started
        assert await tr.read(2, FC04, 0, 4) == [2, 0, 2, 0]  # the bus goes on
    assert type(info.value) is kind, info.value
    assert text in str(info.value) and "unit 1, FC04 address 0 count 4" in str(info.value)
    assert server.sent[answer] == 2  # retried once, refused both times
    assert took < timing.timeout_s, "a refused answer ends the request, not its timeout"
