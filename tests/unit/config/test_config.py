"""Golden config cases: tests/cases/config-*/ hold a config.yaml and what `check` must say.

tests/cases/bridge-config-*/ are the same for the central bridge's config, which
`check` tells apart by its sections (``influx:``/``bridge:``, no ``devices:``).

* ``expected.err``: the exact problem lines (``str(problem)``), in order. The file is
  loaded as ``config.yaml`` from inside the case directory, so the lines read exactly
  as a user sees them after ``cd CASE && energy-agent check -c config.yaml``.
* ``expected.ok``: the config is valid; each line ``dotted.path = JSON`` is a value
  the loaded config must hold (``${ENV}`` expansion, defaults).
* ``env`` (optional): ``NAME=value`` lines, the whole environment the config sees;
  without it the environment is empty, so the host's variables never leak in.
* ``no-files`` (optional, empty): check as ``check --no-files`` does, the document
  only; the files it names (``/etc/energy-agent/...``) are the target machine's.
  Without it the named files are checked as ``check`` and ``run`` do, relative
  paths from inside the case directory.

To add a case: make the directory, write config.yaml, run the loader and check
that every message names the field and says how to fix it before saving it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import BridgeConfig, ConfigError, load_config
from agent.config.load import load_any_config

CASES = Path(__file__).resolve().parents[2] / "cases"
CONFIG_CASES = sorted(p for p in CASES.glob("config-*") if p.is_dir())
BRIDGE_CASES = sorted(p for p in CASES.glob("bridge-config-*") if p.is_dir())


def _env(case: Path) -> dict[str, str]:
    path = case / "env"
    if not path.exists():
        return {}
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value
    return env


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_cases_exist() -> None:
    names = {p.name for p in CONFIG_CASES}
    assert len(names) >= 20, names
    assert len(BRIDGE_CASES) >= 3, BRIDGE_CASES
    for case in CONFIG_CASES + BRIDGE_CASES:
        assert (case / "config.yaml").is_file(), case
        expected = [n for n in ("expected.err", "expected.ok") if (case / n).exists()]
        assert len(expected) == 1, f"{case.name}: needs exactly one of expected.err, expected.ok"


@pytest.mark.parametrize(
    "case", CONFIG_CASES + BRIDGE_CASES, ids=lambda p: p.name.removeprefix("config-")
)
def test_config_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case)
    files = not (case / "no-files").exists()
    err_file = case / "expected.err"
    if err_file.exists():
        expected = err_file.read_text(encoding="utf-8").splitlines()
        with pytest.raises(ConfigError) as info:
            load_any_config("config.yaml", env=_env(case), files=files)
        got = [str(p) for p in info.value.problems]
        assert got == expected, "\n".join(["got:", *got])
        # Every problem points at a line of the file, so an editor can jump to it.
        assert all(p.file == "config.yaml" and p.line for p in info.value.problems)
        return
    config = load_any_config("config.yaml", env=_env(case), files=files)
    assert case.name.startswith("bridge-") == isinstance(config, BridgeConfig), "wrong model"
    data = config.model_dump(mode="json")
    for line in (case / "expected.ok").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, _, value = line.partition(" = ")
        assert _lookup(data, path.strip()) == json.loads(value), line


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES / "config-env-unset")
    monkeypatch.setenv("MQTT_HOST", "broker.internal")
    monkeypatch.delenv("MQTT_PASSWORD", raising=False)
    config = load_config("config.yaml")
    assert config.mqtt is not None
    assert config.mqtt.host == "broker.internal"
    assert config.mqtt.password == ""


def test_missing_file_is_a_problem_not_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    (problem,) = info.value.problems
    assert "cannot read the config file" in str(problem)
    assert "nope.yaml" in str(problem)


def test_a_huge_value_still_makes_one_line_messages() -> None:
    # Messages quote values ("unknown bus '...' (buses: ...)"); found by the fuzz test: a
    # 300 KB bus id made 300 KB error lines, twice.
    from agent.config import parse_config

    huge = "x" * 300_000
    text = (
        "site: {id: plant-a, timezone: Asia/Shanghai}\ngateway: {id: gw-01}\n"
        f"buses:\n  - {{id: {huge}, tcp: {{host: 10.0.0.5}}}}\n"
        "devices:\n  - {id: press-1, bus: line-a, unit: 1, profile: eastron-sdm630}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "big.yaml", env={})
    got = [str(p) for p in info.value.problems]
    assert len(got) == 2 and all(len(line) < 300 for line in got), [g[:300] for g in got]
    assert got[1].startswith("big.yaml:6: devices[0].bus: unknown bus 'line-a' (buses: xxxx")
