"""Retry and timeout policy of a step: defaults on the transformation, overrides per task.

Field names follow Conductor's TaskDef. Delays, for the n-th retry (n from 0):
FIXED = d; LINEAR_BACKOFF = d * scale * (n + 1); EXPONENTIAL_BACKOFF = d * 2**n; capped
by max_retry_delay_seconds (0 = no cap), plus up to jitter_seconds of random jitter.
Pure: no Celery, no Redis.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from app.errors import TransformationError


class TimeoutPolicy(StrEnum):
    """What a step's timeout does (Conductor's TaskDef.timeoutPolicy)."""

    RETRY = "RETRY"
    """The step is TIMED_OUT and retried per retry_count; the run then ends TIMED_OUT."""
    TIME_OUT_WF = "TIME_OUT_WF"
    """The step is TIMED_OUT and the run ends TIMED_OUT at once."""
    ALERT_ONLY = "ALERT_ONLY"
    """The step runs on; passing its timeout is only logged and noted on its record."""


class RetryLogic(StrEnum):
    """How the delay between attempts grows."""

    FIXED = "FIXED"
    LINEAR_BACKOFF = "LINEAR_BACKOFF"
    EXPONENTIAL_BACKOFF = "EXPONENTIAL_BACKOFF"


@dataclass(frozen=True)
class StepPolicy:
    """How often a failing step is tried again, how long it waits, how long it may run."""

    retry_count: int = 0
    """Attempts after the first; 0 means a failure fails the step at once."""
    retry_logic: RetryLogic = RetryLogic.FIXED
    retry_delay_seconds: float = 1.0
    """Base delay before a retry."""
    backoff_scale_factor: float = 1.0
    """Multiplier of LINEAR_BACKOFF."""
    max_retry_delay_seconds: float = 0.0
    """Cap on one delay; 0 means no cap."""
    jitter_seconds: float = 0.0
    """Up to this much random delay is added, so retries of many runs spread out."""
    timeout_seconds: float = 0.0
    """Time one attempt may run before it fails as TIMED_OUT; 0 means no limit."""
    timeout_policy: TimeoutPolicy = TimeoutPolicy.RETRY
    """What a timeout does. A transformation's own timeout is retried; a taskDefinition
    that sets a timeout brings Conductor's default, TIME_OUT_WF (see task_overrides)."""
    poll_timeout_seconds: float = 0.0
    """Time a sent attempt may wait in its queue before a worker starts it; 0: no limit."""
    total_timeout_seconds: float = 0.0
    """Time over all attempts, from the first one's start, retry delays included; 0: none."""
    response_timeout_seconds: float = 0.0
    """Time an attempt may run without an answer (Baton steps send none, so: time one
    attempt may run, retried whatever the timeout policy); 0 means no limit."""

    def __post_init__(self) -> None:
        if self.retry_count < 0:
            raise TransformationError("retry_count cannot be negative")
        for name in ("retry_delay_seconds", "max_retry_delay_seconds", "jitter_seconds",
                     "timeout_seconds", "poll_timeout_seconds", "total_timeout_seconds",
                     "response_timeout_seconds"):
            if getattr(self, name) < 0:
                raise TransformationError(f"{name} cannot be negative")
        if self.backoff_scale_factor < 1:
            raise TransformationError("backoff_scale_factor cannot be less than 1")
        object.__setattr__(self, "retry_logic", RetryLogic(self.retry_logic))
        object.__setattr__(self, "timeout_policy", TimeoutPolicy(self.timeout_policy))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        base = self.retry_delay_seconds
        if self.retry_logic is RetryLogic.LINEAR_BACKOFF:
            base *= self.backoff_scale_factor * (retry + 1)
        elif self.retry_logic is RetryLogic.EXPONENTIAL_BACKOFF:
            base *= 2**retry
        if self.max_retry_delay_seconds:
            base = min(base, self.max_retry_delay_seconds)
        if self.jitter_seconds:
            base += (rng or random).uniform(0, self.jitter_seconds)
        return base

    def merged(self, overrides: Mapping[str, Any]) -> StepPolicy:
        """This policy with the fields a workflow task sets for itself."""
        return replace(self, **overrides) if overrides else self


POLICY_FIELDS = frozenset(f.name for f in fields(StepPolicy))

# Conductor's TaskDef fields (as the model names them) that map onto a policy field.
_TASK_DEF_FIELDS = {
    "retry_count": "retry_count",
    "retry_logic": "retry_logic",
    "retry_delay_seconds": "retry_delay_seconds",
    "backoff_scale_factor": "backoff_scale_factor",
    "max_retry_delay_seconds": "max_retry_delay_seconds",
    "timeout_seconds": "timeout_seconds",
    "timeout_policy": "timeout_policy",
    "poll_timeout_seconds": "poll_timeout_seconds",
    "total_timeout_seconds": "total_timeout_seconds",
    # only when set: its default (3600) would limit every step to an hour, where Conductor
    # counts from the worker's last update, which a Baton step never sends
    "response_timeout_seconds": "response_timeout_seconds",
}
_TIMEOUTS = frozenset({"timeout_seconds", "poll_timeout_seconds", "total_timeout_seconds"})


def task_overrides(task_definition: Any, retry_count: int | None) -> dict[str, Any]:
    """The policy fields a workflow task sets through `taskDefinition` and `retryCount`."""
    found: dict[str, Any] = {}
    if task_definition is not None:
        for name in task_definition.model_fields_set & _TASK_DEF_FIELDS.keys():
            value = getattr(task_definition, name)
            if value is not None:
                found[_TASK_DEF_FIELDS[name]] = value
        if found.keys() & _TIMEOUTS and "timeout_policy" not in found:
            # a TaskDef that sets a timeout brings its own policy: Conductor's default
            found["timeout_policy"] = task_definition.timeout_policy
        jitter_ms = getattr(task_definition, "backoff_jitter_ms", 0)
        if "backoff_jitter_ms" in task_definition.model_fields_set and jitter_ms:
            found["jitter_seconds"] = jitter_ms / 1000
    if retry_count is not None:
        found["retry_count"] = retry_count
    return found
