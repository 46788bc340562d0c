"""The JSONPath engine behind non-plain expression paths: python-jsonpath, made safe to
run on paths and data a workflow's users control.

- Every regular expression (`=~ /.../`, `match()`, `search()`) runs on RE2, whose
  matching time is linear in the text: `(a+)+b` against forty `a`s takes microseconds
  instead of hanging the worker as a backtracking engine does. A pattern RE2 cannot run
  (backreferences, look-around) is an error: at parse time when the pattern is written in
  the path, at evaluation time when it comes from the data.
- A path's nesting (brackets, parentheses) and its count of operators are bounded before
  the recursive-descent parser sees it, so neither parsing nor evaluating recurses deeply
  enough to meet Python's recursion limit, whatever the path.
- A path holds at most one recursive descent (`..`): each one nested in a filter under
  another multiplies the work by the data's depth (three took a second on 100 nested
  lists, five would take minutes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonpath
import re2
from jsonpath.filter import BaseExpression, RegexLiteral, StringLiteral
from jsonpath.function_extensions import Match, Search
from jsonpath.lex import Lexer
from jsonpath.parse import Parser
from jsonpath.stream import TokenStream
from jsonpath.token import (
    TOKEN_AND,
    TOKEN_CONTAINS,
    TOKEN_DDOT,
    TOKEN_EQ,
    TOKEN_GE,
    TOKEN_GT,
    TOKEN_IN,
    TOKEN_INTERSECTION,
    TOKEN_LBRACKET,
    TOKEN_LE,
    TOKEN_LG,
    TOKEN_LPAREN,
    TOKEN_LT,
    TOKEN_NE,
    TOKEN_NOT,
    TOKEN_OR,
    TOKEN_RBRACKET,
    TOKEN_RE,
    TOKEN_RE_FLAGS,
    TOKEN_RPAREN,
    TOKEN_UNION,
    Token,
)

MAX_NESTING = 16
"""Brackets and parentheses a JSONPath path may nest (`[?(@.a[?(...)])]`)."""
MAX_OPERATORS = 64
"""Operators (`!`, `&&`, `==`, `=~`, `|`, ...) one JSONPath path may hold."""
MAX_DESCENTS = 1
"""Recursive descents (`..`) one JSONPath path may hold."""
REGEX_MEMORY = 4 << 20
"""Bytes one compiled RE2 pattern may use, its matching automaton's cache included."""
MAX_REGEX_PROGRAM = 512
"""Instructions a compiled pattern may have (`\\w{1,64}` has 259). When its automaton
outgrows REGEX_MEMORY on a hostile text, RE2 matches in time proportional to the text's
length times this size (about 2 s a MiB at the limit), so it is bounded too."""

_OPENING = frozenset({TOKEN_LBRACKET, TOKEN_LPAREN})
_CLOSING = frozenset({TOKEN_RBRACKET, TOKEN_RPAREN})
_OPERATORS = frozenset({
    TOKEN_NOT, TOKEN_AND, TOKEN_OR, TOKEN_EQ, TOKEN_NE, TOKEN_LG, TOKEN_LT, TOKEN_LE,
    TOKEN_GT, TOKEN_GE, TOKEN_RE, TOKEN_IN, TOKEN_CONTAINS, TOKEN_UNION, TOKEN_INTERSECTION,
})
# the inline RE2 flag for each flag a regex literal may carry (`/.../i`); RE2's classes
# (\w, \d, \s, \b) are ASCII-only, so `a` needs none
_INLINE_FLAGS = {"i": "i", "m": "m", "s": "s", "a": ""}


class RegexError(jsonpath.JSONPathError):
    """A regular expression RE2 cannot compile."""


