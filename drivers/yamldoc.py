"""Strict YAML loading that remembers where every value came from.

Profiles and configs are edited by hand on gateways; an error that says
"line 14" is fixed in seconds, one that says "invalid" is not. PyYAML's safe
loader silently keeps the last of two duplicate keys, which hides typos, so
duplicates are errors here. pydantic error locations are mapped back to lines.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from drivers.errors import Problem

Path = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    pass


def _no_timestamps() -> None:
    # Dates in YAML become datetime objects; our documents have none, and a
    # string that looks like a date must stay a string.
    resolvers = _Loader.yaml_implicit_resolvers
    for key, entries in list(resolvers.items()):
        resolvers[key] = [(tag, rx) for tag, rx in entries if tag != "tag:yaml.org,2002:timestamp"]


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_no_timestamps()


class YamlDocument:
    """A parsed YAML document plus the line of each path in it (1-based)."""

    def __init__(self, data: Any, lines: dict[Path, int], file: str) -> None:
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Line of the deepest existing prefix of ``path``."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        return Problem(format_path(path), message, self.file, self.line_of(path))


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_yaml(text: str, file: str = "") -> tuple[YamlDocument | None, list[Problem]]:
    """Parse ``text``; return the document or the problems (syntax, duplicate keys)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        # The problem mark can be far from the cause (an unclosed quote or brace is
        # found at the next entry or at the end of the file); the context says where
        # the construct that failed began.
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            what += f" ({context} on line {context_mark.line + 1})"
        return None, [Problem("", f"not valid YAML: {what}", file, line)]
    if node is None:
        return YamlDocument({}, {(): 1}, file), []
    lines: dict[Path, int] = {}
    problems: list[Problem] = []
    constructor = _Loader(text)
    try:
        data = _build(node, (), lines, problems, constructor, file)
    finally:
        constructor.dispose()
    return YamlDocument(data, lines, file), problems


def _build(
    node: yaml.Node,
    path: Path,
    lines: dict[Path, int],
    problems: list[Problem],
    constructor: yaml.constructor.SafeConstructor,
    file: str,
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(
                    Problem(
                        format_path(path),
                        "merge keys (<<) are not supported",
                        file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                problems.append(
                    Problem(
                        format_path(path),
                        f"key {key!r} must be a string",
                        file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            key = str(key)
            if key in out:
                problems.append(
                    Problem(
                        format_path((*path, key)),
                        f"duplicate key '{key}' (the first is on line {lines[(*path, key)]})",
                        file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            out[key] = _build(value_node, (*path, key), lines, problems, constructor, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), lines, problems, constructor, file)
            for i, item in enumerate(node.value)
        ]
    return constructor.construct_object(node, deep=True)


def validation_problems(doc: YamlDocument, exc: ValidationError, base: Path = ()) -> list[Problem]:
    """Turn pydantic errors into problems with paths and lines."""
    problems = []
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    for err, at in zip(errors, locs, strict=True):
        # pydantic checks a tuple's min_length against the items that validated, so one
        # bad item in a one-item list also says "should have at least 1 item ..., not 0".
        # The item's own error is the cause; that length error would only mislead.
        if err["type"] == "too_short" and any(
            len(other) > len(at) and other[: len(at)] == at for other in locs
        ):
            continue
        loc = (*base, *(p for p in err["loc"] if not _is_union_tag(p)))
        problems.append(doc.problem(loc, _message(err)))
    return problems


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the union member's name ("function-after[...]", "TcpBus") into loc.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


#: Human wording for regular expressions used in the models, keyed by pattern.
PATTERN_HINTS = {
    r"^[a-z0-9][a-z0-9_-]{0,63}$": "ids use lower-case letters, digits, '-' and '_', start with "
    "a letter or digit and are at most 64 long, e.g. 'press-1'",
    r"^[a-z0-9]+(?:-[a-z0-9]+)+$": "profile ids are lower-case 'maker-model', e.g. "
    "'eastron-sdm630'",
    r"^https?://": "must start with http:// or https://",
}


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; `energy-agent schema` lists every key)"
    if kind == "missing":
        return "required key is missing"
    msg: str = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    inp = err.get("input")
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(str(err.get("ctx", {}).get("pattern")))
        if hint:
            return f"{hint} (got {inp!r})"
    if kind == "enum" and isinstance(inp, str):
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(inp, choices, n=1, cutoff=0.6)
        if close:
            return f"{msg} (got {inp!r} — did you mean {close[0]!r}?)"
    if kind in {"enum", "literal_error"} or kind.endswith(("_parsing", "_type")):
        return f"{msg} (got {inp!r})"
    return msg


def model_problems(
    doc: YamlDocument, model: type[BaseModel], context: dict[str, Any] | None = None
) -> tuple[BaseModel | None, list[Problem]]:
    try:
        return model.model_validate(doc.data, context=context), []
    except ValidationError as exc:
        return None, validation_problems(doc, exc)
