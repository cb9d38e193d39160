"""Strict YAML loading that remembers where every value came from.

Profiles and configs are edited by hand on gateways; an error that says
"line 14" is fixed in seconds, one that says "invalid" is not. PyYAML's safe
loader silently keeps the last of two duplicate keys, which hides typos, so
duplicates are errors here. pydantic error locations are mapped back to lines.

A document is also input from whoever can edit it, so loading one is bounded:
its size (read no further than the limit), its nesting, its number of values
and what its aliases may add (a "billion laughs" file of 443 bytes expanded to
3.7 GB before), and only plain values are built (no ``!!python/...`` or other
tags). Every failure, whatever PyYAML raised, is a :class:`Problem` with the
file and, where there is one, the line: never a traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path as FilePath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from confdoc.errors import FileRefused, Problem
from confdoc.files import read_bounded, size_text

Path = tuple[str | int, ...]

#: The largest document read. A gateway's config with 1,000 meters is about 100 KiB
#: and the largest profile 10 KiB; ten times that is a mistake, not a config. PyYAML
#: parses some 300 KiB a second, so this also bounds the time a document can take.
MAX_DOCUMENT_BYTES = 1 << 20
#: Nesting deeper than this is refused (a config is six levels deep): PyYAML composes
#: recursively, and 100,000 opening brackets would exhaust Python's stack.
MAX_DEPTH = 32
#: Values in a document, counted as they are parsed (keys count): a config of 1,000
#: meters has about 13,000. PyYAML composes 15,000 to 50,000 a second (measured on a
#: busy 2-core VM), and a 1 MiB file of ``[1,1,1,...`` would have half a million: this
#: bound, not the size, is what keeps a hostile document within seconds.
MAX_NODES = 50_000
#: Values an alias may add. Aliases are allowed (several meters sharing one inline
#: register list is a real use), but each one copies its anchor's values, so nine
#: nested levels of ten aliases ("billion laughs", 443 bytes) would make a billion.
MAX_ALIAS_VALUES = 10_000

_YAML = "tag:yaml.org,2002:"
#: Plain YAML values: what a config, bridge config or profile is made of. Anything
#: else (``!!python/name:...``, ``!!binary``, ``!!set``, a local ``!tag``) is refused.
_SAFE_TAGS = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
_KINDS = {_YAML + "int": "integer", _YAML + "float": "number"}


class _Refused:
    """Stands for a value already reported (a refused tag, an unreadable number), so the
    models' complaint about the same value ("should be a string") is not said twice."""

    def __repr__(self) -> str:
        return "<refused>"


REFUSED = _Refused()


class _TooLarge(Exception):
    """A limit above was exceeded; the document is refused as a whole."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, counting depth and values while it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0
        #: One start mark per line, shared by the nodes on it (see _Line).
        self.lines: dict[int, _Line] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        self.nodes += 1
        if self.depth > MAX_DEPTH:
            raise _TooLarge(
                f"nested deeper than {MAX_DEPTH} levels (a config needs about 6)",
                self.peek_event().start_mark.line + 1,  # type: ignore[no-untyped-call]
            )
        if self.nodes > MAX_NODES:
            raise _TooLarge(
                f"more than {MAX_NODES:,} values (a config of 1,000 meters has about 13,000)",
                self.peek_event().start_mark.line + 1,  # type: ignore[no-untyped-call]
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if node is not None and not isinstance(node.start_mark, _Line):  # not an alias's
            node.start_mark = self._line(node.start_mark.line)
            node.end_mark = None
        return node

    def _line(self, line: int) -> _Line:
        mark = self.lines.get(line)
        if mark is None:
            mark = self.lines[line] = _Line(line)
        return mark


class _Line:
    """A composed node's start mark, cut to what the builder reads (its line).

    PyYAML's marks (name, index, line, column, buffer, pointer) are two objects per
    node, kept with the whole node tree until it is built: for a config of 200 meters
    with inline registers (270 KB, 35,000 nodes) half of the 24 MB that parsing
    needed. Freed after start-up, that memory stayed the gateway's RSS (Python's
    allocator keeps arenas that still hold one live object).
    """

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line


def _plain_resolvers() -> None:
    # Dates in YAML become datetime objects; our documents have none, and a string
    # that looks like a date must stay a string. YAML 1.1's "value" type ('=') has no
    # constructor in the safe loader: `password: =` would fail. Both stay strings.
    keep = {_YAML + t for t in ("bool", "float", "int", "null", "merge")}
    _Loader.yaml_implicit_resolvers = {
        key: [(tag, rx) for tag, rx in entries if tag in keep]
        for key, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_plain_resolvers()


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
    """``devices[0].registers[3]``; an absurdly long key is cut (a message stays a line)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= 60 else part[:59] + "…"
            out += f".{name}" if out else name
    return out


