"""Hostile and broken meters against the real transport (pymodbus) and the real agent.

The meters are tests/support/hostile_modbus.py: a hand-written Modbus TCP and RTU
over TCP server without pymodbus, which answers with another function code, a
wrong transaction or unit id, truncated frames, oversized byte counts, garbage,
or well-formed frames holding absurd values. Nothing of that may become data, a
traceback, or a log line per frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.contract.models import MeasurementsModel
from drivers.errors import MalformedResponse, ModbusTimeout, TransportError
from drivers.image import RegisterImage
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from drivers.registers import FunctionCode, Table
from drivers.simulator.meter import MeterModel
from drivers.transport import Endpoint, Framing, ModbusTransport, Timing
from tests.support.cli import free_port
from tests.support.hostile_modbus import Answer, HostileServer, HostileUnit
from tests.support.mqtt import (
    AgentProcess,
    Broker,
    Received,
    Subscriber,
    agent_config,
    have_mosquitto,
    wait_until,
)

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


# --- `energy-agent read`: what a commissioning engineer sees -----------------------------------

SDM630 = ProfileLibrary().get("eastron-sdm630")


def sdm630_values() -> dict[Quantity, float]:
    """A three-phase SDM630 drawing about 20 kW."""
    model = MeterModel(SDM630, seed=3)
    model.advance(0.0)
    model.advance(10.0)
    return model.values()


def sdm630(**override: float) -> RegisterImage:
    """An SDM630's registers, with ``override`` as the meter reads them."""
    return RegisterImage.of(SDM630, sdm630_values() | {Quantity(q): v for q, v in override.items()})


async def test_read_shows_implausible_values_and_refuses_another_function_code(cli: Any) -> None:
    units = {
        1: HostileUnit(sdm630(voltage_l1_v=3.4e38, power_factor=230.0)),
        2: HostileUnit(sdm630(), Answer.OTHER_FUNCTION),
    }
    async with HostileServer(units) as server:
        where = ("--tcp", f"127.0.0.1:{server.port}", "--profile", "eastron-sdm630")
        table = await cli.run_async("read", *where, "--unit", "1")
        as_json = await cli.run_async("read", *where, "--unit", "1", "--json")
        liar = await cli.run_async("read", *where, "--unit", "2", "--timeout", "0.5")
    assert table.returncode == 0, str(table)
    # every digit of what the register holds (float32 3.4e38), grouped, marked implausible
    big = "340" + ",000" * 12
    assert re.search(rf"voltage_l1_v\s+.*implausible: {big}\b", table.stdout), table.stdout
    assert re.search(r"power_factor\s+.*implausible: 230", table.stdout), table.stdout
    assert as_json.returncode == 0, str(as_json)
    values = json.loads(as_json.stdout)
    # --json says what the registers hold, exactly; stderr says which the agent would null
    assert values["voltage_l1_v"] == 340 * 10**36 and values["power_factor"] == 230
    assert 45 < values["frequency_hz"] < 55
    assert (
        f"note: voltage_l1_v reads {340 * 10**36}, outside its plausible range [0, 150,000]; "
        "the agent publishes it as null" in (as_json.stderr)
    )
    assert liar.returncode == 1 and liar.stdout == "", str(liar)
    assert "answer with function code 3 to a function code 4 request" in liar.stderr
    assert "Traceback" not in liar.stderr + table.stderr + as_json.stderr


# --- end to end: `energy-agent run` against hostile meters and a real mosquitto ---------------

SITE, GW = "plant-h", "gw-h"


@dataclass
class Run:
    """The broker, a recording subscriber and the agent process of one test."""

    tmp: Path
    broker: Broker | None = None
    subscriber: Subscriber | None = None
    agent: AgentProcess | None = None

    async def close(self) -> None:
        if self.agent is not None:
            self.agent.cleanup()
        if self.subscriber is not None:
            await self.subscriber.stop()
        if self.broker is not None:
            await self.broker.stop()


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    r = Run(tmp_path)
    try:
        yield r
    finally:
        if r.agent is not None:
            print(r.agent.output()[-6000:])  # shown when the test failed
        await r.close()


