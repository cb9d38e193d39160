"""Strict YAML loading: duplicate keys, no surprise types, a line for every path."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from confdoc import yamldoc
from confdoc.yamldoc import format_path, model_problems, parse_yaml


def doc(text: str):  # type: ignore[no-untyped-def]
    d, problems = parse_yaml(textwrap.dedent(text).lstrip("\n"), "cfg.yaml")
    assert problems == []
    assert d is not None
    return d


def test_duplicate_key_names_both_lines() -> None:
    text = "site: a\ngateway: g\nsite: b\n"
    _, problems = parse_yaml(text, "cfg.yaml")
    assert len(problems) == 1
    p = problems[0]
    assert p.line == 3
    assert p.path == "site"
    assert "duplicate key 'site'" in p.message
    assert "line 1" in p.message
    assert str(p) == "cfg.yaml:3: site: duplicate key 'site' (the first is on line 1)"


def test_nested_duplicate_key_in_a_list_item() -> None:
    text = textwrap.dedent(
        """\
        devices:
          - id: a
            unit: 1
          - id: b
            unit: 2
            unit: 3
        """
    )
    _, problems = parse_yaml(text, "cfg.yaml")
    assert [(p.path, p.line) for p in problems] == [("devices[1].unit", 6)]
    assert "the first is on line 5" in problems[0].message


def test_every_duplicate_is_reported() -> None:
    _, problems = parse_yaml("a: 1\nb: 2\na: 3\nb: 4\na: 5\n")
    assert [p.line for p in problems] == [3, 4, 5]


def test_dates_and_times_stay_strings() -> None:
    d = doc(
        """
        since: 2024-01-02
        at: 2024-01-02T03:04:05Z
        version: 1.10
        flag: true
        n: 0x10
        """
    )
    assert d.data["since"] == "2024-01-02"
    assert d.data["at"] == "2024-01-02T03:04:05Z"
    # the other implicit types are unchanged
    assert d.data["version"] == 1.1
    assert d.data["flag"] is True
    assert d.data["n"] == 16


def test_pyyaml_safe_load_is_not_patched() -> None:
    import datetime

    assert isinstance(yaml.safe_load("d: 2024-01-02")["d"], datetime.date)


def test_line_of_nested_paths() -> None:
    d = doc(
        """
        # comment
        site:
          id: plant-a
        devices:
          - id: press-1
            registers:
              - {quantity: output_units, address: 100}
              - quantity: frequency_hz
                address: 7
          - {id: press-2, unit: 2}
        """
    )
    assert d.line_of(("site",)) == 2
    assert d.line_of(("site", "id")) == 3
    assert d.line_of(("devices",)) == 4
    assert d.line_of(("devices", 0)) == 5
    assert d.line_of(("devices", 0, "registers", 0)) == 7
    assert d.line_of(("devices", 0, "registers", 0, "address")) == 7
    assert d.line_of(("devices", 0, "registers", 1)) == 8
    assert d.line_of(("devices", 0, "registers", 1, "address")) == 9
    assert d.line_of(("devices", 1, "unit")) == 10
    # a path that does not exist falls back to its deepest existing parent
    assert d.line_of(("devices", 0, "registers", 1, "type")) == 8
    assert d.line_of(("devices", 5)) == 4
    assert d.line_of(("nowhere",)) == 2
    assert d.data["devices"][0]["registers"][1] == {"quantity": "frequency_hz", "address": 7}


def test_format_path() -> None:
    assert (
        format_path(("devices", 0, "registers", 3, "address")) == "devices[0].registers[3].address"
    )
    assert format_path(()) == ""
    assert format_path(("ratios", "ct")) == "ratios.ct"


def test_syntax_error_names_where_the_broken_construct_starts() -> None:
    # the list opened on line 2 is never closed; the parser notices on line 3
    d, problems = parse_yaml("a: 1\nb: [1, 2\nc: 3\n", "x.yaml")
    assert d is None
    assert [str(p) for p in problems] == [
        "x.yaml:3: (top level): not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence on line 2)"
    ]
    # an unclosed quote is only noticed at the end of the file
    _, problems = parse_yaml('a: 1\nb: "open\nc: 3\n', "x.yaml")
    assert [(p.line, p.message) for p in problems] == [
        (
            4,
            "not valid YAML: found unexpected end of stream "
            "(while scanning a quoted scalar on line 2)",
        )
    ]


def test_merge_keys_and_non_string_keys_are_rejected() -> None:
    text = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n[1, 2]: z\n"
    _, problems = parse_yaml(text, "x.yaml")
    assert [(p.line, p.message) for p in problems] == [
        (3, "merge keys (<<) are not supported"),
        (5, "a key must be a string, not a list"),
    ]


def test_empty_document_is_an_empty_mapping() -> None:
    d, problems = parse_yaml("# nothing\n", "x.yaml")
    assert problems == []
    assert d is not None
    assert d.data == {}


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    items: list[_Inner]


def test_validation_problems_point_at_the_line() -> None:
    d = doc(
        """
        name: x
        items:
          - port: 1
          - port: many
          - port: 3
            colour: red
        """
    )
    model, problems = model_problems(d, _Outer)
    assert model is None
    assert [(p.path, p.line) for p in problems] == [("items[1].port", 4), ("items[2].colour", 6)]
    assert "got 'many'" in problems[0].message
    assert problems[1].message.startswith("unknown key")


def test_missing_key_points_at_its_parent() -> None:
    d = doc(
        """
        name: x
        items:
          - {}
        """
    )
    _, problems = model_problems(d, _Outer)
    assert [(p.path, p.line, p.message) for p in problems] == [
        ("items[0].port", 3, "required key is missing")
    ]


# --- hostile documents: bounded, and every failure a problem with a line ---------------------

#: "Billion laughs": nine levels of nine aliases, 9**9 strings if every alias is expanded.
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi", strict=True)
)


def _bounded(text: str, seconds: float = 2.0, mb: float = 64.0) -> list[str]:
    """parse_yaml's problems, asserting it stayed within ``seconds`` and ``mb`` of memory."""
    import time
    import tracemalloc

    tracemalloc.start()
    start = time.monotonic()
    try:
        _, problems = parse_yaml(text, "x.yaml")
        took = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert took < seconds, f"{took:.1f} s"
    assert peak < mb, f"{peak:.0f} MB"
    return [str(p) for p in problems]


