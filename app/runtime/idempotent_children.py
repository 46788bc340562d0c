"""subWorkflowParam's idempotencyKey and idempotencyStrategy: a child run started under a key.

The key (a `${...}` template, resolved against the parent's state) names the child run in
the same space as submit_workflow's `idempotency_key`. When a run with that key exists and
this step did not start it (a redelivery of the step finds its own child), the strategy
decides, as Conductor's IdempotencyStrategy names it:
- FAIL (the default): the step fails, naming the key and the existing run;
- RETURN_EXISTING: the step follows the existing run, whose outcome becomes the step's
  (`baton.follow_run` looks at it in growing intervals; its output, or its failure);
- FAIL_ON_RUNNING: the step fails while the existing run is open (running or paused);
  an ended one gives up the key and the step starts a new run under it.
A followed run is not the step's child: ending the parent does not terminate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore

from app.celery_app import celery_app
from app.dsl.expressions import parse_parameter
from app.runtime.containment import contained
from app.runtime.lifecycle import still_running
from app.runtime.operators import OperatorError
from app.runtime.scope import record_document
from app.runtime.state import get_store
from app.runtime.step import Outcome, StepContext, StepTask, record_ref, stop_route
from app.store import OPEN_RUN_STATUSES, RunStatus, StepStatus

FOLLOW_TASK: Final = "baton.follow_run"
_FIRST_LOOK: Final = 0.2
_LONGEST_LOOK: Final = 5.0
"""Seconds between two looks at a followed run: doubling from the first to the longest."""


class ExistingRun(OperatorError):
    """A SUB_WORKFLOW step's idempotency key names a run its strategy does not follow."""


@dataclass(frozen=True)
class ChildKey:
    """The idempotency key a SUB_WORKFLOW step starts its child under, and its strategy."""

    key: str
    strategy: str


def child_key(context: StepContext) -> ChildKey | None:
    """The step's resolved idempotencyKey and its strategy; None when it sets no key."""
    params = context.spec.task.sub_workflow_param
    if params is None or not params.idempotency_key:
        return None
    resolved = parse_parameter(params.idempotency_key).resolve(context.scope)
    if resolved is None or resolved == "" or isinstance(resolved, (dict, list)):
        raise ExistingRun(f"subWorkflowParam.idempotencyKey: '{params.idempotency_key}' "
                          f"resolved to {resolved!r}, not a key")
    return ChildKey(str(resolved), params.idempotency_strategy or "FAIL")


def started_here(context: StepContext, run_id: str) -> bool:
    """True if the run is the child this step started on its current route (a redelivery)."""
    fields = get_store().get_run_fields(run_id, "parentWorkflowId", "parentWorkflowTaskRef",
                                        "root")
    return (fields.get("parentWorkflowId"), fields.get("parentWorkflowTaskRef")) == \
        (context.run_id, context.record_ref) and \
        fields.get("root") == str(context.task.request.root_id or "")


def may_start_again(key: ChildKey, existing: str) -> bool:
    """FAIL_ON_RUNNING with an ended run: the key is given up, to start a new run under it.
    False when the strategy keeps the existing run (or another caller took the key first)."""
    if key.strategy != "FAIL_ON_RUNNING":
        return False
    if get_store().get_status(existing) in OPEN_RUN_STATUSES:
        return False
    return get_store().release_idempotency_key(key.key, existing)


def existing_run(context: StepContext, key: ChildKey, existing: str) -> Outcome:
    """What the step does about a run that holds its key: fail, or follow it."""
    status = get_store().get_status(existing) or "unknown"
    if key.strategy != "RETURN_EXISTING":
        raise ExistingRun(f"subWorkflowParam.idempotencyKey '{key.key}': run {existing} "
                          f"({status}) already has it (idempotencyStrategy {key.strategy})")
    follow = _follow(context.run_id, context.spec.ref, context.plan.digest, existing,
                     _FIRST_LOOK, context.final, context.iteration, countdown=0)
    return Outcome({"subWorkflowId": existing}, then=follow, status=StepStatus.IN_PROGRESS)


def _follow(run_id: str, ref: str, digest: str, followed: str, interval: float, final: bool,
            iteration: int | None, countdown: float) -> Signature:
    frame: dict[str, Any] = {"final": True} if final else {}
    if iteration is not None:
        frame["iteration"] = iteration
    return celery_app.signature(FOLLOW_TASK, args=(run_id, ref, digest, followed, interval),
                                kwargs=frame, immutable=True, countdown=countdown)


@celery_app.task(name=FOLLOW_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda ref, digest, followed, interval, final=False, iteration=None:
           record_ref(ref, iteration))
def follow_run(
    self: Task, run_id: str, ref: str, digest: str, followed: str, interval: float,
    final: bool = False, iteration: int | None = None,
) -> Any:
    """Wait for the run a step follows to end: its output completes the step, its failure
    fails it (as a child's does)."""
    from app.runtime.subworkflows import sub_workflow_done_signature

    store = get_store()
    recorded_as = record_ref(ref, iteration)
    if not still_running(self, run_id):
        return None
    step = store.get_step_records(run_id, [recorded_as]).get(recorded_as, {})
    if step.get("status") != StepStatus.IN_PROGRESS:
        stop_route(self)  # a redelivery: the step ended already
        return None
    run = record_document(store.get_run_fields(followed, "status", "reasonForIncompletion"))
    status = run.get("status")
    if status in OPEN_RUN_STATUSES:
        later = min(interval * 2, _LONGEST_LOOK)
        return self.replace(_follow(run_id, ref, digest, followed, later, final, iteration,
                                    countdown=interval))
    if status == RunStatus.COMPLETED:
        return self.replace(sub_workflow_done_signature(run_id, ref, digest, final, iteration))
    error = {"type": "SubWorkflowFailed",
             "message": f"sub-workflow {status or 'gone'}: "
                        f"{run.get('reasonForIncompletion') or 'run ' + followed}"}
    store.fail_step(run_id, recorded_as, error=error)
    stop_route(self)
    if self.request.chord:
        raise Ignore()  # the run failed: its fork must not be closed by this member
    return None