def device_measurements(sub: Subscriber, dev: str) -> list[dict[str, Any]]:
    return [m.json() for m in sub.received("measurements", dev)]


def device_statuses(sub: Subscriber, dev: str) -> list[dict[str, Any]]:
    return [m.json() for m in sub.received("status", dev)]


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")
async def test_agent_publishes_no_hostile_data_nulls_absurd_values_and_logs_each_cause_once(
    run: Run, cli: Any
) -> None:
    tcp_units = {
        1: HostileUnit(sdm630(), Answer.OTHER_FUNCTION),
        2: HostileUnit(sdm630(voltage_l1_v=3.4e38, voltage_l2_v=-5000.0, power_factor=230.0)),
        3: HostileUnit(sdm630()),
        4: HostileUnit(sdm630()),  # turns hostile below, one cause after another
        5: HostileUnit(RegisterImage()),
    }
    # The inline device's own limit: 300 V is a voltage (the default range allows it),
    # but not one this boiler's 230 V supply can have.
    boiler_regs = [
        {"quantity": "energy_import_kwh", "table": "input", "address": 0, "type": "float32"},
        {"quantity": "voltage_l1_v", "table": "input", "address": 2, "type": "float32"},
    ]
    tcp_units[5].image.set_words(Table.INPUT, 0, [0x447A, 0x0000, 0x4396, 0x0000])  # 1000, 300
    rtu_units = {7: HostileUnit(sdm630(), Answer.OTHER_FUNCTION), 8: HostileUnit(sdm630())}
    async with (
        HostileServer(tcp_units) as tcp,
        HostileServer(rtu_units, rtu=True) as rtu,
    ):
        run.broker = Broker(run.tmp / "broker", free_port())
        await run.broker.start()
        run.subscriber = await Subscriber(run.broker.port, "recorder").start()
        fast = {"interval_s": 0.5}
        config = agent_config(
            run.tmp,
            site=SITE,
            gateway=GW,
            buses=[
                {"id": "line-a", "tcp": {"host": "127.0.0.1", "port": tcp.port}, "timeout_s": 0.5},
                {
                    "id": "line-b",
                    "rtu_over_tcp": {"host": "127.0.0.1", "port": rtu.port},
                    "timeout_s": 0.5,
                },
            ],
            devices=[
                {"id": "liar", "bus": "line-a", "unit": 1, "profile": "eastron-sdm630", **fast},
                {"id": "absurd", "bus": "line-a", "unit": 2, "profile": "eastron-sdm630", **fast},
                {"id": "healthy", "bus": "line-a", "unit": 3, "profile": "eastron-sdm630", **fast},
                {"id": "bad-frames", "bus": "line-a", "unit": 4, "profile": "eastron-sdm630"}
                | fast,
                {
                    "id": "boiler",
                    "bus": "line-a",
                    "unit": 5,
                    "registers": boiler_regs,
                    "plausible": {"voltage_l1_v": [180, 260]},
                    **fast,
                },
                {"id": "rtu-liar", "bus": "line-b", "unit": 7, "profile": "eastron-sdm630", **fast},
                {"id": "rtu-fine", "bus": "line-b", "unit": 8, "profile": "eastron-sdm630", **fast},
            ],
            mqtt={"host": "127.0.0.1", "port": run.broker.port},
        )
        run.agent = AgentProcess(list(cli.command), config, run.tmp / "agent.log").start()
        sub = run.subscriber

        def answered(dev: str) -> Callable[[list[Received]], bool]:
            return lambda _: bool(device_measurements(sub, dev))

        for dev in ("absurd", "healthy", "bad-frames", "boiler", "rtu-fine"):
            await sub.wait_for(answered(dev), 120, f"a measurement of {dev}")

        # One cause after another from the same meter, each twice in a row (a poll is
        # two attempts), with an honest answer in between (it resets the backoff).
        # Truncated frames come back a second time within the minute.
        bad = tcp_units[4]
        for cause in (
            Answer.TRUNCATED,
            Answer.OVERSIZED_COUNT,
            Answer.TRUNCATED,
            Answer.UNKNOWN_FUNCTION,
            Answer.GARBAGE,
        ):
            before = tcp.sent[cause]
            bad.answer = cause
            await wait_until(lambda c=cause, b=before: tcp.sent[c] >= b + 4, 30, f"4 x {cause}")
            seen = len(device_measurements(sub, "bad-frames"))
            bad.answer = Answer.CORRECT
            await sub.wait_for(
                lambda _, n=seen: len(device_measurements(sub, "bad-frames")) > n,
                30,
                f"bad-frames answering again after {cause}",
            )
        await sub.wait_for(
            lambda _: len(device_measurements(sub, "healthy")) >= 20, 30, "20 healthy polls"
        )
        code = await run.agent.terminate(within=20)
    assert code == 0

    # Never data: the meters that answer with another function code have no measurement,
    # and their status says why.
    for dev, bus in (("liar", "line-a"), ("rtu-liar", "line-b")):
        assert device_measurements(sub, dev) == []
        error = device_statuses(sub, dev)[-1]["error"]
        assert error.startswith("answer with function code 3 to a function code 4 request")
        assert f"bus {bus}" in error
    assert tcp.sent[Answer.OTHER_FUNCTION] >= 2 and rtu.sent[Answer.OTHER_FUNCTION] >= 2

    # Absurd values are null and named; the rest of the poll is published.
    for payload in device_measurements(sub, "absurd"):
        MeasurementsModel.model_validate(payload)
        values = payload["values"]
        assert payload["implausible"] == ["power_factor", "voltage_l1_v", "voltage_l2_v"]
        assert values["voltage_l1_v"] is None and values["voltage_l2_v"] is None
        assert values["power_factor"] is None
        assert 45 < values["frequency_hz"] < 55 and 200 < values["voltage_l3_v"] < 260
    for payload in device_measurements(sub, "boiler"):
        assert payload["values"] == {"energy_import_kwh": 1000.0, "voltage_l1_v": None}
        assert payload["implausible"] == ["voltage_l1_v"]

    # Healthy meters behind the same connections: every poll complete and right.
    truth = sdm630_values()[Quantity.VOLTAGE_L1_V]
    for dev in ("healthy", "rtu-fine"):
        polls = device_measurements(sub, dev)
        assert polls and all("implausible" not in p for p in polls)
        assert all(p["values"]["voltage_l1_v"] == pytest.approx(truth, rel=1e-6) for p in polls)
        assert all(None not in p["values"].values() for p in polls)
        assert all(s["state"] == "ok" for s in device_statuses(sub, dev))

    # The log: one line per cause of the meter that changed its mind eight times, one
    # "answering again", no traceback, nothing from pymodbus or asyncio. Its first read
    # is registers 0..17 (V, I, P per phase): 36 data bytes; the truncated answer
    # carries half of them, so its PDU is 2 + 18 bytes and its MBAP length 21.
    log = run.agent.output()
    assert "Traceback" not in log and "Fatal error" not in log, log
    lines = [line for line in log.splitlines() if "device bad-frames:" in line]
    causes = [line.split("device bad-frames: ", 1)[1].split(" (bus ")[0] for line in lines]
    assert causes == [
        "MBAP length 21 does not fit byte count 36 (truncated frame)",
        "answering again",
        "byte count 255 for 18 registers (expected 36)",
        "answer with function code 65 to a function code 4 request",
        "not a Modbus TCP answer (protocol id is not 0)",
    ], lines
