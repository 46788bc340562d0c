"""Conductor's `${...}` expression language, parsed once and resolved against a scope.

A parameter value (any JSON value) is parsed into a `Parameter` tree at validation time;
at step start it is resolved against a `Scope` that maps a root (`workflow`, a task
reference name) to that root's document. Knows nothing of Celery or Redis.

Semantics (Conductor's ParametersUtils, with Jayway JSONPath paths):
- a string that is exactly one `${...}` yields the typed value;
- expressions embedded in text are stringified (JSON for non-strings);
- a missing path yields null; `$${` is a literal `${`;
- `${a.${b}}` resolves the inner expression first.

Bounds (a definition or an input may be hostile): expressions nest at most
`max_expression_depth` deep, a path is at most MAX_PATH_CHARS long, a parameter value
nests at most `max_json_depth` deep, and non-plain paths run on `app.dsl.jsonpaths`
(RE2 regexes, bounded nesting). Parsing is iterative and linear in the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

import jsonpath

from app.config import get_settings
from app.dsl import jsonpaths

#: Conductor substitutes this bare name with the id of the task being scheduled.
TASK_ID_ROOT = "CPEWF_TASK_ID"
WORKFLOW_ROOT = "workflow"

# Dotted names and integer/quoted indexes: resolved by a plain walk, no JSONPath engine.
_SIMPLE_SEGMENT = re.compile(
    r"\.([A-Za-z_$][\w$-]*)|\[(\d+)\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]"
)
_ROOT = re.compile(r"[^.\[]+")
# what ends a literal run: at top level `$${` (an escape) or `${`; inside `${...}` a nested
# `${` or the closing brace
_TEMPLATE_MARK = re.compile(r"\$\$?\{")
_EXPRESSION_MARK = re.compile(r"\$\{|\}")
# a string that is one `${...}` and nothing else, with nothing nested in it: most inputs of a
# definition are, and parse_template reads them without its general loop
_WHOLE = re.compile(r"\$\{([^${}]*)\}")

MAX_PATH_CHARS = 4096
"""Longest path an expression may name (static, or built at run time by nesting)."""
_EXCERPT_CHARS = 80


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
    parsed, dynamic = _parse_value(value, "", get_settings().max_json_depth)
    return Parameter(parsed, dynamic)


def parse_template(text: str) -> Template | str:
    """Parse one string: a Template if it holds an expression, else the literal text."""
    whole = _WHOLE.fullmatch(text)
    if whole is not None and not whole.group(1).isspace() and whole.group(1):
        path = whole.group(1)
        return Template((Expression((path,), compile_path(path)),))
    parts: list[str | Expression] = []
    literal: list[str] = []
    i = 0
    while (mark := _TEMPLATE_MARK.search(text, i)) is not None:
        literal.append(text[i : mark.start()])
        if mark.group() == "$${":
            literal.append("${")
            i = mark.end()
            continue
        expression, i = _parse_expression(text, mark.end())
        if any(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(expression)
    literal.append(text[i:])
    if not parts:
        return "".join(literal)
    if any(literal):
        parts.append("".join(literal))
    return Template(tuple(parts))


def compile_path(text: str) -> Path:
    """Compile `root.rest` into a Path; plain dotted/indexed paths avoid the JSONPath engine."""
    text = text.strip()
    if len(text) > MAX_PATH_CHARS:
        # checked before the cache, which would otherwise keep huge texts built at run time
        raise ExpressionError(f"path '{_excerpt(text)}' is {len(text)} characters long, "
                              f"over the limit of {MAX_PATH_CHARS}")
    return _compile_path(text)


@lru_cache(maxsize=4096)
def _compile_path(text: str) -> Path:
    match = _ROOT.match(text)
    if not match:
        raise ExpressionError(
            f"'{_excerpt(text)}' does not start with a task reference or 'workflow'")
    root, rest = match.group(0), text[match.end() :]
    if not rest:
        return Path(text, root, _identity)
    keys = _simple_keys(rest)
    if keys is not None:
        return Path(text, root, _make_walk(keys))
    try:
        query = jsonpaths.compile("$" + rest)
    except jsonpath.JSONPathError as exc:
        # the first argument is the reason alone; str(exc) adds a multi-line excerpt of the
        # rewritten `$...` query, which is not the text the user wrote
        reason = exc.args[0] if exc.args else str(exc)
        raise ExpressionError(f"malformed path '{_excerpt(text)}': {reason}") from None
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
    """Parse from just after `${` to its closing brace; returns the expression and next index.

    Nested expressions are parsed with an explicit stack, bounded by max_expression_depth,
    so no text makes the parser recurse.
    """
    limit = get_settings().max_expression_depth
    # one frame per open `${`: where its text starts, its parts, its pending literal
    stack: list[tuple[int, list[str | Expression], list[str]]] = [(start, [], [])]
    i = start
    while (mark := _EXPRESSION_MARK.search(text, i)) is not None:
        opened, parts, literal = stack[-1]
        literal.append(text[i : mark.start()])
        i = mark.end()
        if mark.group() == "${":
            if len(stack) >= limit:
                raise ExpressionError(f"expressions nested more than {limit} deep in "
                                      f"'${{{_excerpt(text[stack[0][0]:])}'")
            _flush(parts, literal)
            stack.append((i, [], []))
            continue
        _flush(parts, literal)
        expression = _close(parts)
        stack.pop()
        if not stack:
            return expression, i
        stack[-1][1].append(expression)
    opened = stack[-1][0]
    raise ExpressionError(
        f"unterminated expression '${{{_excerpt(text[opened:])}' (missing '}}')")


def _flush(parts: list[str | Expression], literal: list[str]) -> None:
    if any(literal):
        parts.append("".join(literal))
    literal.clear()


def _close(parts: list[str | Expression]) -> Expression:
    if not parts or all(isinstance(p, str) and not p.strip() for p in parts):
        raise ExpressionError("empty expression '${}'")
    path = None
    if all(isinstance(p, str) for p in parts):
        path = compile_path("".join(p for p in parts if isinstance(p, str)))
    return Expression(tuple(parts), path)


def _excerpt(text: str) -> str:
    """A text short enough for a one-line message."""
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"


def _parse_value(value: Any, location: str, depth: int) -> tuple[Any, bool]:
    kind = type(value)
    if kind is int or kind is bool or kind is float or value is None:
        return value, False  # most values of a definition's inputs, asked without ABCs
    # the depth bound keeps this walk, and the walks over the parsed value, off the
    # recursion limit
    if kind is not str and isinstance(value, Mapping | list) and depth <= 0:
        raise ParseFailure(location, f"nested more than {get_settings().max_json_depth} deep")
    if kind is str or isinstance(value, str):
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
            out[key], d = _parse_value(item, f"{location}.{key}", depth - 1)
            dynamic |= d
        return out, dynamic
    if isinstance(value, list):
        items = []
        dynamic = False
        for index, item in enumerate(value):
            parsed, d = _parse_value(item, f"{location}[{index}]", depth - 1)
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
