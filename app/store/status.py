"""The statuses a run and a step go through, and the verdicts of a step's claim.

Defined below both the runtime and the client, so that no layer compares status strings
of its own. Each member's value is the string kept in Redis (Conductor's names).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class RunStatus(StrEnum):
    """A run's status, as Conductor names workflow statuses."""

    RUNNING = "RUNNING"
    """Steps may start; a step of it is queued, running or waiting."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    """The workflow's timeoutSeconds passed before it ended."""
    TERMINATED = "TERMINATED"
    """Cancelled from outside, or ended by a TERMINATE task."""
    PAUSED = "PAUSED"
    """No step starts until resumed; steps that were running finish."""

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.PAUSED)


class StepStatus(StrEnum):
    """A step's status, as Conductor names task statuses."""

    SCHEDULED = "SCHEDULED"
    """Sent (or about to be sent again after a failed attempt), not yet started."""
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    """An optional step that failed: the run went on."""
    FAILED = "FAILED"
    FAILED_WITH_TERMINAL_ERROR = "FAILED_WITH_TERMINAL_ERROR"
    """Failed with an error that retrying cannot mend."""
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"
    """Its run ended while it was open."""
    SKIPPED = "SKIPPED"

    @property
    def done(self) -> bool:
        """Whether the step's work is over for good: it never runs again in this attempt."""
        return self in DONE_STEP_STATUSES

    @property
    def failed(self) -> bool:
        return self in FAILED_STEP_STATUSES


DONE_STEP_STATUSES: Final = frozenset(
    {StepStatus.COMPLETED, StepStatus.COMPLETED_WITH_ERRORS, StepStatus.SKIPPED})
FAILED_STEP_STATUSES: Final = frozenset(
    {StepStatus.FAILED, StepStatus.FAILED_WITH_TERMINAL_ERROR, StepStatus.TIMED_OUT})
OPEN_STEP_STATUSES: Final = frozenset({StepStatus.SCHEDULED, StepStatus.IN_PROGRESS})
OPEN_RUN_STATUSES: Final = frozenset({RunStatus.RUNNING, RunStatus.PAUSED})
OVER_RUN_STATUSES: Final = frozenset({RunStatus.TERMINATED, RunStatus.TIMED_OUT})
"""A run ended from outside (cancelled, timed out) or by a TERMINATE task is over for good:
`retry` reopens a run only at a failed step that kept its message, so a message of such a
run is dropped, not held back (lua/lib.lua names the same statuses)."""


class ClaimVerdict(StrEnum):
    """What a step's claim decided (see RunStore.claim_step)."""

    RUN = "run"
    """The step is now IN_PROGRESS for this delivery: do its work."""
    DONE = "done"
    """It completed before (a redelivery): run nothing, let the route go on."""
    STOPPED = "stopped"
    """Its run is paused, or ended and may be retried: hold the message back."""
    DROPPED = "dropped"
    """Its run is over for good (OVER_RUN_STATUSES): acknowledge it, write nothing."""
    MISSING = "missing"
    """Its run is not in the store (expired, or never written)."""
    EXHAUSTED = "exhausted"
    """Delivered more often than the bound allows without finishing: fail it."""
    STALE = "stale"
    """Sent before its run was rerun or restarted: its route is over."""
