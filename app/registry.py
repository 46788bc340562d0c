"""The registry of transformations: name -> queue, function and accepted input.

Pure data: the Celery task for each transformation is made elsewhere
(`app.transformation`), so validation can consult the registry without Celery.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from app.errors import TransformationError
from app.limits import Limit
from app.policy import StepPolicy

TASK_PREFIX: Final = "tasks."
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Transformation:
    """A user function that a SIMPLE task runs, on its own queue."""

    name: str
    queue: str
    func: Callable[..., Any]
    required: frozenset[str]
    """Parameters the function needs (no default)."""
    accepted: frozenset[str] | None
    """Parameters the function takes by name; None when it takes `**kwargs`."""
    policy: StepPolicy = StepPolicy()
    """Retry and timeout defaults; a workflow task may override them."""
    limit: Limit | None = None
    """Flow limit across every worker (app.limits); a workflow task may set its counts."""

    @property
    def task_name(self) -> str:
        return TASK_PREFIX + self.name

    def input_problems(self, keys: set[str]) -> list[str]:
        """Why an input with these keys cannot call the function (empty when it can)."""
        problems = []
        missing = sorted(self.required - keys)
        if missing:
            problems.append(f"transformation '{self.name}' needs {_quote(missing)}")
        if self.accepted is not None:
            unknown = sorted(keys - self.accepted)
            if unknown:
                problems.append(f"transformation '{self.name}' does not take {_quote(unknown)}")
        return problems


_registry: dict[str, Transformation] = {}


def describe(
    func: Callable[..., Any], name: str, queue: str, policy: StepPolicy | None = None,
    limit: Limit | None = None,
) -> Transformation:
    """Check a function's name, queue and signature and describe it as a transformation."""
    if not _NAME.match(name):
        raise TransformationError(f"transformation name '{name}' must be a Python-like name")
    if not _QUEUE.match(queue):
        raise TransformationError(f"queue name '{queue}' may hold only letters, digits, _ . -")
    required: set[str] = set()
    accepted: set[str] | None = set()
    for param in inspect.signature(func).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            accepted = None
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            if accepted is not None:
                accepted.add(param.name)
            if param.default is param.empty:
                required.add(param.name)
        elif param.kind is param.POSITIONAL_ONLY or param.kind is param.VAR_POSITIONAL:
            raise TransformationError(
                f"transformation '{name}' must take its input by keyword, not '{param.name}'"
            )
    return Transformation(
        name=name,
        queue=queue,
        func=func,
        required=frozenset(required),
        accepted=frozenset(accepted) if accepted is not None else None,
        policy=policy or StepPolicy(),
        limit=_checked_limit(name, limit),
    )


def _checked_limit(name: str, limit: Limit | None) -> Limit | None:
    if limit is not None and not isinstance(limit, Limit):
        raise TransformationError(
            f"transformation '{name}': limit must be an app.limits.Limit, not "
            f"{type(limit).__name__}")
    return limit if limit is not None and limit.active else None


def add(transformation: Transformation) -> None:
    existing = _registry.get(transformation.name)
    if existing is not None and existing.func is not transformation.func:
        raise TransformationError(
            f"transformation '{transformation.name}' is already registered "
            f"by {existing.func.__module__}.{existing.func.__qualname__}"
        )
    _registry[transformation.name] = transformation


def transformations() -> Mapping[str, Transformation]:
    """Every registered transformation by name (a read-only view)."""
    return _registry


def queues() -> list[str]:
    """The queues of every registered transformation, sorted."""
    return sorted({t.queue for t in _registry.values()})


def _quote(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)
