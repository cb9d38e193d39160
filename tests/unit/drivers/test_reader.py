"""DeviceReader end to end in-process: every built-in profile against a simulated meter."""

from __future__ import annotations

import struct

import pytest

from drivers.decode import resolution
from drivers.errors import (
    ConnectionLost,
    DeviceBusy,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    TransportError,
)
from drivers.fake import FakeTransport
from drivers.image import RegisterImage
from drivers.planner import Strategy
from drivers.profile import Hole, Profile, ProfileLibrary, ReadLimits, RegisterMap
from drivers.quantities import Quantity as Q
from drivers.reader import DeviceReader, Plans
from drivers.registers import DataType, FunctionCode, RatioRegister, RegisterSpec, Table
from drivers.simulator.meter import MeterModel

LIB = ProfileLibrary()
PROFILES = LIB.ids()
UNIT = 7
#: Non-trivial transformer ratios by conventional name; anything else gets 5.
RATIO_VALUES = {"ct": 40.0, "pt": 10.0}


def ratios_for(regmap: RegisterMap) -> dict[str, float]:
    return {name: RATIO_VALUES.get(name, 5.0) for name in regmap.ratios}


def meter(profile: Profile, seed: int = 11) -> MeterModel:
    model = MeterModel(profile, kind=profile.kind, seed=seed, ratios=ratios_for(profile))
    model.advance(1_000.0)
    model.advance(1_090.0)
    return model


def setup(profile: Profile, **reader_kw: object) -> tuple[MeterModel, FakeTransport, DeviceReader]:
    model = meter(profile)
    image = RegisterImage.of(profile, model.values(), model.ratios)
    fake = FakeTransport({UNIT: image})
    return model, fake, DeviceReader(profile, UNIT, **reader_kw)  # type: ignore[arg-type]


def request_of(fc: FunctionCode, address: int, count: int) -> tuple[int, int, int, int]:
    return (UNIT, int(fc), address, count)


def assert_matches_truth(
    regmap: RegisterMap,
    got: dict[Q, float | None],
    truth: dict[Q, float],
    ratios: dict[str, float],
) -> None:
    assert set(got) == set(regmap.quantities)
    for spec in regmap.registers:
        value, expected = got[spec.quantity], truth[spec.quantity]
        assert value is not None, spec.quantity
        tolerance = resolution(spec, expected, ratios) + 1e-9 * max(1.0, abs(expected))
        assert abs(value - expected) <= tolerance, (spec.quantity, value, expected, tolerance)


@pytest.mark.parametrize("profile_id", PROFILES)
@pytest.mark.parametrize("strategy", [Strategy.MERGE, Strategy.SINGLE])
async def test_every_quantity_reads_its_truth(profile_id: str, strategy: Strategy) -> None:
    profile = LIB.get(profile_id)
    model, fake, reader = setup(profile, strategy=strategy)
    got = (await reader.read(fake)).values
    assert_matches_truth(profile, got, model.values(), model.ratios)
    assert reader.ratios == model.ratios


@pytest.mark.parametrize("profile_id", PROFILES)
async def test_requests_are_the_plan_and_ratios_are_cached(profile_id: str) -> None:
    profile = LIB.get(profile_id)
    now = [0.0]
    _, fake, reader = setup(profile, ratio_max_age_s=600.0, clock=lambda: now[0])
    poll = [request_of(r.function_code, r.address, r.count) for r in reader.reads]
    assert all(fc in (3, 4) for _, fc, _, _ in fake.requests + poll)
    assert all(count <= profile.limits.max_registers for *_, count in poll)

    await reader.read(fake)
    first = list(fake.requests)
    n_ratio = len(first) - len(poll)
    assert first[n_ratio:] == poll
    if profile.ratios:
        # the ratio registers are read first, each inside one of those requests
        assert 1 <= n_ratio <= len(profile.ratios)
        for reg in profile.ratios.values():
            fc = 3 if reg.table is Table.HOLDING else 4
            assert any(
                f == fc and a <= reg.address and reg.end <= a + c for _, f, a, c in first[:n_ratio]
            )
    else:
        assert n_ratio == 0

    # later polls: exactly the plan, ratios from the cache
    for _ in range(3):
        now[0] += 60.0
        fake.requests.clear()
        await reader.read(fake)
        assert fake.requests == poll

    # once the cache is older than ratio_max_age_s, the ratios are read again
    now[0] += 600.0
    fake.requests.clear()
    await reader.read(fake)
    assert fake.requests == first