def test_alias_bomb_is_refused_within_milliseconds_and_megabytes() -> None:
    # Before: every alias expanded, 3.7 GB and a MemoryError for 443 bytes.
    assert len(LAUGHS) < 450
    assert _bounded(LAUGHS, seconds=1.0, mb=20) == [
        # line 5: where the aliases used so far passed the budget (e: 9**4 copies of 'lol')
        "x.yaml:5: (top level): aliases (*name) expand to more than 10,000 values: "
        "write the values out, or use fewer aliases"
    ]


def test_alias_bomb_as_a_key_is_never_built() -> None:
    # The bomb is defined inside a key (a flow list): refused without being built. Before:
    # constructed, then its repr put into the message.
    levels = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
        f"&{k} [{', '.join(['*' + p] * 9)}]" for p, k in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    text = f"name: x\n? [{', '.join(levels)}]\n: value\n"
    assert _bounded(text, seconds=1.0, mb=20) == [
        "x.yaml:2: (top level): a key must be a string, not a list"
    ]


def test_aliases_within_the_budget_are_expanded() -> None:
    d = doc(
        """
        shared: &regs [{quantity: output_units, address: 100}]
        one: {registers: *regs}
        two: {registers: *regs}
        """
    )
    assert (
        d.data["one"]
        == d.data["two"]
        == {"registers": [{"quantity": "output_units", "address": 100}]}
    )
    # each copy is its own object: changing one (${ENV} expansion does) leaves the other
    assert d.data["one"]["registers"] is not d.data["two"]["registers"]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert _bounded("x: 1\nloop: &a\n  - *a\n") == [
        "x.yaml:2: (top level): nested deeper than 32 levels, through aliases (*name)"
    ]


@pytest.mark.parametrize("opening,closing", [("[", "]"), ("{a: ", "}"), ("- ", "")])
def test_deep_nesting_is_a_problem_not_a_recursion_error(opening: str, closing: str) -> None:
    # Before: 100,000 levels raised RecursionError out of PyYAML's composer.
    if opening == "- ":
        text = "".join("  " * i + "-\n" for i in range(500))  # block style: 500 lines deep
    else:
        text = "a: " + opening * 100_000 + "1" + closing * 100_000 + "\n"
    (problem,) = _bounded(text, seconds=5.0)
    assert "nested deeper than 32 levels" in problem
    assert problem.startswith("x.yaml:")


