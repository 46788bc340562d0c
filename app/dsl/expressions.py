"""Conductor's `${...}` expression language, parsed once and resolved against a scope.

A parameter value (any JSON value) is parsed into a `Parameter` tree at validation time;
at step start it is resolved against a `Scope` that maps a root (`workflow`, a task
reference name) to that root's document. Knows nothing of Celery or Redis.

Semantics (Conductor's ParametersUtils, with Jayway JSONPath paths):
- a string that is exactly one `${...}` yields the typed value;
- expressions embedded in text are stringified (JSON for non-strings);
- a missing path yields null; `$${` is a literal `${`;
- `${a.${b}}` resolves the inner expression first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

import jsonpath

#: Conductor substitutes this bare name with the id of the task being scheduled.
TASK_ID_ROOT = "CPEWF_TASK_ID"
WORKFLOW_ROOT = "workflow"

# Dotted names and integer/quoted indexes: resolved by a plain walk, no JSONPath engine.
_SIMPLE_SEGMENT = re.compile(
    r"\.([A-Za-z_$][\w$-]*)|\[(\d+)\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]"
)
_ROOT = re.compile(r"[^.\[]+")


class ExpressionError(ValueError):
    """A malformed expression; the message names what is wrong but not where."""


Scope: TypeAlias = Mapping[str, Any]
"""Maps a root name (`workflow`, a task reference, CPEWF_TASK_ID) to its document."""


@dataclass(frozen=True)
class Path:
    """A path such as `encode.output.files[0]`: a root and an accessor on its document."""

    text: str
    root: str
    walk: Callable[[Any], Any]

    def lookup(self, scope: Scope) -> Any:
        if self.root not in scope:
            return None
        return self.walk(scope[self.root])


@dataclass(frozen=True)
class Expression:
    """One `${...}`: its path text, which may itself hold nested expressions."""

    parts: tuple[str | Expression, ...]
    path: Path | None  # compiled once when the text holds no nested expression

    @property
    def static_root(self) -> str | None:
        """The root named before any nested expression, if one can be read statically."""
        if self.path is not None:
            return self.path.root
        head = self.parts[0]
        if isinstance(head, str):
            head = head.lstrip()  # `${ a.${b}}` names `a`, as `${ a.b }` does
            match = _ROOT.match(head)
            if match and match.end() < len(head):
                return match.group(0)
        return None

    def evaluate(self, scope: Scope) -> Any:
        if self.path is not None:
            return self.path.lookup(scope)
        text = "".join(_text(p, scope) for p in self.parts)
        try:
            return compile_path(text).lookup(scope)
        except ExpressionError:
            return None  # a path built at run time that does not parse names nothing

    def walk(self) -> Iterator[Expression]:
        yield self
        for part in self.parts:
            if isinstance(part, Expression):
                yield from part.walk()


@dataclass(frozen=True)
class Template:
    """A string holding at least one expression."""

    parts: tuple[str | Expression, ...]

    def resolve(self, scope: Scope) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], Expression):
            return self.parts[0].evaluate(scope)
        return "".join(_text(p, scope) for p in self.parts)

    def expressions(self) -> Iterator[Expression]:
        for part in self.parts:
            if isinstance(part, Expression):
                yield from part.walk()


@dataclass(frozen=True)
class Parameter:
    """A parsed parameter value: JSON with templates in place of strings that need them."""

    value: Any
    dynamic: bool  # False when the value holds no expression and resolves to itself

    def resolve(self, scope: Scope) -> Any:
        return _resolve(self.value, scope) if self.dynamic else self.value

    def expressions(self) -> Iterator[Expression]:
        for _, expression in self.located_expressions():
            yield expression

    def located_expressions(self) -> Iterator[tuple[str, Expression]]:
        """Every expression, nested ones too, with the location of its string (`.a.b[2]`)."""
        yield from _expressions(self.value, "")

    def roots(self) -> set[str]:
        """Roots named statically by the expressions in this value."""
        return {r for e in self.expressions() if (r := e.static_root) is not None}


class ParseFailure(ExpressionError):
    """A malformed expression at a location inside a parameter value."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        super().__init__(message)


def parse_parameter(value: Any) -> Parameter:
    """Parse a JSON value; raises ParseFailure naming the location inside the value."""
    parsed, dynamic = _parse_value(value, "")
    return Parameter(parsed, dynamic)


def parse_template(text: str) -> Template | str:
    """Parse one string: a Template if it holds an expression, else the literal text."""
    parts: list[str | Expression] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            expression, i = _parse_expression(text, i + 2)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(expression)
        else:
            literal.append(text[i])
            i += 1
    if not parts:
        return "".join(literal)
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))


