"""Built-in profiles load; broken profiles are refused with the line to fix.

Golden cases live in ``tests/cases/profile-<name>/``: ``profile.yaml`` plus, for a
broken profile, ``expected.err`` with the exact message lines. Each profile is
installed as ``acme-em1.yaml`` in a profile directory and loaded the way the
agent loads one (``ProfileLibrary.get``), so the file name check applies too.
The line of the offending entry carries a ``# <-`` comment, and its number must
appear in the message.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

import drivers
from drivers.errors import ProfileError
from drivers.profile import MODBUS_MAX_READ, Profile, ProfileLibrary
from drivers.quantities import Quantity

CASES = Path(__file__).resolve().parents[2] / "cases"
PROFILE_DIR = Path(drivers.__file__).resolve().parent / "profiles"
CASE_ID = "acme-em1"

BUILTIN = ProfileLibrary().ids()


def test_builtin_library_is_not_empty() -> None:
    assert "eastron-sdm630" in BUILTIN


def test_ids_are_the_yaml_files() -> None:
    files = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    assert files == BUILTIN


@pytest.mark.parametrize("profile_id", BUILTIN)
def test_builtin_profile_loads(profile_id: str) -> None:
    profile = ProfileLibrary().get(profile_id)
    assert isinstance(profile, Profile)
    assert profile.id == profile_id
    assert (PROFILE_DIR / f"{profile_id}.yaml").is_file()
    assert len(profile.sources) >= 1
    assert all(len(s.title) >= 3 for s in profile.sources)
    assert profile.manufacturer and profile.model and profile.description
    assert 1 <= profile.limits.max_registers <= MODBUS_MAX_READ
    assert profile.registers
    quantities = [r.quantity for r in profile.registers]
    assert len(set(quantities)) == len(quantities)
    assert all(isinstance(q, Quantity) for q in quantities)
    if profile.probe is not None:
        assert profile.probe.quantity in quantities
        assert profile.probe.min < profile.probe.max


def test_library_caches_and_lists_all() -> None:
    lib = ProfileLibrary()
    assert lib.get("eastron-sdm630") is lib.get("eastron-sdm630")
    assert [p.id for p in lib.all()] == BUILTIN


def test_unknown_profile_suggests_a_close_id() -> None:
    with pytest.raises(ProfileError) as err:
        ProfileLibrary().get("eastron-sdm63")
    assert "unknown profile 'eastron-sdm63'" in str(err.value)
    assert "did you mean 'eastron-sdm6" in str(err.value)


def test_unknown_profile_without_a_close_id_points_at_the_list() -> None:
    with pytest.raises(ProfileError, match=r"energy-agent profiles"):
        ProfileLibrary().get("zzz-nothing")


# --- golden cases --------------------------------------------------------------------------

ALL_CASES = sorted(p for p in CASES.glob("profile-*") if p.is_dir())
BAD = [p for p in ALL_CASES if (p / "expected.err").exists()]
GOOD = [p for p in ALL_CASES if not (p / "expected.err").exists()]


def test_cases_exist() -> None:
    assert len(BAD) >= 12
    assert GOOD


def _install(case: Path, tmp_path: Path) -> Path:
    target = tmp_path / f"{CASE_ID}.yaml"
    shutil.copyfile(case / "profile.yaml", target)
    return target


@pytest.mark.parametrize("case", GOOD, ids=lambda p: p.name)
def test_good_profile_loads(case: Path, tmp_path: Path) -> None:
    _install(case, tmp_path)
    assert ProfileLibrary(tmp_path).get(CASE_ID).id == CASE_ID


@pytest.mark.parametrize("case", BAD, ids=lambda p: p.name)
def test_bad_profile_message(case: Path, tmp_path: Path) -> None:
    target = _install(case, tmp_path)
    with pytest.raises(ProfileError) as err:
        ProfileLibrary(tmp_path).get(CASE_ID)
    problems = err.value.problems
    # users see the real path of the file; the golden text uses its name
    assert all(p.file == str(target) for p in problems)
    assert all(p.line is not None for p in problems)
    got = [str(dataclasses.replace(p, file=Path(p.file).name)) for p in problems]
    expected = (case / "expected.err").read_text(encoding="utf-8").splitlines()
    assert got == expected
    assert str(err.value) == "\n".join(str(p) for p in problems)

    marked = [
        n
        for n, line in enumerate((case / "profile.yaml").read_text().splitlines(), 1)
        if "# <-" in line
    ]
    assert len(marked) == 1, "mark the offending line with '# <-'"
    (line,) = marked
    text = "\n".join(got)
    assert re.search(rf"^{CASE_ID}\.yaml:{line}: |\bline {line}\b", text, re.M), (
        f"no message names line {line}"
    )
