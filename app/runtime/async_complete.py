"""asyncComplete on HTTP and EVENT: the step does its work, then waits to be completed.

Conductor keeps such a task IN_PROGRESS once its call or publish succeeded, until a task
update from outside completes it. A Baton step records its work's output and parks its
route as a HUMAN step does (app.runtime.waiting), with the same timer for its task's
timeoutSeconds; `complete_step` merges the output it is given into the recorded one and
sends the route on. A redelivered message of a step that parked does not do the work again:
it finds the route it parked and stops.
"""

from __future__ import annotations

import json
from typing import Any, Final

from app.runtime.state import get_store
from app.runtime.step import Outcome, StepContext, Work
from app.runtime.waiting import park
from app.store import StepStatus

ASYNC_COMPLETE_TYPES: Final = frozenset({"HTTP", "EVENT"})
"""The types whose task asyncComplete keeps IN_PROGRESS after its work (as in Conductor)."""


def completed_from_outside(work: Work) -> Work:
    """`work`, followed by waiting for an outside completion when its task sets asyncComplete."""

    def run(context: StepContext) -> Any:
        if not context.spec.task.async_complete:
            return work(context)
        done = _done_before(context)
        if done is not None:
            return Outcome(done, status=StepStatus.IN_PROGRESS, stop=True)
        return park(context, work(context))

    run.__name__ = getattr(work, "__name__", "run")
    run.__doc__ = work.__doc__
    return run


def _done_before(context: StepContext) -> dict[str, Any] | None:
    """The output an earlier delivery of this same message recorded when it parked."""
    record = get_store().get_step_records(context.run_id, [context.record_ref]).get(
        context.record_ref, {})
    parked = json.loads(record.get("parked") or "{}")
    if not record.get("output") or parked.get("task_id") != context.task.request.id:
        return None
    output = json.loads(record["output"])
    return output if isinstance(output, dict) else None
