"""The core without numba: the same kernels as Python, the same bits, and a warning.

A second copy of ``agent/core/kernel.py`` is loaded here with
``ENERGY_AGENT_NUMBA=off`` (the choice is made when the module is imported), so the
plain-Python kernels run in this process next to the compiled ones and are fed the
equivalence tests' random streams: every output and every state array must be equal
bit for bit, not merely close. A gateway without numba at all (numba unimportable)
is tested in a subprocess by tests/integration/test_without_numba.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from agent.config import parse_config
from agent.config.models import AgentConfig
from agent.contract import encode
from agent.core import kernel
from agent.core.channels import RING
from agent.core.engine import Engine
from agent.core.jit import ENV, Backend, JitSettingError, choose
from agent.core.site import Reading, SiteCore
from agent.runtime.agent import Agent, warm_up
from agent.runtime.outbox import MemoryOutbox
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from tests.support.core_scenarios import (
    apply_change,
    make_engine,
    parts,
    same_bits,
    same_closed,
    scenarios,
)

LIBRARY = ProfileLibrary()


@pytest.fixture(scope="module")
def python_kernel() -> Iterator[ModuleType]:
    """``agent/core/kernel.py`` imported afresh with numba turned off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, "off")
        spec = importlib.util.spec_from_file_location("kernel_without_numba", kernel.__file__)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    yield module


# --- the choice ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", " no "])
def test_off_keeps_the_functions_as_they_are(value: str) -> None:
    jit, njit = choose({ENV: value})
    assert jit.backend is Backend.PYTHON
    assert jit.reason == f"{ENV}={value}"

    def f(x: int) -> int:
        return x + 1

    assert njit(cache=True, inline="always")(f) is f


@pytest.mark.parametrize("value", ["", "auto", "on", "1"])
def test_numba_compiles_the_kernels_when_it_can(value: str) -> None:
    jit, _ = choose({ENV: value})
    assert jit.backend is Backend.NUMBA and jit.warning() is None
    assert kernel.JIT.backend is Backend.NUMBA  # this test environment has numba
    assert not inspect.isfunction(kernel.update)  # a numba dispatcher


def test_a_misspelt_setting_is_refused_with_the_fix() -> None:
    with pytest.raises(JitSettingError) as err:
        choose({ENV: "of"})
    assert f"{ENV}='of'" in str(err.value) and f"{ENV}=off" in str(err.value)


def test_numba_that_cannot_be_imported_says_why() -> None:
    jit, _ = choose({}, lambda: importlib.import_module("numba_not_installed_here"))
    assert jit.backend is Backend.PYTHON
    assert "No module named 'numba_not_installed_here'" in jit.reason
    warning = jit.warning()
    assert warning is not None
    assert "identical" in warning and "slower" in warning and "pip install numba" in warning
    assert jit.reason in warning


# --- the same bits -------------------------------------------------------------------------


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sc=scenarios())
def test_python_kernels_give_the_compiled_kernels_bits(python_kernel: ModuleType, sc: dict) -> None:
    """Records, slot rows (coverage, demand), event rows and every state array."""
    engines = [make_engine(sc, kernel=k) for k in (kernel, python_kernel)]
    assert [e.jit.backend for e in engines] == [Backend.NUMBA, Backend.PYTHON]
    for k, (chans, ts, vals) in enumerate(parts(sc)):
        if k:
            apply_change(sc["changes"][k - 1], *engines)
        compiled, python = (e.feed(chans, ts, vals) for e in engines)
        assert same_closed(compiled, python)
    for name, array in engines[0].state_arrays().items():
        assert same_bits(array, engines[1].state_arrays()[name]), name

    rnd: random.Random = sc["rnd"]
    top = int(engines[0].closed_slot_end().max())
    firsts = [rnd.randint(top - RING, top + 5) for _ in range(6)]
    ends = [a + rnd.choice([0, 1, 15, 60, 1440]) for a in firsts]
    weights = np.random.default_rng(sc["weight_seed"]).uniform(0.0, 1.0, size=(2, RING))
    group = np.array(sc["groups"], dtype=np.int64)
    sums = [e.range_sums(firsts, ends) for e in engines]
    assert same_bits(*sums)
    wsums = [e.weighted_range_sums(group, weights, firsts, ends) for e in engines]
    assert same_bits(*wsums)
    for c in range(len(sc["specs"])):
        assert engines[0].demand_peak(c) == engines[1].demand_peak(c)


# --- what the agent says -------------------------------------------------------------------

CONFIG = """
site: {id: plant-t, timezone: UTC}
gateway: {id: gw-t}
buses: [{id: bus-1, tcp: {host: 127.0.0.1, port: 1}}]
devices: [{id: main, bus: bus-1, unit: 1, profile: eastron-sdm630}]
mqtt: {host: 127.0.0.1, port: 1}
state_dir: STATE
"""


def _python_site(config: AgentConfig, python_kernel: ModuleType) -> SiteCore:
    """The site a gateway without numba builds: its engine on the plain-Python kernels."""
    compiled = SiteCore(config, LIBRARY)
    return SiteCore(
        config,
        LIBRARY,
        engine=Engine(
            compiled.engine.specs,
            compiled.interval_s,
            demand=compiled.engine.demand_flags(),
            kernel=python_kernel,
        ),
    )


def test_a_snapshot_continues_with_or_without_numba(
    tmp_path: Path, python_kernel: ModuleType
) -> None:
    """A gateway that loses numba (or gains it) continues its counters from the file."""
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    t0 = 1_700_000_000_000 // 60_000 * 60_000 + 1_234

    def polls(first: int, last: int) -> list[Reading]:
        return [
            Reading("main", t0 + k * 7_000, {Quantity.ENERGY_IMPORT_KWH: 1000 + k * 0.0625})
            for k in range(first, last)
        ]

    before = SiteCore(config, LIBRARY)
    before.feed(polls(0, 100))
    snap = tmp_path / "core.npz"
    before.save_snapshot(snap)
    out = []
    for site in (SiteCore(config, LIBRARY), _python_site(config, python_kernel)):
        assert site.load_snapshot(snap)
        messages = site.feed(polls(100, 400)) + site.flush(t0 + 400 * 7_000)
        out.append([m.topic + " " + encode(m.payload).decode() for m in messages])
    assert any("/energy " in m for m in out[0])
    assert out[0] == out[1]


def test_the_agent_warns_once_with_the_reason_and_says_so_on_its_state(
    tmp_path: Path, python_kernel: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(CONFIG.replace("STATE", str(tmp_path)), "t.yaml", profiles=LIBRARY)
    agent = Agent(config, LIBRARY, outbox=MemoryOutbox(1_000_000))
    assert agent.status().agent.core == "numba"
    numba_site = agent.site
    agent.site = _python_site(config, python_kernel)
    with caplog.at_level(logging.WARNING):
        warm_up(agent.site)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "runs without numba (ENERGY_AGENT_NUMBA=off)" in message
    assert "identical" in message and f"unset {ENV}" in message
    assert agent.status().agent.core == "python"

    caplog.clear()
    agent.site = numba_site
    with caplog.at_level(logging.WARNING):
        warm_up(agent.site)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
