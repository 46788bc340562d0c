"""Baton's control tasks, on the control queue: join, noop and the segment `continue`.

They run through the same step runner as transformations (claim, record, finish), so a
control step is as visible and as redelivery-safe as any other step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Task

from app.celery_app import celery_app
from app.compiler.canvas import CONTINUE_TASK, JOIN_TASK, NOOP_TASK, compile_route
from app.compiler.plan import StepSpec
from app.config import get_settings
from app.runtime.state import get_store, plans
from app.runtime.step import StepTask, execute_step, stop_route
from app.runtime.store import now_ms


@celery_app.task(name=JOIN_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
def join(self: Task, run_id: str, ref: str, digest: str, final: bool = False) -> None:
    """Close a fork: runs once every branch has ended; output maps joinOn refs to outputs."""

    def work(spec: StepSpec, step_input: Any, scope: Mapping[str, Any]) -> dict[str, Any]:
        if spec.fork_ref is not None:
            fork = {"status": "COMPLETED", "taskType": "FORK_JOIN", "output": "{}",
                    "referenceTaskName": spec.fork_ref, "endTime": str(now_ms())}
            get_store().record_step(run_id, spec.fork_ref, fork)
        return {name: (scope.get(name) or {}).get("output") for name in spec.join_on}

    execute_step(self, run_id, ref, digest, final, work)


@celery_app.task(name=NOOP_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
def noop(self: Task, run_id: str, ref: str, digest: str, final: bool = False) -> None:
    """Do nothing, visibly: the step is recorded COMPLETED with an empty output."""
    execute_step(self, run_id, ref, digest, final, lambda spec, step_input, scope: {})


@celery_app.task(name=CONTINUE_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
def continue_route(self: Task, run_id: str, sequence_id: str, start: int, digest: str) -> Any:
    """Compile the next segment of a sequence and put it in this task's place on the route."""
    if get_store().get_status(run_id) != "RUNNING":
        stop_route(self)
        return None
    plan = plans.get(digest)
    route = compile_route(plan, run_id, get_settings().segment_size, sequence_id, start)
    return self.replace(route)