class Pattern:
    """An RE2 pattern where python-jsonpath expects an `re.Pattern` (fullmatch, search)."""

    __slots__ = ("pattern", "flags", "_regexp")

    def __init__(self, pattern: str, flags: str = "") -> None:
        self.pattern = pattern
        # RegexLiteral prints itself back from `re` flag bits
        self.flags = sum(Parser.RE_FLAG_MAP[f] for f in set(flags))
        inline = "".join(sorted({_INLINE_FLAGS[f] for f in flags}))
        options = re2.Options()
        options.log_errors = False  # the error is raised, not also logged to stderr
        options.max_mem = REGEX_MEMORY
        try:
            self._regexp = re2.compile(f"(?{inline}){pattern}" if inline else pattern, options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise RegexError(f"regular expression /{_excerpt(pattern)}/ cannot be used: {reason} "
                             "(expressions run RE2: no backreferences or look-around)"
                             ) from None
        size = self._regexp.programsize
        if size > MAX_REGEX_PROGRAM:
            raise RegexError(f"regular expression /{_excerpt(pattern)}/ is too large: {size} "
                             f"instructions, over the limit of {MAX_REGEX_PROGRAM}")

    def fullmatch(self, text: str) -> bool:
        return self._regexp.fullmatch(text) is not None

    def search(self, text: str) -> bool:
        return self._regexp.search(text) is not None


def _excerpt(pattern: str) -> str:
    return pattern if len(pattern) <= 60 else pattern[:59] + "…"


class _BoundedLexer(Lexer):
    """Refuses a path nested or built too deeply for the recursive parser, as it lexes."""

    def tokenize(self, path: str) -> Iterator[Token]:
        depth = operators = descents = 0
        for token in super().tokenize(path):
            if token.kind in _OPENING:
                depth += 1
                if depth > MAX_NESTING:
                    raise jsonpath.JSONPathSyntaxError(
                        f"brackets and parentheses nested more than {MAX_NESTING} deep",
                        token=token)
            elif token.kind in _CLOSING:
                depth -= 1
            elif token.kind in _OPERATORS:
                operators += 1
                if operators > MAX_OPERATORS:
                    raise jsonpath.JSONPathSyntaxError(
                        f"more than {MAX_OPERATORS} operators in one path", token=token)
            elif token.kind == TOKEN_DDOT:
                descents += 1
                if descents > MAX_DESCENTS:
                    raise jsonpath.JSONPathSyntaxError(
                        f"more than {MAX_DESCENTS} recursive descent ('..') in one path",
                        token=token)
            yield token


class _Parser(Parser):
    def parse_regex(self, stream: TokenStream) -> BaseExpression:
        # the pattern is compiled by RE2 only, never by `re` (whose compile a hostile
        # pattern can slow too)
        pattern = stream.current().value
        flags = ""
        if stream.peek().kind == TOKEN_RE_FLAGS:
            stream.next()
            flags = stream.next().value
        try:
            compiled = Pattern(pattern, flags)
        except RegexError as exc:
            exc.token = stream.current()
            raise
        return RegexLiteral(value=compiled)  # type: ignore[arg-type]


class _RegexFunction:
    """`match()` and `search()` with RE2; a pattern given in the data compiles at run time."""

    def check_cache(self, pattern: str) -> Pattern:
        cache: Any = getattr(self, "cache")  # noqa: B009 - the extension's LRU cache
        try:
            compiled: Pattern = cache[pattern]
        except KeyError:
            compiled = Pattern(pattern)  # RegexError names the pattern; the path yields null
            cache[pattern] = compiled
        return compiled


class _Match(_RegexFunction, Match):
    pass


class _Search(_RegexFunction, Search):
    pass


class Environment(jsonpath.JSONPathEnvironment):
    """python-jsonpath with RE2 regexes and bounded paths."""

    lexer_class = _BoundedLexer
    parser_class = _Parser

    def setup_function_extensions(self) -> None:
        super().setup_function_extensions()
        self.function_extensions["match"] = _Match(cache_capacity=64, thread_safe=True)
        self.function_extensions["search"] = _Search(cache_capacity=64, thread_safe=True)

    def validate_function_extension_signature(self, token: Token, args: list[Any]) -> list[Any]:
        args = super().validate_function_extension_signature(token, args)
        # a pattern written in the path is checked when the path is, not when it runs
        if token.value in ("match", "search") and len(args) == 2 and isinstance(
            args[1], StringLiteral
        ):
            try:
                Pattern(args[1].value)
            except RegexError as exc:
                exc.token = token
                raise
        return args


ENVIRONMENT = Environment()


def compile(path: str) -> jsonpath.JSONPath | jsonpath.CompoundJSONPath:  # noqa: A001
    """Compile a `$...` path; JSONPathError (RegexError among them) if it cannot be used."""
    return ENVIRONMENT.compile(path)

