"""Plausibility limits: a value outside its range is null, named, and never counted.

The boundaries are checked with float64 registers at scale 1, so the number in
the register is exactly the number compared: both ends of a range are
plausible (inclusive), the next representable step beyond is not.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config.models import AgentConfig
from agent.contract.models import MeasurementsModel
from agent.core.engine import load_kernel
from agent.core.site import Reading, SiteCore
from drivers.decode import encode_value
from drivers.fake import FakeTransport
from drivers.image import RegisterImage
from drivers.profile import ProfileLibrary, RegisterMap
from drivers.quantities import COUNTERS, PLAUSIBLE, Quantity
from drivers.reader import DeviceReader
from drivers.registers import DataType, RegisterSpec, Table

V, HZ, PF = Quantity.VOLTAGE_L1_V, Quantity.FREQUENCY_HZ, Quantity.POWER_FACTOR
EK, P = Quantity.ENERGY_IMPORT_KWH, Quantity.ACTIVE_POWER_KW
UNIT = 1
load_kernel()


def spec(q: Quantity, address: int, type_: DataType = DataType.FLOAT64) -> RegisterSpec:
    return RegisterSpec(quantity=q, table=Table.INPUT, address=address, type=type_)


REGMAP = RegisterMap(registers=(spec(V, 0), spec(HZ, 4), spec(PF, 8), spec(EK, 12)))


async def read_one(
    regmap: RegisterMap, values: dict[Quantity, float | None]
) -> tuple[dict[Quantity, float | None], dict[Quantity, float]]:
    image = RegisterImage()
    for s in regmap.registers:
        image.set_words(s.table, s.address, encode_value(s, values.get(s.quantity, 0.0)))
    sample = await DeviceReader(regmap, UNIT).read(FakeTransport({UNIT: image}))
    return sample.values, sample.implausible


def test_every_quantity_has_a_default_range() -> None:
    assert set(PLAUSIBLE) == set(Quantity)
    for q, (lo, hi) in PLAUSIBLE.items():
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi, q
    assert all(PLAUSIBLE[q][0] == 0.0 for q in COUNTERS)  # a counter is never negative
    assert PLAUSIBLE[PF] == (-1.001, 1.001)
    assert PLAUSIBLE[HZ] == (40.0, 70.0)


#: (quantity, what the meter says, plausible?) against the defaults, both ends included.
BOUNDARIES = [
    (V, 0.0, True),
    (V, -0.001, False),
    (V, -5000.0, False),
    (V, 150_000.0, True),
    (V, 150_000.001, False),
    (V, 3.4e38, False),
    (HZ, 40.0, True),
    (HZ, 39.999, False),
    (HZ, 70.0, True),
    (HZ, 70.001, False),
    (HZ, 0.0, False),  # no measuring voltage: not a frequency
    (PF, 1.001, True),
    (PF, -1.001, True),
    (PF, 1.0011, False),
    (PF, -1.0011, False),
    (PF, 230.0, False),
    (EK, 0.0, True),
    (EK, -0.01, False),
    (EK, 1e12, True),
    (EK, 1.000001e12, False),
]


@pytest.mark.parametrize(("q", "value", "plausible"), BOUNDARIES)
async def test_default_range_boundaries(q: Quantity, value: float, plausible: bool) -> None:
    healthy = {V: 230.0, HZ: 50.0, PF: 0.9, EK: 1000.0}
    values, implausible = await read_one(REGMAP, {**healthy, q: value})
    if plausible:
        assert values[q] == value and implausible == {}
    else:
        assert values[q] is None
        assert implausible == {q: value}  # what the meter said, for the log and `read`
    others = {k: v for k, v in values.items() if k is not q}
    assert others == {k: v for k, v in healthy.items() if k is not q}


async def test_float32_garbage_as_meters_send_it() -> None:
    regmap = RegisterMap(registers=(spec(V, 0, DataType.FLOAT32), spec(PF, 2, DataType.FLOAT32)))
    values, implausible = await read_one(regmap, {V: 3.4e38, PF: 230.0})
    assert values == {V: None, PF: None}
    assert set(implausible) == {V, PF}
    assert implausible[V] == pytest.approx(3.4e38, rel=1e-7)  # float32's nearest


async def test_not_available_is_not_implausible() -> None:
    values, implausible = await read_one(REGMAP, {V: None, HZ: math.inf})
    assert values[V] is None and values[HZ] is None
    assert implausible == {}


async def test_a_register_map_narrows_its_ranges() -> None:
    narrow = REGMAP.model_copy(update={"plausible": {V: (180.0, 260.0)}})
    for value, plausible in ((179.9, False), (180.0, True), (260.0, True), (260.5, False)):
        values, implausible = await read_one(narrow, {V: value, HZ: 50.0, PF: 0.9})
        assert (values[V] == value) is plausible, value
        assert (V in implausible) is not plausible
        assert values[HZ] == 50.0  # the other quantities keep their defaults


# --- through the core --------------------------------------------------------------------


def site(tmp: Path) -> SiteCore:
    config = AgentConfig.model_validate(
        {
            "site": {"id": "plant-a", "timezone": "UTC"},
            "gateway": {"id": "gw-01"},
            "carbon": {"electricity": {"kg_per_kwh": 0.5}},
            "buses": [{"id": "bus-1", "tcp": {"host": "127.0.0.1"}}],
            "devices": [
                {
                    "id": "main",
                    "bus": "bus-1",
                    "unit": UNIT,
                    "interval_s": 10,
                    "registers": [
                        {"quantity": "energy_import_kwh", "table": "input", "address": 0,
                         "type": "float32"},
                        {"quantity": "active_power_kw", "table": "input", "address": 2,
                         "type": "float32"},
                    ],
                }
            ],
            "publish": {"energy_interval_s": 300},
            "state_dir": str(tmp),
        }
    )  # fmt: skip
    return SiteCore(config, ProfileLibrary())


async def test_an_implausible_counter_is_a_missing_reading_not_energy(tmp_path: Path) -> None:
    """A counter that reads 3.4e38 for three polls: the measurements say so, the energy
    of the interval is what the honest readings around it say.

    Polls every 10 s from 00:00; the counter rises 0.1 kWh per poll from 100 kWh, so
    at 00:05 (poll 30) it reads 103.0: 3.0 kWh in the interval, whatever polls 12-14
    returned. Without the limit, 3.4e38 - 101.1 kWh would have been counted (no
    max_power_kw is set, so no glitch limit catches it).
    """
    core = site(tmp_path)
    regmap = core.devices[0].device.inline_map()
    assert regmap is not None
    reader = DeviceReader(regmap, UNIT)
    image = RegisterImage()
    fake = FakeTransport({UNIT: image})
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    out = []
    for k in range(31):
        counter = 3.4e38 if k in (12, 13, 14) else 100.0 + 0.1 * k
        for s in regmap.registers:
            value = counter if s.quantity is EK else 36.0
            image.set_words(s.table, s.address, encode_value(s, value))
        sample = await reader.read(fake)
        reading = Reading("main", t0 + k * 10_000, sample.values, tuple(sample.implausible))
        out += core.feed([reading])
    measurements = [m.payload for m in out if m.topic.endswith("/measurements")]
    flagged = [p for p in measurements if "implausible" in p]
    assert [p["seq"] for p in flagged] == [13, 14, 15]
    assert all(p["values"] == {"energy_import_kwh": None, "active_power_kw": 36.0} for p in flagged)
    assert all(p["implausible"] == ["energy_import_kwh"] for p in flagged)
    for p in measurements:
        MeasurementsModel.model_validate(p)
    energy = [m.payload for m in out if m.topic.endswith("/energy")]
    assert [e["ts"] for e in energy] == [t0 + 300_000]
    assert energy[0]["energy_kwh"] == pytest.approx(3.0, abs=1e-4)  # float32 counter steps