def compile_path(text: str) -> Path:
    """Compile `root.rest` into a Path; plain dotted/indexed paths avoid the JSONPath engine."""
    return _compile_path(text.strip())


@lru_cache(maxsize=4096)
def _compile_path(text: str) -> Path:
    match = _ROOT.match(text)
    if not match:
        raise ExpressionError(f"'{text}' does not start with a task reference or 'workflow'")
    root, rest = match.group(0), text[match.end() :]
    if not rest:
        return Path(text, root, _identity)
    keys = _simple_keys(rest)
    if keys is not None:
        return Path(text, root, _make_walk(keys))
    try:
        query = jsonpath.compile("$" + rest)
    except jsonpath.JSONPathError as exc:
        # the first argument is the reason alone; str(exc) adds a multi-line excerpt of the
        # rewritten `$...` query, which is not the text the user wrote
        reason = exc.args[0] if exc.args else str(exc)
        raise ExpressionError(f"malformed path '{text}': {reason}") from None
    # a compound path (`a | b`) can match many nodes; only a plain one can be singular
    definite = isinstance(query, jsonpath.JSONPath) and query.singular_query()
    return Path(text, root, _make_query(query, definite))


def _simple_keys(rest: str) -> tuple[str | int, ...] | None:
    keys: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _SIMPLE_SEGMENT.match(rest, pos)
        if not m:
            return None
        name, index, quoted, dquoted = m.groups()
        if index is not None:
            keys.append(int(index))
        else:
            keys.append(name if name is not None else (quoted if quoted is not None else dquoted))
        pos = m.end()
    return tuple(keys)


def _make_walk(keys: tuple[str | int, ...]) -> Callable[[Any], Any]:
    def walk(document: Any) -> Any:
        node = document
        for key in keys:
            if isinstance(key, int) and isinstance(node, list):
                node = node[key] if key < len(node) else None
            elif isinstance(node, Mapping):
                node = node.get(str(key))
            else:
                return None
            if node is None:
                return None
        return node

    return walk


def _make_query(query: Any, definite: bool) -> Callable[[Any], Any]:
    def run(document: Any) -> Any:
        try:
            found = query.findall(document)
        except jsonpath.JSONPathError:
            return None
        if definite:
            return found[0] if found else None
        return list(found)

    return run


def _identity(document: Any) -> Any:
    return document


def _parse_expression(text: str, start: int) -> tuple[Expression, int]:
    """Parse from just after `${` to its closing brace; returns the expression and next index."""
    parts: list[str | Expression] = []
    literal: list[str] = []
    i, n = start, len(text)
    while i < n:
        if text.startswith("${", i):
            inner, i = _parse_expression(text, i + 2)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(inner)
        elif text[i] == "}":
            if literal:
                parts.append("".join(literal))
            if not parts or all(isinstance(p, str) and not p.strip() for p in parts):
                raise ExpressionError("empty expression '${}'")
            path = None
            if all(isinstance(p, str) for p in parts):
                path = compile_path("".join(p for p in parts if isinstance(p, str)))
            return Expression(tuple(parts), path), i + 1
        else:
            literal.append(text[i])
            i += 1
    raise ExpressionError(f"unterminated expression '${{{text[start:]}' (missing '}}')")


def _parse_value(value: Any, location: str) -> tuple[Any, bool]:
    if isinstance(value, str):
        if "${" not in value:
            return value, False
        try:
            parsed = parse_template(value)
        except ExpressionError as exc:
            raise ParseFailure(location, str(exc)) from None
        return parsed, isinstance(parsed, Template) or parsed != value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        dynamic = False
        for key, item in value.items():
            out[key], d = _parse_value(item, f"{location}.{key}")
            dynamic |= d
        return out, dynamic
    if isinstance(value, list):
        items = []
        dynamic = False
        for index, item in enumerate(value):
            parsed, d = _parse_value(item, f"{location}[{index}]")
            items.append(parsed)
            dynamic |= d
        return items, dynamic
    return value, False


def _resolve(value: Any, scope: Scope) -> Any:
    if isinstance(value, Template):
        return value.resolve(scope)
    if isinstance(value, dict):
        return {k: _resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, scope) for v in value]
    return value


def _expressions(value: Any, location: str) -> Iterator[tuple[str, Expression]]:
    if isinstance(value, Template):
        for expression in value.expressions():
            yield location, expression
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _expressions(item, f"{location}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _expressions(item, f"{location}[{index}]")


def _text(part: str | Expression, scope: Scope) -> str:
    return part if isinstance(part, str) else _stringify(part.evaluate(scope))


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
