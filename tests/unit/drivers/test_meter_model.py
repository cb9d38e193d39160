"""The simulated meter is physically consistent, so wrong decoding cannot hide."""

from __future__ import annotations

import math

import pytest

from drivers.decode import decode_value
from drivers.image import RegisterImage
from drivers.profile import DeviceKind, ProfileLibrary, RegisterMap
from drivers.quantities import Quantity as Q
from drivers.registers import DataType, RegisterSpec, Table
from drivers.simulator.meter import Faults, MeterModel

EVERYTHING = RegisterMap(
    registers=tuple(
        RegisterSpec(quantity=q, table=Table.INPUT, address=4 * i, type=DataType.FLOAT64)
        for i, q in enumerate(Q)
    )
)
PHASES_P = (Q.ACTIVE_POWER_L1_KW, Q.ACTIVE_POWER_L2_KW, Q.ACTIVE_POWER_L3_KW)
SEEDS = [1, 2, 3, 17, 1234]


def run(model: MeterModel, times: list[float]) -> list[dict[Q, float]]:
    out = []
    for t in times:
        model.advance(t)
        out.append(model.values())
    return out


@pytest.mark.parametrize("export", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_power_triangle(seed: int, export: bool) -> None:
    model = MeterModel(EVERYTHING, seed=seed, export=export)
    for v in run(model, [0.0, 1.0, 2.5, 60.0, 600.0, 3600.0]):
        p, s, q = v[Q.ACTIVE_POWER_KW], v[Q.APPARENT_POWER_KVA], v[Q.REACTIVE_POWER_KVAR]
        assert p == pytest.approx(sum(v[x] for x in PHASES_P), rel=1e-12)
        assert s > 0
        assert s >= abs(p)
        assert s >= abs(q)
        # per phase S² = P² + Q², so the totals satisfy P² + Q² <= S² (triangle inequality)
        assert p * p + q * q <= s * s * (1 + 1e-9)
        assert 0.0 <= v[Q.POWER_FACTOR] <= 1.0
        assert v[Q.POWER_FACTOR] == pytest.approx(abs(p) / s, rel=1e-12)
        # phase powers share the sign of the total
        assert all((v[x] < 0) == export for x in PHASES_P)


@pytest.mark.parametrize("seed", SEEDS)
def test_voltages_currents_frequency_are_plausible(seed: int) -> None:
    model = MeterModel(EVERYTHING, seed=seed)
    for v in run(model, [0.0, 10.0, 100.0]):
        phase = [v[Q.VOLTAGE_L1_V], v[Q.VOLTAGE_L2_V], v[Q.VOLTAGE_L3_V]]
        line = [v[Q.VOLTAGE_L1_L2_V], v[Q.VOLTAGE_L2_L3_V], v[Q.VOLTAGE_L3_L1_V]]
        assert all(220 < u < 240 for u in phase)
        # 120° apart: line-to-line is √3 times line-to-neutral
        for u in line:
            assert u == pytest.approx(math.sqrt(3) * 230, rel=0.02)
        currents = [v[Q.CURRENT_L1_A], v[Q.CURRENT_L2_A], v[Q.CURRENT_L3_A]]
        assert all(c > 0 for c in currents)
        # P = Σ V·I·pf with pf <= 1, so V·I summed is at least P
        s_from_vi = sum(u * c for u, c in zip(phase, currents, strict=True)) / 1000
        assert s_from_vi == pytest.approx(v[Q.APPARENT_POWER_KVA], rel=1e-12)
        # a nearly balanced load: neutral current well below any phase current
        assert 0 <= v[Q.CURRENT_N_A] < min(currents)
        assert 49.9 <= v[Q.FREQUENCY_HZ] <= 50.1


@pytest.mark.parametrize("seed", SEEDS)
def test_energy_import_is_the_trapezoid_integral_of_power(seed: int) -> None:
    model = MeterModel(EVERYTHING, seed=seed, load_kw=35.0)
    times = [100.0, 101.0, 102.5, 110.0, 170.0, 171.0, 400.0, 3700.0]
    samples = run(model, times)
    energy = [v[Q.ENERGY_IMPORT_KWH] for v in samples]
    power = [v[Q.ACTIVE_POWER_KW] for v in samples]
    expected = energy[0]
    for k in range(1, len(times)):
        expected += 0.5 * (power[k - 1] + power[k]) * (times[k] - times[k - 1]) / 3600
        assert energy[k] == pytest.approx(expected, rel=1e-12)
    # the load wanders, but stays in a sane band around load_kw
    assert all(0 < p < 35.0 * 1.8 + 1e-9 for p in power)
    assert energy[-1] > energy[0]
    # nothing exported
    assert samples[-1][Q.ENERGY_EXPORT_KWH] == samples[0][Q.ENERGY_EXPORT_KWH]


def test_first_advance_only_starts_the_clock() -> None:
    model = MeterModel(EVERYTHING, seed=5)
    before = dict(model.counters)
    model.advance(1_000_000.0)
    assert model.counters == before


def test_time_going_backwards_changes_nothing() -> None:
    model = MeterModel(EVERYTHING, seed=5)
    model.advance(10.0)
    model.advance(20.0)
    before = model.values()
    model.advance(15.0)
    model.advance(20.0)
    assert model.values() == before


def test_same_seed_same_meter() -> None:
    a = run(MeterModel(EVERYTHING, seed=9), [0.0, 5.0, 50.0])
    b = run(MeterModel(EVERYTHING, seed=9), [0.0, 5.0, 50.0])
    c = run(MeterModel(EVERYTHING, seed=10), [0.0, 5.0, 50.0])
    assert a == b
    assert a != c


@pytest.mark.parametrize("seed", SEEDS)
def test_export_makes_power_negative_and_counts_export(seed: int) -> None:
    model = MeterModel(EVERYTHING, seed=seed, export=True)
    times = [0.0, 30.0, 90.0, 900.0]
    samples = run(model, times)
    power = [v[Q.ACTIVE_POWER_KW] for v in samples]
    assert all(p < 0 for p in power)
    assert all(v[Q.REACTIVE_POWER_KVAR] <= 0 for v in samples)
    imported = [v[Q.ENERGY_IMPORT_KWH] for v in samples]
    exported = [v[Q.ENERGY_EXPORT_KWH] for v in samples]
    assert imported == [imported[0]] * len(times)
    expected = exported[0]
    for k in range(1, len(times)):
        expected += -0.5 * (power[k - 1] + power[k]) * (times[k] - times[k - 1]) / 3600
        assert exported[k] == pytest.approx(expected, rel=1e-12)
    assert exported[-1] > exported[0]


def test_reset_after_zeroes_counters_once() -> None:
    model = MeterModel(EVERYTHING, seed=3, faults=Faults(reset_after_s=100.0))
    samples = run(model, [0.0, 50.0, 99.0])
    e = [v[Q.ENERGY_IMPORT_KWH] for v in samples]
    assert e[0] > 900  # start_counters=1000 (+ up to 10 %)
    assert e[0] < e[1] < e[2]
    model.advance(100.0)
    assert all(c == 0.0 for c in model.counters.values())
    later = run(model, [160.0, 400.0, 1000.0])
    e2 = [v[Q.ENERGY_IMPORT_KWH] for v in later]
    # counting again from zero, never reset a second time
    assert 0 < e2[0] < e2[1] < e2[2] < 100


def test_gas_meter_has_only_its_counter() -> None:
    regmap = RegisterMap(
        registers=(
            RegisterSpec(
                quantity=Q.GAS_VOLUME_M3, table=Table.HOLDING, address=0, type=DataType.UINT32
            ),
        )
    )
    model = MeterModel(regmap, kind=DeviceKind.GAS, seed=1, load_kw=12.0)
    model.advance(0.0)
    start = model.values()
    model.advance(3600.0)
    end = model.values()
    assert set(end) == {Q.GAS_VOLUME_M3}
    # about 12 m³ in an hour (the flow wanders around load_kw m³/h)
    assert 0.05 * 12 < end[Q.GAS_VOLUME_M3] - start[Q.GAS_VOLUME_M3] < 1.8 * 12


def test_values_only_has_what_the_map_holds() -> None:
    regmap = RegisterMap(
        registers=(
            RegisterSpec(
                quantity=Q.FREQUENCY_HZ, table=Table.INPUT, address=0, type=DataType.FLOAT32
            ),
            RegisterSpec(
                quantity=Q.ENERGY_IMPORT_KWH, table=Table.INPUT, address=2, type=DataType.FLOAT32
            ),
        )
    )
    model = MeterModel(regmap, seed=1)
    model.advance(0.0)
    assert set(model.values()) == {Q.FREQUENCY_HZ, Q.ENERGY_IMPORT_KWH}


# --- counters near the wrap of their register ----------------------------------------------

ENERGY_U32 = RegisterSpec(
    quantity=Q.ENERGY_IMPORT_KWH, table=Table.HOLDING, address=10, type=DataType.UINT32, scale=0.01
)
WRAP_MAP = RegisterMap(
    registers=(
        ENERGY_U32,
        RegisterSpec(
            quantity=Q.ACTIVE_POWER_KW, table=Table.HOLDING, address=0, type=DataType.FLOAT32
        ),
    )
)
TOP_KWH = (2**32 - 1) * 0.01  # the largest value a uint32 in 0.01 kWh holds
WRAP_KWH = 2**32 * 0.01  # one full turn of the register


def registers_of(image: RegisterImage) -> list[int]:
    return image.read(Table.HOLDING, ENERGY_U32.address, 2)


def test_near_wrap_starts_just_below_the_top_and_wraps_in_the_image() -> None:
    model = MeterModel(WRAP_MAP, seed=4, near_wrap=0.5, load_kw=20.0)
    model.advance(0.0)
    start = model.values()[Q.ENERGY_IMPORT_KWH]
    assert start == pytest.approx(TOP_KWH - 0.5)
    image = RegisterImage.of(WRAP_MAP, model.values())
    raw = registers_of(image)
    assert raw[0] == 0xFFFF  # high word: nearly all ones
    assert decode_value(ENERGY_U32, raw) == pytest.approx(TOP_KWH - 0.5, abs=0.01)

    # ~20 kW for 10 minutes is several kWh: well past the top of the register
    t = 0.0
    while model.values()[Q.ENERGY_IMPORT_KWH] <= WRAP_KWH + 0.5:
        t += 60.0
        model.advance(t)
        assert t < 3600
    value = model.values()[Q.ENERGY_IMPORT_KWH]
    image = RegisterImage.of(WRAP_MAP, model.values())
    raw = registers_of(image)
    assert raw[0] == 0  # high word rolled over
    wrapped = decode_value(ENERGY_U32, raw)
    assert wrapped is not None
    assert wrapped == pytest.approx(value - WRAP_KWH, abs=0.01)
    assert 0 < wrapped < value - TOP_KWH + 0.01


def test_near_wrap_leaves_float_counters_alone() -> None:
    regmap = RegisterMap(
        registers=(
            RegisterSpec(
                quantity=Q.ENERGY_IMPORT_KWH, table=Table.INPUT, address=0, type=DataType.FLOAT32
            ),
        )
    )
    model = MeterModel(regmap, seed=1, near_wrap=0.5)
    assert 1000 <= model.counters[Q.ENERGY_IMPORT_KWH] <= 1100


def test_near_wrap_on_a_uint64_stays_below_the_top_where_float64_cannot_step_by_it() -> None:
    # abb-b23: uint64 in 0.01 kWh; the top is (2**64 - 1) / 100 = 184,467,440,737,095,516.15
    # kWh, where a float64 steps by 32 kWh: top - 5 kWh is no float64 apart from the top.
    profile = ProfileLibrary().get("abb-b23")
    spec = profile.spec(Q.ENERGY_IMPORT_KWH)
    assert spec is not None
    model = MeterModel(profile, seed=1, near_wrap=5.0)
    model.advance(0.0)
    image = RegisterImage.of(profile, model.values())
    words = image.read(Table.HOLDING, spec.address, 4)
    raw = words[0] << 48 | words[1] << 32 | words[2] << 16 | words[3]
    # below the top (it read 0 before: wrapped), within one float64 step (32 kWh = 3,200 raw)
    assert 2**64 - 1 - 4 * 3200 < raw < 2**64 - 1, raw
