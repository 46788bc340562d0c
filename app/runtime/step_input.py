"""A transformation's input checked against its function's signature before it runs.

A step whose input misses a required parameter, gives it null, or gives a value of the
wrong JSON type would otherwise fail deep inside the user's code (`'NoneType' object has
no attribute 'rstrip'`) and be retried as if the failure were passing. The checker names
the parameter instead (`fileLocation: required str, got null`) and the step fails at
once, without retries.

The checker is built once per transformation from its type hints; checking a step is a
walk over its parameters with `isinstance`. Only what JSON can carry is checked: str,
int, float, bool, dict, list (parameterised or not), None, and unions or Optional of
these. Any other annotation (a TypedDict, a Literal, a class of the user's) and a missing
one are not checked. No Celery or Redis here.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from app.errors import TerminalError


class InvalidStepInput(TerminalError):
    """Raised when a step's input does not fit its transformation's signature (not retried)."""


# the JSON kinds a Python type accepts; bool is not an int here, as true is not a number
_JSON_TYPES: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    dict: (dict,),
    list: (list,),
    type(None): (type(None),),
}


@dataclass(frozen=True)
class _Parameter:
    name: str
    required: bool
    shown: str
    """The annotation as the error shows it (`str`, `int | None`)."""
    accepted: tuple[type, ...] | None
    """Python types of a valid value; None when the annotation is not checked."""

    def problem(self, given: Mapping[str, Any]) -> str | None:
        if self.name not in given:
            return f"{self.name}: required {self.shown}, missing" if self.required else None
        if self.accepted is None:
            return None
        value = given[self.name]
        if isinstance(value, self.accepted) and not (
            isinstance(value, bool) and bool not in self.accepted
        ):
            return None
        required = "required " if self.required else ""
        return f"{self.name}: {required}{self.shown}, got {json_kind(value)}"


InputChecker = Callable[[Mapping[str, Any]], None]


def input_checker(func: Callable[..., Any]) -> InputChecker:
    """A check of a step's input for `func`: raises InvalidStepInput naming every problem."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve (a name only a type checker knows)
        hints = {}
    parameters = [
        _Parameter(param.name, param.default is param.empty,
                   *_accepted(hints.get(param.name, param.annotation)))
        for param in inspect.signature(func).parameters.values()
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    ]
    checked = tuple(p for p in parameters if p.required or p.accepted is not None)

    def check(given: Mapping[str, Any]) -> None:
        problems = [found for p in checked if (found := p.problem(given)) is not None]
        if problems:
            raise InvalidStepInput("; ".join(problems))

    return check


def _accepted(annotation: Any) -> tuple[str, tuple[type, ...] | None]:
    """How an annotation is shown, and the Python types of values it accepts (None: any)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "value", None
    members = _members(annotation)
    accepted: list[type] = []
    for member in members:
        origin = typing.get_origin(member) or member
        if origin not in _JSON_TYPES:
            return _shown(annotation), None
        accepted += _JSON_TYPES[origin]
    return _shown(annotation), tuple(dict.fromkeys(accepted))


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _shown(annotation: Any) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return "None" if annotation is type(None) else annotation.__name__
    return " | ".join(_shown(m) for m in _members(annotation)) \
        if len(_members(annotation)) > 1 else str(annotation).replace("typing.", "")


# bool before int: True is an int to Python, a boolean to JSON
_JSON_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"),
    (str, "string"), (dict, "object"), (list, "array"),
)


def json_kind(value: Any) -> str:
    """A value's JSON type, as an error names it."""
    return next((name for kind, name in _JSON_KINDS if isinstance(value, kind)),
                type(value).__name__)