def short(value: object, width: int = 60) -> str:
    """``repr`` cut to ``width``: a message must stay a line, whatever the value."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def read_document(file: str | FilePath, what: str = "the file") -> tuple[str | None, list[Problem]]:
    """The text of a YAML file, or the problems: unreadable, too large, binary, not UTF-8.

    ``what`` names the file in messages ("the config file").
    """
    name = str(file)
    try:
        data = read_bounded(file, MAX_DOCUMENT_BYTES, what)
    except FileRefused as exc:
        return None, [Problem("", f"cannot read {what}: {exc.reason}", name)]
    return decode_document(data, name)


def decode_document(data: bytes, file: str = "") -> tuple[str | None, list[Problem]]:
    """UTF-8 text, or where it is not: the line, so the editor can find the byte."""
    nul = data.find(b"\x00")
    if nul >= 0:
        return None, [
            Problem(
                "",
                "a NUL byte: this is a binary file, or text saved as UTF-16; save it as UTF-8",
                file,
                data.count(b"\n", 0, nul) + 1,
            )
        ]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [
            Problem(
                "",
                f"not UTF-8 (byte {data[exc.start]:#04x} at column {column}): save the file "
                "as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                file,
                line,
            )
        ]


def parse_yaml(text: str, file: str = "") -> tuple[YamlDocument | None, list[Problem]]:
    """Parse ``text``; return the document or the problems.

    Never raises for any text: syntax errors, duplicate keys, tags other than plain
    values, numbers Python cannot read and the limits above are all problems.
    """
    if len(text) > MAX_DOCUMENT_BYTES:
        return None, [
            Problem(
                "", f"longer than {size_text(MAX_DOCUMENT_BYTES)}, the limit for a document", file
            )
        ]
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return YamlDocument({}, {(): 1}, file), []
        builder = _Builder(loader, file, budget=loader.nodes + MAX_ALIAS_VALUES)
        data = builder.build(node, (), 1, 1)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        what = f"character {exc.character!r} is not allowed in YAML ({exc.reason})"
        if isinstance(exc.character, int):
            what = f"character U+{exc.character:04X} is not allowed in YAML text"
        return None, [Problem("", f"not valid YAML: {what}", file, line)]
    except yaml.YAMLError as exc:
        return None, [_syntax_problem(exc, file)]
    except _TooLarge as exc:
        return None, [Problem("", str(exc), file, exc.line)]
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data, builder.lines, file), builder.problems


def _syntax_problem(exc: yaml.YAMLError, file: str) -> Problem:
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
    if len(what) > 200:  # PyYAML quotes the token: an alias name can be a megabyte
        what = what[:199] + "…"
    return Problem("", f"not valid YAML: {what}", file, line)


class _Builder:
    """Composed nodes to plain data, a line per path; aliases expanded within a budget."""

    def __init__(self, loader: _Loader, file: str, budget: int) -> None:
        self.loader = loader
        self.file = file
        self.budget = budget
        self.lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        #: Nodes built once; meeting one again is an alias (composed nodes are shared).
        self.seen: set[int] = set()

    def _problem(self, path: Path, message: str, node: yaml.Node) -> None:
        self.problems.append(
            Problem(format_path(path), message, self.file, node.start_mark.line + 1)
        )

    def _plain(self, node: yaml.Node, path: Path) -> bool:
        if node.tag in _SAFE_TAGS or node.tag == _YAML + "merge":
            return True
        tag = node.tag.replace(_YAML, "!!", 1) if node.tag.startswith(_YAML) else node.tag
        self._problem(
            path,
            f"the tag {short(tag)} is not allowed: a config holds plain strings, numbers, "
            "true/false, null, lists and mappings",
            node,
        )
        return False

    def build(self, node: yaml.Node, path: Path, depth: int, site: int) -> Any:
        """``site``: the line this node is used on; an alias's node was defined elsewhere."""
        alias = id(node) in self.seen
        if not alias:
            self.seen.add(id(node))
            site = node.start_mark.line + 1
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge(
                f"aliases (*name) expand to more than {MAX_ALIAS_VALUES:,} values: write "
                "the values out, or use fewer aliases",
                site,
            )
        if depth > MAX_DEPTH:  # reached through aliases, or an alias inside its own anchor
            raise _TooLarge(f"nested deeper than {MAX_DEPTH} levels, through aliases (*name)", site)
        self.lines[path] = node.start_mark.line + 1
        if not self._plain(node, path):
            return REFUSED
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth, site if alias else None)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, (*path, i), depth + 1, site) for i, item in enumerate(node.value)
            ]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        if node.tag == _YAML + "merge":  # `<<` as a value, not as a key: just a string
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError):
            # "0b_" matches YAML 1.1's integer pattern but int() refuses it; so does an
            # integer of more than 4,300 digits.
            kind = _KINDS.get(node.tag, "value")
            self._problem(path, f"{short(node.value)} is not a valid {kind}", node)
            return REFUSED

    def _mapping(
        self, node: yaml.MappingNode, path: Path, depth: int, alias_site: int | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _YAML + "merge":
                self._problem(path, "merge keys (<<) are not supported", key_node)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in out:
                first = self.lines[(*path, key)]
                self._problem(
                    (*path, key), f"duplicate key '{key}' (the first is on line {first})", key_node
                )
                continue
            line = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key), depth + 1, alias_site or line)
            self.lines[(*path, key)] = line
        return out

    def _key(self, key_node: yaml.Node, path: Path) -> str | None:
        if not isinstance(key_node, yaml.ScalarNode):
            # never constructed: a list or mapping as a key could be an alias bomb
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            self._problem(path, f"a key must be a string, not {kind}", key_node)
            return None
        if not self._plain(key_node, path):
            return None
        key = self._scalar(key_node, path)
        if not isinstance(key, str | int) or isinstance(key, bool):
            if key is not REFUSED:
                self._problem(path, f"key {short(key)} must be a string", key_node)
            return None
        return str(key)


def validation_problems(doc: YamlDocument, exc: ValidationError, base: Path = ()) -> list[Problem]:
    """Turn pydantic errors into problems with paths and lines."""
    problems = []
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    for err, at in zip(errors, locs, strict=True):
        if err.get("input") is REFUSED:
            continue  # the YAML loader said why already
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
    if isinstance(inp, str) and len(inp) > 60:  # validators quote the input: keep it short
        msg = msg.replace(inp, inp[:59] + "…")
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(str(err.get("ctx", {}).get("pattern")))
        if hint:
            return f"{hint} (got {short(inp)})"
    if kind == "enum" and isinstance(inp, str):
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(inp, choices, n=1, cutoff=0.6)
        if close:
            return f"{msg} (got {short(inp)} — did you mean {close[0]!r}?)"
    if kind in {"enum", "literal_error"} or kind.endswith(("_parsing", "_type")):
        return f"{msg} (got {short(inp)})"
    return msg


def model_problems(
    doc: YamlDocument, model: type[BaseModel], context: dict[str, Any] | None = None
) -> tuple[BaseModel | None, list[Problem]]:
    try:
        return model.model_validate(doc.data, context=context), []
    except ValidationError as exc:
        return None, validation_problems(doc, exc)
