"""The core's three backends: the same kernels, the same bits, and a warning when it matters.

Copies of ``agent/core/kernel.py`` are loaded here with ``ENERGY_AGENT_NUMBA=jit``
(numba's JIT), ``off`` (plain Python) and ``aot`` (the module ``python -m
agent.core.aot`` builds, built here into a temporary directory); the choice is
made when the module is imported. All three run in this process and are fed the
equivalence tests' random streams: every output and every state array must be
equal bit for bit, not merely close. A gateway without numba at all (numba
unimportable) is tested in a subprocess by tests/integration/test_without_numba.py,
the compiled module without numba by tests/integration/test_aot_core.py.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import random
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
from agent.core.jit import AOT_MODULE, ENV, Backend, JitSettingError, choose, source_hash
from agent.core.site import Reading, SiteCore
from agent.runtime.agent import Agent, warm_up
from agent.runtime.outbox import MemoryOutbox
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity
from tests.support.core_backends import build_compiled, fresh_kernel, load_compiled
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
def python_kernel() -> ModuleType:
    """``agent/core/kernel.py`` imported afresh with numba turned off."""
    return fresh_kernel("off")


@pytest.fixture(scope="module")
def jit_kernel() -> ModuleType:
    """... compiled by numba's JIT (whether or not a compiled module is built here)."""
    return kernel if kernel.JIT.backend is Backend.NUMBA else fresh_kernel("jit")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The module ``python -m agent.core.aot`` builds, from this checkout's kernel."""
    return load_compiled(build_compiled(tmp_path_factory.mktemp("aot")))


@pytest.fixture(scope="module")
def aot_kernel(compiled: ModuleType) -> ModuleType:
    return fresh_kernel("aot", compiled)


def _not_built() -> ModuleType:
    raise ModuleNotFoundError(f"No module named {AOT_MODULE!r}", name=AOT_MODULE)


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
def test_numba_compiles_the_kernels_when_no_module_is_built(value: str) -> None:
    jit, _ = choose({ENV: value}, import_aot=_not_built)
    assert jit.backend is Backend.NUMBA and jit.warning() is None


@pytest.mark.parametrize("value", ["jit", "JIT", "numba"])
def test_jit_has_numba_compile_them_even_when_a_module_is_built(
    value: str, compiled: ModuleType, jit_kernel: ModuleType
) -> None:
    jit, _ = choose({ENV: value}, import_aot=lambda: compiled)
    assert jit.backend is Backend.NUMBA and jit.warning() is None
    assert jit_kernel.JIT.backend is Backend.NUMBA  # this test environment has numba
    assert not inspect.isfunction(jit_kernel.update)  # a numba dispatcher


@pytest.mark.parametrize("value", ["", "auto", "aot"])
def test_a_module_built_from_this_kernel_is_used(
    value: str, compiled: ModuleType, aot_kernel: ModuleType
) -> None:
    jit, njit = choose({ENV: value}, import_aot=lambda: compiled)
    assert jit.backend is Backend.AOT and jit.compiled is compiled and jit.warning() is None

    def f(x: int) -> int:
        return x + 1

    assert njit(cache=True)(f) is f  # the rest of the kernel module stays Python
    assert aot_kernel.JIT.backend is Backend.AOT
    assert compiled.source_hash() == source_hash()


def test_a_stale_module_is_refused_and_numba_compiles_instead(compiled: ModuleType) -> None:
    """An upgrade that changed the kernel but did not rebuild: old machine code never runs."""
    jit, _ = choose({}, import_aot=lambda: compiled, expected_hash=lambda: 12345)
    assert jit.backend is Backend.NUMBA
    warning = jit.warning()
    assert warning is not None
    assert "was built from another version of agent/core/kernel.py" in warning
    assert "python -m agent.core.aot" in warning and "numba compiles" in warning
    assert compiled.__file__ in warning


def test_a_module_asked_for_but_not_built_says_so() -> None:
    jit, _ = choose({ENV: "aot"}, import_aot=_not_built)
    assert jit.backend is Backend.NUMBA
    assert f"{ENV}=aot but {AOT_MODULE} is not built" in (jit.warning() or "")


