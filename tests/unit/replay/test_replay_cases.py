"""Golden replay cases: tests/cases/replay-*/ hold a config, readings and what comes out.

Each case directory has:

* ``config.yaml``: the site; its comment derives every expected number by hand.
* ``readings.csv``: the recorded readings (``ts,device,quantity,value``); or ``inputs``,
  naming the files and directories to read instead (the ``backfill-*`` cases: other
  shapes, containers and timestamp forms of the readings of a ``replay-*`` case).
* ``expected.jsonl``: the JSON lines ``replay`` prints, in order (records of several
  devices for the same interval may come in any order among themselves); or
  ``expected.err``: the message that rejects the whole file.
* ``topics`` (optional): the ``--topics`` filter, comma-separated; default all.
* ``expected.bad`` (optional): the rows reported as bad, ``line N: reason``.

Floats are compared exactly: payloads are rounded to 9 decimals and the cases use
round numbers, so a difference is a real difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.core.engine import load_kernel
from agent.replay import Backfill, Options, Reader, ReplayInputError, Topic
from drivers.profile import ProfileLibrary

CASES = Path(__file__).resolve().parents[2] / "cases"
REPLAY_CASES = sorted(
    p for pattern in ("replay-*", "backfill-*") for p in CASES.glob(pattern) if p.is_dir()
)
LIBRARY = ProfileLibrary()

# The kernel is imported now, with numba's default cache: the cases' configs name no
# state_dir, and the default one (/var/lib/energy-agent) is not the tests' to create.
load_kernel()


def _topics(case: Path) -> frozenset[Topic]:
    f = case / "topics"
    if not f.exists():
        return frozenset(Topic)
    return frozenset(Topic(t.strip()) for t in f.read_text().strip().split(","))


#: Both readers judge every case: pyarrow's, and the plain-Python one of gateways without it.
READERS = [Reader.ARROW, Reader.PYTHON]


def _inputs(case: Path) -> list[Path]:
    """``readings.csv``, or whatever the case names in ``inputs`` (files, directories)."""
    f = case / "inputs"
    if not f.exists():
        return [case / "readings.csv"]
    return [case / name for name in f.read_text().split()]


def _run(
    case: Path, csv: Path | None = None, reader: Reader = Reader.ARROW
) -> tuple[list[dict[str, Any]], list[str]]:
    config = load_config(case / "config.yaml")
    options = Options(_topics(case), reader=reader)
    backfill = Backfill(config, LIBRARY, [csv] if csv else _inputs(case), options)
    out = [m.as_json_line() for batch in backfill.run() for m in batch]
    return out, [_bad_line(backfill, b) for b in sorted(backfill.bad)]


def _bad_line(backfill: Backfill, b: Any) -> str:
    """``line N: reason``; with several inputs ``file: line N: reason``."""
    if len(backfill.sources) == 1:
        return str(b)
    return f"{backfill.sources[b.source].path.name}: {b}"


def _normalise(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort each run of consecutive energy records by (ts, topic); keep all else in place."""
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    for m in [*lines, None]:
        if m is not None and m["topic"].endswith("/energy"):
            run.append(m)
            continue
        out += sorted(run, key=lambda e: (e["payload"]["ts"], e["topic"]))
        run = []
        if m is not None:
            out.append(m)
    return out


def _expected(case: Path) -> list[dict[str, Any]]:
    text = (case / "expected.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cases_exist() -> None:
    names = {p.name for p in REPLAY_CASES}
    assert len(names) >= 12, names
    for case in REPLAY_CASES:
        assert (case / "config.yaml").is_file(), case
        assert all(p.exists() for p in _inputs(case)), case
        expected = [n for n in ("expected.jsonl", "expected.err") if (case / n).exists()]
        assert len(expected) == 1, f"{case.name}: needs one of expected.jsonl, expected.err"


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.value)
@pytest.mark.parametrize("case", REPLAY_CASES, ids=lambda p: p.name)
def test_replay_case(case: Path, reader: Reader) -> None:
    err_file = case / "expected.err"
    if err_file.exists():
        config = load_config(case / "config.yaml")
        with pytest.raises(ReplayInputError) as info:
            backfill = Backfill(config, LIBRARY, _inputs(case), Options(reader=reader))
            list(backfill.run())
        got = str(info.value).replace(f"{case}/", "")
        assert got == err_file.read_text(encoding="utf-8").strip()
        return
    got, bad = _run(case, reader=reader)
    expected = _expected(case)
    assert len(got) == len(expected), "\n".join(json.dumps(m) for m in got)
    for i, (g, e) in enumerate(zip(_normalise(got), _normalise(expected), strict=True)):
        assert g == e, f"line {i + 1} of expected.jsonl"
    bad_file = case / "expected.bad"
    expected_bad = bad_file.read_text().splitlines() if bad_file.exists() else []
    assert bad == expected_bad


def test_intensity_follows_the_energy_of_its_interval() -> None:
    """In every case, an intensity record comes after every energy record of its ts."""
    for case in REPLAY_CASES:
        if not (case / "expected.jsonl").exists():
            continue
        got, _ = _run(case)
        seen_intensity: set[int] = set()
        for m in got:
            ts = m["payload"]["ts"]
            if m["topic"].endswith("/intensity"):
                seen_intensity.add(ts)
            elif m["topic"].endswith("/energy"):
                assert ts not in seen_intensity, f"{case.name}: energy {ts} after its intensity"


def test_bad_rows_change_nothing(tmp_path: Path) -> None:
    """The good rows of a file with bad rows give what the clean file gives."""
    case = CASES / "replay-bad-rows"
    lines = (case / "readings.csv").read_text().splitlines(keepends=True)
    bad_lines = {
        int(b.split()[1].rstrip(":")) for b in (case / "expected.bad").read_text().splitlines()
    }
    assert len(bad_lines) == 10
    clean = tmp_path / "clean.csv"
    clean.write_text("".join(t for n, t in enumerate(lines, start=1) if n not in bad_lines))
    dirty_out, dirty_bad = _run(case)
    clean_out, clean_bad = _run(case, clean)
    assert clean_bad == []
    assert len(dirty_bad) == 10
    assert dirty_out == clean_out