@pytest.mark.parametrize("profile_id", PROFILES)
async def test_follows_the_meter_between_polls(profile_id: str) -> None:
    profile = LIB.get(profile_id)
    model, fake, reader = setup(profile)
    await reader.read(fake)
    model.advance(1_090.0 + 900.0)
    truth = model.values()
    fake.images[UNIT].update(profile, truth, model.ratios)
    assert_matches_truth(profile, (await reader.read(fake)).values, truth, model.ratios)


FAILURES: list[TransportError] = [
    ModbusTimeout("no response", bus="fake", unit=UNIT),
    ConnectionLost("connection reset", bus="fake"),
    MalformedResponse("bad crc", unit=UNIT),
    DeviceBusy(6, unit=UNIT),
    ModbusExceptionResponse(4, unit=UNIT),
]


@pytest.mark.parametrize("profile_id", PROFILES)
@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
async def test_injected_failure_propagates_then_recovers(
    profile_id: str, error: TransportError
) -> None:
    profile = LIB.get(profile_id)
    model, fake, reader = setup(profile)
    fake.failures.append(error)
    with pytest.raises(type(error)) as raised:
        await reader.read(fake)
    assert raised.value is error
    assert len(fake.requests) == 1  # the first failure ends the poll
    # the failure is used up: the next poll works
    assert_matches_truth(profile, (await reader.read(fake)).values, model.values(), model.ratios)


@pytest.mark.parametrize("profile_id", PROFILES)
async def test_illegal_address_is_exception_code_2(profile_id: str) -> None:
    profile = LIB.get(profile_id)
    model, _, reader = setup(profile)
    target = reader.reads[-1]
    # a meter that refuses the last register of the last read
    image = RegisterImage(
        [Hole(table=target.table, start=target.end - 1, count=1)], profile.limits.max_registers
    )
    image.update(profile, model.values(), model.ratios)
    with pytest.raises(ModbusExceptionResponse) as raised:
        await reader.read(FakeTransport({UNIT: image}))
    err = raised.value
    assert err.code == 2
    assert (err.unit, err.function_code, err.address, err.count) == (
        UNIT,
        int(target.function_code),
        target.address,
        target.count,
    )
    assert "illegal data address" in str(err)


async def test_no_such_unit_times_out() -> None:
    profile = LIB.get("eastron-sdm630")
    _, fake, _ = setup(profile)
    with pytest.raises(ModbusTimeout):
        await DeviceReader(profile, UNIT + 1).read(fake)


async def test_read_longer_than_the_meter_allows_is_exception_code_3() -> None:
    profile = LIB.get("eastron-sdm630")
    model, _, reader = setup(profile)
    longest = max(r.count for r in reader.reads)
    image = RegisterImage((), longest - 1)
    image.update(profile, model.values())
    with pytest.raises(ModbusExceptionResponse) as raised:
        await reader.read(FakeTransport({UNIT: image}))
    assert raised.value.code == 3


class ShortTransport(FakeTransport):
    """Answers one register short: a garbled frame that still parsed."""

    async def read(self, unit: int, fc: FunctionCode, address: int, count: int) -> list[int]:
        words = await super().read(unit, fc, address, count)
        return words[:-1]


async def test_wrong_length_answer_is_malformed() -> None:
    profile = LIB.get("eastron-sdm630")
    _, fake, reader = setup(profile)
    short = ShortTransport(fake.images)
    with pytest.raises(MalformedResponse) as raised:
        await reader.read(short)
    first = reader.reads[0]
    assert (raised.value.unit, raised.value.address, raised.value.count) == (
        UNIT,
        first.address,
        first.count,
    )


# --- ratios, with an inline map and registers written by hand ------------------------------

CT = RatioRegister(table=Table.HOLDING, address=0x100, type=DataType.UINT16)
PT = RatioRegister(table=Table.HOLDING, address=0x101, type=DataType.UINT16, scale=0.1)
RATIO_MAP = RegisterMap(
    limits=ReadLimits(max_registers=20, max_gap=2),
    ratios={"ct": CT, "pt": PT},
    registers=(
        RegisterSpec(
            quantity=Q.VOLTAGE_L1_V,
            table=Table.INPUT,
            address=0,
            type=DataType.UINT16,
            scale=0.1,
            ratios=("pt",),
        ),
        RegisterSpec(
            quantity=Q.CURRENT_L1_A,
            table=Table.INPUT,
            address=2,
            type=DataType.INT32,
            scale=0.001,
            ratios=("ct",),
        ),
        RegisterSpec(
            quantity=Q.ACTIVE_POWER_KW,
            table=Table.INPUT,
            address=4,
            type=DataType.FLOAT32,
            scale=0.001,
            ratios=("ct", "pt"),
        ),
        RegisterSpec(
            quantity=Q.FREQUENCY_HZ, table=Table.INPUT, address=8, type=DataType.UINT16, scale=0.01
        ),
    ),
)


