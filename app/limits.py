"""Flow limits of a transformation: how many of its steps run at once, how often one starts.

A `Limit` is a default on `@transformation(..., limit=Limit(...))`; a workflow task may set
Conductor's TaskDef fields instead (`concurrentExecLimit`, `rateLimitPerFrequency` with
`rateLimitFrequencyInSeconds`), which replace the default's counts for that task. Either
holds across every worker (the state is in Redis: app.store.limits). As in Conductor a
limit belongs to the task's name, shared by every workflow that runs it; a `key`
expression splits it into one limit per value (per customer, per host).
Pure: no Celery, no Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from app.dsl.expressions import ExpressionError, Parameter, parse_parameter
from app.errors import TransformationError

DEFAULT_FREQUENCY_SECONDS: Final = 1
"""Conductor's default `rateLimitFrequencyInSeconds`."""


@dataclass(frozen=True)
class Limit:
    """At most `concurrency` steps running at once, at most `rate` starts per `per_seconds`."""

    concurrency: int = 0
    """Steps of the transformation (per key) running at once; 0: no limit."""
    rate: int = 0
    """Starts per `per_seconds`, evenly spaced (one every per_seconds / rate); 0: no limit."""
    per_seconds: float = DEFAULT_FREQUENCY_SECONDS
    """The window of `rate`, in seconds."""
    key: str | None = None
    """A `${...}` expression resolved against the step's scope when it starts
    (`${workflow.input.customer}`): each value has a limit of its own."""

    def __post_init__(self) -> None:
        for name in ("concurrency", "rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TransformationError(f"limit {name} must be a whole number, not {value!r}")
            if value < 0:
                raise TransformationError(f"limit {name} cannot be negative")
        if not self.per_seconds > 0:
            raise TransformationError("limit per_seconds must be more than 0")
        if self.key is not None:
            _key_parameter(self.key)

    @property
    def active(self) -> bool:
        """Whether it limits anything (a limit of all zeros is off)."""
        return bool(self.concurrency or self.rate)

    @property
    def interval_ms(self) -> int:
        """Milliseconds between two starts under the rate (0: no rate limit)."""
        return max(1, round(self.per_seconds * 1000 / self.rate)) if self.rate else 0

    @property
    def key_parameter(self) -> Parameter | None:
        return _key_parameter(self.key) if self.key is not None else None

    def describe(self) -> str:
        """The limit in words, as `baton status` and `baton limits` show it."""
        parts = []
        if self.concurrency:
            parts.append(f"{self.concurrency} at once")
        if self.rate:
            parts.append(f"{self.rate} per {self.per_seconds:g}s")
        return ", ".join(parts) or "none"


def _key_parameter(key: str) -> Parameter:
    if not isinstance(key, str) or not key:
        raise TransformationError("limit key must be a non-empty string")
    try:
        parameter = parse_parameter(key)
    except ExpressionError as exc:
        raise TransformationError(f"limit key {key!r}: {exc}") from None
    if not parameter.dynamic:
        raise TransformationError(
            f"limit key {key!r} holds no ${{...}} expression: every step would share one "
            "key; leave the key out for that")
    return parameter


def task_limit(default: Limit | None, task_definition: Any) -> Limit | None:
    """The limit of a step: its transformation's default, with the counts its workflow task
    sets through `taskDefinition` (Conductor's fields); None when nothing is limited."""
    limit = default
    if task_definition is not None:
        concurrency = task_definition.concurrent_exec_limit
        rate = task_definition.rate_limit_per_frequency
        per = task_definition.rate_limit_frequency_in_seconds
        if concurrency or rate:
            base = limit or Limit()
            limit = replace(base, concurrency=concurrency or base.concurrency)
            if rate:  # Conductor's window defaults to one second
                limit = replace(limit, rate=rate, per_seconds=per or DEFAULT_FREQUENCY_SECONDS)
    return limit if limit is not None and limit.active else None
