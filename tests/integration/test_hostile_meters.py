"""Hostile and broken meters against the real transport (pymodbus) and the real agent.

The meters are tests/support/hostile_modbus.py: a hand-written Modbus TCP and RTU
over TCP server without pymodbus, which answers with another function code, a
wrong transaction or unit id, truncated frames, oversized byte counts, garbage,
or well-formed frames holding absurd values. Nothing of that may become data, a
traceback, or a log line per frame.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from drivers.errors import MalformedResponse, ModbusTimeout, TransportError
from drivers.image import RegisterImage
from drivers.registers import FunctionCode, Table
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing
from tests.support.hostile_modbus import Answer, HostileServer, HostileUnit

pytestmark = pytest.mark.integration

WORDS = [0x4366, 0x0000, 0x4248, 0x0000]  # float32 230.0 and 50.0


def image(words: list[int] = WORDS) -> RegisterImage:
    img = RegisterImage()
    img.set_words(Table.INPUT, 0, words)
    img.set_words(Table.HOLDING, 0, words)
    return img


def endpoint(server: HostileServer) -> Endpoint:
    framing = Framing.RTU_OVER_TCP if server.rtu else Framing.TCP
    return Endpoint(framing, host="127.0.0.1", port=server.port)


#: What each hostile answer must become, per framing. RTU has no transaction id (those
#: answers are correct there), and a truncated RTU frame is only ever incomplete: with
#: no end marker in RTU, it ends as a timeout, never as data.
EXPECTED: dict[Answer, tuple[type[TransportError], str]] = {
    Answer.OTHER_FUNCTION: (
        MalformedResponse,
        "answer with function code 3 to a function code 4 request",
    ),
    Answer.OTHER_TRANSACTION: (MalformedResponse, "answer to another transaction"),
    Answer.ZERO_TRANSACTION: (MalformedResponse, "answer to another transaction"),
    Answer.OTHER_UNIT: (MalformedResponse, "answer from unit 2 to a request for unit 1"),
    Answer.TRUNCATED: (MalformedResponse, "(truncated frame)"),
    Answer.OVERSIZED_COUNT: (MalformedResponse, "byte count 255 for 4 registers (expected 8)"),
    Answer.EXTRA_REGISTERS: (MalformedResponse, "byte count 16 for 4 registers (expected 8)"),
    Answer.GARBAGE: (MalformedResponse, "not a Modbus TCP answer"),
    Answer.UNKNOWN_FUNCTION: (
        MalformedResponse,
        "answer with function code 65 to a function code 4 request",
    ),
}
EXPECTED_RTU = EXPECTED | {
    Answer.TRUNCATED: (ModbusTimeout, "no response"),
    Answer.GARBAGE: (MalformedResponse, "not a Modbus RTU answer"),
}
CASES = [(False, a) for a in EXPECTED] + [
    (True, a) for a in EXPECTED_RTU if a not in (Answer.OTHER_TRANSACTION, Answer.ZERO_TRANSACTION)
]


@pytest.mark.parametrize(
    ("rtu", "answer"), CASES, ids=[f"{'rtu' if r else 'tcp'}-{a}" for r, a in CASES]
)
async def test_a_hostile_answer_is_an_error_never_data(
    rtu: bool, answer: Answer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    kind, text = (EXPECTED_RTU if rtu else EXPECTED)[answer]
    timing = Timing(timeout_s=0.5, retries=1)
    async with (
        HostileServer({1: HostileUnit(image(), answer)}, rtu=rtu) as server,
        ModbusTransport(endpoint(server), timing) as transport,
    ):
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await transport.read(1, FunctionCode.READ_INPUT_REGISTERS, 0, 4)
        took = time.monotonic() - started
    assert type(info.value) is kind, info.value
    assert text in str(info.value)
    assert "unit 1, FC04 address 0 count 4" in str(info.value)
    # Counted: the request was retried once (the error is retryable), both times refused.
    assert server.sent[answer] == 2
    if kind is MalformedResponse:
        assert took < timing.timeout_s, "a refused answer ends the request, not its timeout"
    # pymodbus never got to decode the bad frame: no "Fatal error" traceback from asyncio.
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


async def test_healthy_units_behind_the_same_connection_are_unaffected() -> None:
    units = {1: HostileUnit(image(), Answer.OTHER_FUNCTION)}
    for unit in (2, 3):
        units[unit] = HostileUnit(image([unit, 0, unit, 0]))
    for rtu in (False, True):
        timing = Timing(timeout_s=0.5, retries=0)
        async with (
            HostileServer(dict(units), rtu=rtu) as server,
            ModbusTransport(endpoint(server), timing) as transport,
        ):

            async def poll(unit: int) -> list[int] | TransportError:
                try:
                    return await transport.read(unit, FunctionCode.READ_INPUT_REGISTERS, 0, 4)
                except TransportError as exc:
                    return exc

            for _ in range(10):
                bad, two, three = await asyncio.gather(poll(1), poll(2), poll(3))
                assert isinstance(bad, MalformedResponse), bad
                assert two == [2, 0, 2, 0] and three == [3, 0, 3, 0]
        assert server.sent[Answer.OTHER_FUNCTION] == 10