@pytest.mark.parametrize(
    "value,shown",
    [
        ("!!python/name:os.system x", "!!python/name:os.system"),
        ("!!python/object/apply:os.system [echo]", "!!python/object/apply:os.system"),
        ("!!python/object:__main__.X {}", "!!python/object:__main__.X"),
        ("!secret mqtt", "!secret"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [{a: 1}]", "!!omap"),
        ("!!timestamp 2024-01-01", "!!timestamp"),
    ],
)
def test_tags_other_than_plain_values_are_problems(value: str, shown: str) -> None:
    # Before: ConstructorError tracebacks (or bytes, sets and dates the models never expect).
    problems = _bounded(f"name: x\nitem:\n  value: {value}\n")
    assert problems == [
        f"x.yaml:3: item.value: the tag '{shown}' is not allowed: a config holds plain "
        "strings, numbers, true/false, null, lists and mappings"
    ]


def test_plain_tags_spelled_out_are_fine() -> None:
    d = doc("a: !!str 0123\nb: !!int '7'\nc: !!float 1\nd: !!bool true\ne: !!null ''\n")
    assert d.data == {"a": "0123", "b": 7, "c": 1.0, "d": True, "e": None}


def test_scalars_pyyaml_cannot_construct_are_problems() -> None:
    # Before: ValueError / ConstructorError tracebacks from the safe loader itself.
    problems = _bounded("a: 0b_\nb: " + "9" * 5000 + "\nc: =\nd: <<\n")
    assert problems == [
        "x.yaml:1: a: '0b_' is not a valid integer",
        "x.yaml:2: b: '" + "9" * 58 + "… is not a valid integer",
    ]
    d, _ = parse_yaml("c: =\nd: <<\n")
    assert d is not None and d.data == {"c": "=", "d": "<<"}  # strings, as they read


def test_refused_values_are_not_reported_again_by_the_model() -> None:
    d, problems = parse_yaml("name: !!python/name:os.system x\nitems: []\n", "x.yaml")
    assert d is not None and len(problems) == 1
    _, model_errors = model_problems(d, _Outer)
    assert model_errors == []  # not also "name: Input should be a valid string"


def test_control_characters_are_a_problem_with_their_line() -> None:
    assert _bounded("a: 1\nb: ok\x07\n") == [
        "x.yaml:2: (top level): not valid YAML: character U+0007 is not allowed in YAML text"
    ]


def test_too_many_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real bound (50,000) through the CLI, timed: tests/integration/test_config_hostile.py
    monkeypatch.setattr(yamldoc, "MAX_NODES", 2000)
    d, problems = parse_yaml("[" + "1," * 1998 + "1]", "x.yaml")
    assert problems == [] and d is not None and len(d.data) == 1999
    assert _bounded("[" + "1," * 2000 + "1]") == [
        "x.yaml:1: (top level): more than 2,000 values (a config of 1,000 meters has about 13,000)"
    ]


def test_text_over_the_size_limit_is_refused_unparsed() -> None:
    text = "a: " + "x" * 1024 * 1024  # the limit, MAX_DOCUMENT_BYTES, is 1 MiB
    assert _bounded(text, seconds=0.5) == [
        "x.yaml: (top level): longer than 1 MiB, the limit for a document"
    ]


def test_long_messages_stay_short() -> None:
    d = doc(f"name: x\nitems: [{{port: {'9' * 300}.5}}]\n")
    _, problems = model_problems(d, _Outer)
    assert len(problems[0].message) < 150, problems[0].message


def test_confdoc_stands_alone() -> None:
    """Configs and profiles both build on confdoc, so it may import neither drivers nor agent:
    checked in a fresh interpreter, after a document is parsed and a file refused."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from confdoc.yamldoc import parse_yaml, read_document\n"
        "parse_yaml('a: 1\\n', 'x.yaml')\n"
        "read_document('/nonexistent/x.yaml')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    assert "confdoc.yamldoc" in modules
    assert [m for m in modules if m.split(".")[0] in ("agent", "drivers")] == []


def test_a_large_config_parses_in_little_memory_and_keeps_its_lines() -> None:
    # 200 meters with 14 inline registers each (as bench_topology's config; 190 KB): 21 MB
    # while parsing before, which stayed the gateway's RSS after start-up.
    registers = "".join(
        f"      - {{quantity: q{r}, table: input, address: {2 * r}, type: float32}}\n"
        for r in range(14)
    )
    text = "devices:\n" + "".join(
        f"  - id: m{u:03d}\n    bus: bus-1\n    unit: {u}\n    registers:\n{registers}"
        for u in range(200)
    )
    assert len(text) > 150_000
    _bounded(text, seconds=30.0, mb=16)
    doc, problems = parse_yaml(text, "x.yaml")
    assert problems == [] and doc is not None
    assert doc.data["devices"][199]["registers"][13] == {
        "quantity": "q13",
        "table": "input",
        "address": 26,
        "type": "float32",
    }
    # device 199 starts on line 2 + 199 * 18; its 14th register is 4 + 13 lines below
    assert doc.line_of(("devices", 199, "registers", 13, "address")) == 2 + 199 * 18 + 17
    assert doc.line_of(("devices", 199, "id")) == 2 + 199 * 18