def hand_image(ct: int = 40, pt_tenths: int = 100) -> RegisterImage:
    image = RegisterImage()
    image.set_words(Table.HOLDING, 0x100, [ct, pt_tenths])
    image.set_words(Table.INPUT, 0, [2301])  # 230.1 V secondary
    image.set_words(Table.INPUT, 2, list(struct.unpack(">2H", struct.pack(">i", -3085))))
    image.set_words(Table.INPUT, 4, list(struct.unpack(">2H", struct.pack(">f", 512.5))))
    image.set_words(Table.INPUT, 8, [5001])
    return image


async def test_ratios_scale_secondary_values() -> None:
    fake = FakeTransport({UNIT: hand_image(ct=40, pt_tenths=100)})
    reader = DeviceReader(RATIO_MAP, UNIT)
    got = (await reader.read(fake)).values
    assert reader.ratios == {"ct": 40.0, "pt": 10.0}
    assert got == pytest.approx(
        {
            Q.VOLTAGE_L1_V: 230.1 * 10,
            Q.CURRENT_L1_A: -3.085 * 40,
            Q.ACTIVE_POWER_KW: 0.5125 * 40 * 10,
            Q.FREQUENCY_HZ: 50.01,
        },
        rel=1e-12,
    )
    # the ratio registers (holding 0x100, 0x101) are one request, before the measurements
    assert fake.requests == [
        request_of(FunctionCode.READ_HOLDING_REGISTERS, 0x100, 2),
        request_of(FunctionCode.READ_INPUT_REGISTERS, 0, 9),  # 0..8, register 1 bridged
    ]


async def test_changed_ratios_are_seen_only_after_max_age() -> None:
    now = [0.0]
    image = hand_image(ct=40)
    fake = FakeTransport({UNIT: image})
    reader = DeviceReader(RATIO_MAP, UNIT, ratio_max_age_s=3600.0, clock=lambda: now[0])
    first = (await reader.read(fake)).values
    image.set_words(Table.HOLDING, 0x100, [50])  # an electrician changes the CT ratio
    now[0] = 3599.0
    assert (await reader.read(fake)).values == first
    now[0] = 3600.0
    got = (await reader.read(fake)).values
    assert reader.ratios["ct"] == 50.0
    assert got[Q.CURRENT_L1_A] == pytest.approx(-3.085 * 50)


@pytest.mark.parametrize("bad", [0, 0xFFFF])
async def test_ratio_reading_zero_or_missing_is_malformed(bad: int) -> None:
    image = hand_image()
    image.set_words(Table.HOLDING, 0x100, [bad])
    reader = DeviceReader(RATIO_MAP, UNIT)
    with pytest.raises(MalformedResponse, match="ratio register 'ct'") as raised:
        await reader.read(FakeTransport({UNIT: image}))
    assert raised.value.unit == UNIT
    assert raised.value.address == 0x100
    assert reader.ratios == {}


@pytest.mark.parametrize("profile_id", [p for p in PROFILES if LIB.get(p).ratios])
async def test_builtin_ratio_register_reading_zero_is_malformed(profile_id: str) -> None:
    profile = LIB.get(profile_id)
    _, fake, reader = setup(profile)
    name, reg = sorted(profile.ratios.items())[0]
    fake.images[UNIT].set_words(reg.table, reg.address, [0] * reg.type.words)
    with pytest.raises(MalformedResponse, match=f"ratio register '{name}'"):
        await reader.read(fake)


async def test_readers_of_one_map_share_one_plan_and_read_their_own_meter() -> None:
    """Issue 18: 200 meters of one register map make one plan (decoders, steps), not 200.

    Each reader still reads its own unit, keeps its own transformer ratios, and gets
    the values a reader with a plan of its own gets."""
    profile = LIB.get("eastron-sdm630")
    plans: Plans = {}
    models = {unit: meter(profile, seed=unit) for unit in (1, 2)}
    fake = FakeTransport(
        {u: RegisterImage.of(profile, m.values(), m.ratios) for u, m in models.items()}
    )
    one, two = (DeviceReader(profile, u, plans=plans) for u in (1, 2))
    assert one._steps is two._steps and len(plans) == 1
    assert DeviceReader(profile, 1, plans=plans, strategy=Strategy.SINGLE)._steps is not one._steps
    for unit, reader in ((1, one), (2, two)):
        got = (await reader.read(fake)).values
        alone = (await DeviceReader(profile, unit).read(fake)).values
        assert got == alone
        assert_matches_truth(profile, got, models[unit].values(), models[unit].ratios)
    assert {u for u, *_ in fake.requests} == {1, 2}
