"""Strict YAML loading: duplicate keys, no surprise types, a line for every path."""

from __future__ import annotations

import textwrap

import yaml
from pydantic import BaseModel, ConfigDict

from drivers.yamldoc import format_path, model_problems, parse_yaml


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
        (5, "key [1, 2] must be a string"),
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
