"""Fuzzing the document loaders: mutated configs, bridge configs and profiles.

Whatever the bytes, loading either returns a model or raises the package's
documented error (ConfigError, ProfileError: both DocumentError) whose every
problem has a message and, where it has a line, one inside the file. No other
exception, no hang, bounded memory. Mutations are the ones a careless edit or
an attacker makes: flipped bytes, a truncated file, duplicated lines (keys),
anchors, aliases and tags inserted, deep nesting, huge scalars, Latin-1 and
control characters.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import parse_bridge_config, parse_config
from confdoc.errors import DocumentError
from confdoc.yamldoc import decode_document
from drivers.profile import ProfileLibrary, parse_profile

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ProfileLibrary()
FILE = "fuzz.yaml"
#: Per example, on a busy machine; the loaders' own limits keep the worst near 5 s.
SECONDS = 15.0
#: Python allocations per example (tracemalloc's peak); before, an alias bomb took 3.7 GB.
PEAK_MB = 150.0

AGENT_SEEDS = [
    (ROOT / "configs/gateway-example.yaml").read_text(),
    (ROOT / "tests/cases/config-ok-design-example/config.yaml").read_text(),
    (ROOT / "tests/cases/config-yaml-alias-ok/config.yaml").read_text(),
    (ROOT / "configs/demo.yaml").read_text(),
]
BRIDGE_SEEDS = [
    (ROOT / "configs/bridge-example.yaml").read_text(),
    (ROOT / "tests/cases/bridge-config-ok/config.yaml").read_text(),
]
PROFILE_SEEDS = [
    (ROOT / "drivers/profiles/eastron-sdm630.yaml").read_text(),
    (ROOT / "drivers/profiles/chint-dtsu666.yaml").read_text(),
]

#: Fragments an edit or an attacker inserts.
INSERTS = [
    "&a ",
    "*a",
    "&a [x, x, x, x, x, x, x, x, x]\n",
    "<<: *a\n",
    "!!python/name:os.system ",
    "!!python/object/apply:os.system [id]",
    "!include other.yaml",
    "!!binary aGk=",
    "!!set {a, b}",
    "? [a, b]\n: c\n",
    "${HOME}",
    "${UNSET_VARIABLE}",
    "$$",
    "\t",
    "\x00",
    "\x07",
    "\ufeff",
    "caf\xe9",
    "'",
    '"',
    "{",
    "[",
    "- ",
    ": ",
    "---\n",
    "...\n",
    "0b_",
    "._",
    "=",
    "1e400",
    "-.inf",
    "~",
    "9" * 5000,
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str]) -> bytes:
    """A seed document with one to four mutations, as bytes (decoding is part of loading)."""
    data = bytearray(draw(st.sampled_from(seeds)).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "duplicate", "insert", "nest", "huge", "laughs", "bytes"]
            )
        )
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            lines = bytes(data).splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
                data = bytearray(b"".join(lines))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS)).encode("utf-8", "surrogatepass")
        elif kind == "nest":
            depth = draw(st.sampled_from([10, 31, 33, 1000, 20_000]))
            opening, closing = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
            data[at:at] = (opening * depth + closing * depth).encode()
        elif kind == "huge":
            # up to the limit is parsed (1 MiB takes seconds: the CLI test times that one)
            size = draw(st.sampled_from([1000, 200_000, 2 * 1024 * 1024]))
            data[at:at] = b"x" * size
        elif kind == "laughs":
            levels = "".join(
                f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
            )
            data[at:at] = (
                "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + levels
            ).encode()
        elif kind == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _load(data: bytes, parse: Callable[[str], Any]) -> None:
    """Decode as the file readers do, parse, and check the outcome and its bounds."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        text, problems = decode_document(data, FILE)
        try:
            if text is None:
                raise DocumentError(problems)
            parse(text)
        except DocumentError as exc:  # the one documented failure: check what it says
            _check_problems(exc, data)
        took = time.monotonic() - started
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert took < SECONDS, f"{took:.1f} s for {len(data)} bytes"
    assert peak_mb < PEAK_MB, f"{peak_mb:.0f} MB for {len(data)} bytes"


def _check_problems(exc: DocumentError, data: bytes) -> None:
    assert exc.problems, "an error without problems"
    # YAML also breaks lines at a lone \r, NEL, LS and PS; splitlines() counts those too
    lines = max(data.count(b"\n"), len(data.decode("utf-8", "replace").splitlines())) + 1
    for p in exc.problems:
        assert p.message.strip(), p
        # a line on a terminal (an enum lists its choices), never a dump of the input
        assert len(p.message) <= 1000 and len(str(p)) < 1200, str(p)[:1300]
        assert p.line is None or 1 <= p.line <= lines, (p, lines)
        assert p.file in (FILE, "") or p.file.endswith(".yaml"), p


_SETTINGS = settings(
    # FUZZ_EXAMPLES=5000 for a longer hunt; 100 keeps the unit suite in seconds
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,  # timed by _load itself, generously: the machine is shared
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(mutated(AGENT_SEEDS))
def test_gateway_config_loader(data: bytes) -> None:
    _load(data, lambda text: parse_config(text, FILE, env={}, profiles=LIBRARY))


@_SETTINGS
@given(mutated(BRIDGE_SEEDS))
def test_bridge_config_loader(data: bytes) -> None:
    _load(data, lambda text: parse_bridge_config(text, FILE, env={}))


@_SETTINGS
@given(mutated(PROFILE_SEEDS))
def test_profile_loader(data: bytes) -> None:
    _load(data, lambda text: parse_profile(text, FILE, expected_id="eastron-sdm630"))


@pytest.mark.parametrize("seed", AGENT_SEEDS + BRIDGE_SEEDS + PROFILE_SEEDS)
def test_the_seeds_decode(seed: str) -> None:
    # The mutations start from documents that load (or fail only on environment or id).
    text, problems = decode_document(seed.encode(), FILE)
    assert text == seed and problems == []