def test_without_numba_nor_a_module_the_kernels_run_as_python() -> None:
    jit, _ = choose(
        {ENV: "aot"},
        lambda: importlib.import_module("numba_not_installed_here"),
        import_aot=_not_built,
    )
    assert jit.backend is Backend.PYTHON
    assert "is not built" in jit.reason and "numba_not_installed_here" in jit.reason
    assert "python -m agent.core.aot" in (jit.warning() or "")


def test_the_compiled_entry_points_refuse_arrays_they_would_misread(
    aot_kernel: ModuleType,
) -> None:
    """numba's dispatcher would compile a new version for int32 readings; a compiled
    module would read their bytes as int64. The engine never passes such arrays."""
    state = np.zeros((1, aot_kernel.NI), dtype=np.int64)
    ring_e = np.zeros((1, RING))
    first = np.zeros(1, dtype=np.int32)
    with pytest.raises(TypeError, match="argument 2 must be a C-contiguous int64 array"):
        aot_kernel.range_sums(state, ring_e, first, first.astype(np.int64), np.zeros((1, 1)))
    strided = np.zeros((aot_kernel.NI, 2), dtype=np.int64).T  # (2, NI), not C-contiguous
    with pytest.raises(TypeError, match="argument 0 must be a C-contiguous int64 array"):
        aot_kernel.range_sums(strided, ring_e, *[np.zeros(1, dtype=np.int64)] * 2, np.zeros((1, 1)))


def test_a_misspelt_setting_is_refused_with_the_fix() -> None:
    with pytest.raises(JitSettingError) as err:
        choose({ENV: "of"})
    assert f"{ENV}='of'" in str(err.value) and f"{ENV}=off" in str(err.value)


def test_numba_that_cannot_be_imported_says_why() -> None:
    jit, _ = choose(
        {}, lambda: importlib.import_module("numba_not_installed_here"), import_aot=_not_built
    )
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
def test_python_and_compiled_kernels_give_the_jit_kernels_bits(
    jit_kernel: ModuleType, python_kernel: ModuleType, aot_kernel: ModuleType, sc: dict
) -> None:
    """Records, slot rows (coverage, demand), event rows and every state array."""
    engines = [make_engine(sc, kernel=k) for k in (jit_kernel, python_kernel, aot_kernel)]
    assert [e.jit.backend for e in engines] == [Backend.NUMBA, Backend.PYTHON, Backend.AOT]
    for k, (chans, ts, vals) in enumerate(parts(sc)):
        if k:
            apply_change(sc["changes"][k - 1], *engines)
        jitted, *others = (e.feed(chans, ts, vals) for e in engines)
        assert all(same_closed(jitted, other) for other in others)
    for name, array in engines[0].state_arrays().items():
        for other in engines[1:]:
            assert same_bits(array, other.state_arrays()[name]), (name, other.jit.backend)

    rnd: random.Random = sc["rnd"]
    # Windows near the newest closed slot; a scenario whose readings were all refused has
    # none (INT64_MIN, and top - RING would not fit an int64): then near its first reading.
    top = max(int(engines[0].closed_slot_end().max()), sc["rows"][0][1] // 60_000)
    firsts = [rnd.randint(top - RING, top + 5) for _ in range(6)]
    ends = [a + rnd.choice([0, 1, 15, 60, 1440]) for a in firsts]
    weights = np.random.default_rng(sc["weight_seed"]).uniform(0.0, 1.0, size=(2, RING))
    group = np.array(sc["groups"], dtype=np.int64)
    sums = [e.range_sums(firsts, ends) for e in engines]
    assert all(same_bits(sums[0], other) for other in sums[1:])
    wsums = [e.weighted_range_sums(group, weights, firsts, ends) for e in engines]
    assert all(same_bits(wsums[0], other) for other in wsums[1:])
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
    assert agent.status().agent.core == kernel.JIT.backend.value != "python"
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
