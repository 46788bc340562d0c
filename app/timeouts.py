"""Conductor's task timeouts as Celery limits, and the reasons Conductor gives for them.

A step has up to four limits (`StepPolicy`): `timeout_seconds` bounds one attempt (its
policy says what then happens), `response_timeout_seconds` too (a Baton step sends no
heartbeat, so going silent and running long are the same), `total_timeout_seconds` bounds
all attempts together and `poll_timeout_seconds` the wait in the queue. One attempt runs
under Celery's soft time limit set to the smallest of the first three; the queue wait is
the message's `expires`. Pure: no Celery, no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from app.policy import StepPolicy, TimeoutPolicy

TIME_LIMIT_GRACE: Final = 5.0
"""Seconds between the soft limit (the step fails as TIMED_OUT) and the hard kill."""
_SAME: Final = 1e-6


class Limit(StrEnum):
    """Which of a step's limits it ran past."""

    TIMEOUT = "timeoutSeconds"
    RESPONSE = "responseTimeoutSeconds"
    TOTAL = "totalTimeoutSeconds"
    POLL = "pollTimeoutSeconds"


def attempt_limit(policy: StepPolicy, total_left: float | None = None) -> float:
    """Seconds one attempt may run (0: no limit). ALERT_ONLY leaves the timeout unenforced;
    `total_left` is what is left of the total budget (the whole of it when None)."""
    timeout = 0.0 if policy.timeout_policy is TimeoutPolicy.ALERT_ONLY else policy.timeout_seconds
    total = policy.total_timeout_seconds if total_left is None else total_left
    limits = [limit for limit in (timeout, policy.response_timeout_seconds, total) if limit]
    return max(min(limits), 0.001) if limits else 0.0


def time_limit_options(limit: float) -> dict[str, float]:
    """Celery's soft and hard time limits for an attempt limit (none for 0)."""
    return {"soft_time_limit": limit, "time_limit": limit + TIME_LIMIT_GRACE} if limit else {}


def signature_options(overrides: Mapping[str, Any], start_delay: float = 0) -> dict[str, Any]:
    """The Celery options of a step's first message from what its task sets for itself:
    its attempt's time limits, and its expiry once it is due (after its start delay)."""
    policy = StepPolicy().merged(overrides)
    options: dict[str, Any] = time_limit_options(attempt_limit(policy))
    if policy.poll_timeout_seconds:
        options["expires"] = start_delay + policy.poll_timeout_seconds
    return options


def ran_past(policy: StepPolicy, soft_limit: float | None, total_spent: bool) -> Limit:
    """Which limit stopped an attempt at its soft time limit `soft_limit` (None: the task's
    own default, the transformation's timeout). Conductor looks at the total first."""
    if total_spent:
        return Limit.TOTAL
    timeout, response = policy.timeout_seconds, policy.response_timeout_seconds
    if soft_limit is None or (timeout and abs(soft_limit - timeout) < _SAME):
        return Limit.TIMEOUT
    if response and abs(soft_limit - response) < _SAME:
        return Limit.RESPONSE
    if policy.total_timeout_seconds:
        return Limit.TOTAL  # a retry limited by what was left of the total budget
    return Limit.TIMEOUT


def retried_anyway(limit: Limit) -> bool:
    """Conductor retries a response timeout whatever the timeout policy: it times the task
    out without consulting the policy."""
    return limit is Limit.RESPONSE


def reason(limit: Limit, policy: StepPolicy, *, elapsed: float, task_id: str, name: str) -> str:
    """Conductor's reasonForIncompletion for a task that ran past `limit`."""
    chosen = policy.timeout_policy.value
    if limit is Limit.TIMEOUT:
        return (f"Task timed out after {int(elapsed)} seconds. Timeout configured as "
                f"{policy.timeout_seconds:g} seconds. Timeout policy configured to {chosen}")
    if limit is Limit.RESPONSE:
        return (f"responseTimeout: {policy.response_timeout_seconds:g} exceeded for the "
                f"taskId: {task_id} with Task Definition: {name}")
    if limit is Limit.POLL:
        return (f"Task poll timed out after {int(elapsed)} seconds. Poll timeout configured "
                f"as {policy.poll_timeout_seconds:g} seconds. Timeout policy configured to "
                f"{chosen}")
    return (f"Task {name}/{task_id} exceeded total timeout of "
            f"{policy.total_timeout_seconds:g} seconds (elapsed {int(elapsed)} seconds across "
            f"all attempts including retry delays). Timeout policy: {chosen}")
