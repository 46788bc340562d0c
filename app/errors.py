"""Baton's one error hierarchy: every error a user can meet derives from BatonError."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class BatonError(Exception):
    """Base class of every error Baton raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem in a definition: where it is and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DefinitionError(BatonError):
    """Raised when a workflow definition is malformed; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StoreUnavailable(BatonError):
    """Raised when the run store (Redis) cannot be reached."""


class StoreRefused(StoreUnavailable):
    """Raised when Redis is up but refuses writes for now (out of memory, read-only)."""


class RunNotFound(BatonError):
    """Raised when a run id names no run in the store (never existed, or expired)."""


class WaitTimeout(BatonError, TimeoutError):
    """Raised when a run does not reach a terminal state within the time asked for."""


class WorkflowFailed(BatonError):
    """Raised by `WorkflowRun.result()` when the run ended in any status but COMPLETED."""

    def __init__(
        self,
        run_id: str,
        status: str,
        step_ref: str | None,
        error: dict[str, Any] | None,
        reason: str | None,
    ) -> None:
        self.run_id = run_id
        self.status = status
        self.step_ref = step_ref
        self.error = error
        self.reason = reason
        where = f" at step '{step_ref}'" if step_ref else ""
        super().__init__(f"run {run_id} {status}{where}: {reason or 'no reason given'}")


class TerminalError(BatonError):
    """Raised by a transformation for a failure that retrying cannot mend (no retries follow)."""


class TransformationError(BatonError):
    """Raised when a transformation is declared wrongly (bad name, queue or signature)."""
