"""Run lifecycle: pause, resume, terminate and retry, without an orchestrator.

Every step checks its run's status when it claims (a flag in Redis, so it holds after
every worker restarts). A step that finds its run PAUSED parks its message and stops;
`resume` sends the parked messages on. `terminate` ends the run, cancels its open steps
and stops their Celery tasks (a prefork pool process running one is killed at once);
queued messages of the run are acknowledged and dropped when they arrive, with nothing
written. A step that fails keeps its message, so `retry` can send it again and the run
goes on from there.
Rerun and restart, which start a run again, are in `app.runtime.rerun`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore

from app.celery_app import celery_app
from app.delays import hop_until
from app.dsl.model import WorkflowDef
from app.errors import BatonError
from app.runtime import limits
from app.runtime.messages import message_of, send_message
from app.runtime.state import get_store
from app.runtime.step_task import StepTask, stop_route
from app.store import OVER_RUN_STATUSES, RunStatus, now_ms
from app.store.lifecycle import Retried

DEADLINE_TASK: Final = "baton.deadline"
STOP_SIGNAL: Final = "SIGKILL"
"""How a running step of a cancelled run is stopped: a pool process may be deep in code
that no gentler signal interrupts; the prefork pool starts a new one in its place."""


class LifecycleError(BatonError):
    """Raised when a lifecycle operation does not apply to a run in its current status."""


def hold_back(task: Task, run_id: str, status: str | None) -> None:
    """Hold back the message of a task that found its run paused or ended.

    `resume` sends it on for a PAUSED run, `retry` for a FAILED one; a run over for good
    (cancelled, timed out) keeps nothing: its message is dropped. A chord member is then
    ignored rather than counted, so the fork can still close when its message comes back.
    """
    if status in (None, RunStatus.RUNNING, RunStatus.COMPLETED):
        return
    if status in OVER_RUN_STATUSES:
        drop(task)
    message = message_of(task)
    verdict = get_store().hold_back(run_id, message)
    if verdict == 2:
        send_message(message)  # resumed or retried since the claim: go round again
    if verdict and task.request.chord:
        raise Ignore()


def drop(task: Task) -> NoReturn:
    """Acknowledge a message of a run that is over for good, and write nothing: no result,
    no count towards a fork (which will never close), nothing held back."""
    stop_route(task)
    raise Ignore()


def is_stale(task: Task, run: Mapping[str, str]) -> bool:
    """Whether a task's message was sent before its run was rerun or restarted.

    Each rerun and restart sends the run's route with a new Celery root id and keeps it on
    the run as `root`; every message of a route carries its root, through chains, chords,
    retries and replaced tasks. A message of an earlier route does nothing.
    """
    root, sent = run.get("root"), task.request.root_id
    return bool(root and sent and root != sent)


def still_running(task: Task, run_id: str, run: Mapping[str, str] | None = None) -> bool:
    """True if the run is RUNNING; else hold this task's message back and end its route.

    `run` is the run's record if the caller has read it (status and root are used).
    """
    if run is None:
        run = get_store().get_run_fields(run_id, "status", "root")
    if is_stale(task, run):
        stop_route(task)
        return False
    status = run.get("status")
    if status == RunStatus.RUNNING:
        return True
    hold_back(task, run_id, status)
    stop_route(task)
    return False


def pause(run_id: str) -> None:
    """No new step starts until `resume`; steps already running finish."""
    if get_store().switch_status(run_id, RunStatus.RUNNING, RunStatus.PAUSED) is None:
        raise LifecycleError(f"run {run_id} is not RUNNING: {_status(run_id)}")


def resume(run_id: str) -> None:
    """Let a PAUSED run go on from where each of its routes stopped.

    A run whose last step completed (or a step failed) while it was paused ends here.
    """
    held_back = get_store().switch_status(run_id, RunStatus.PAUSED, RunStatus.RUNNING)
    if held_back is None:
        raise LifecycleError(f"run {run_id} is not PAUSED: {_status(run_id)}")
    for message in held_back:
        send_message(message)


def terminate(run_id: str, reason: str = "terminated",
              status: str = RunStatus.TERMINATED) -> None:
    """End a RUNNING or PAUSED run (TERMINATED, or TIMED_OUT) and stop its open steps' tasks.

    Its open steps are CANCELED; a task running one is killed (prefork pools; a threads
    pool lets it run to its end, and what it records then is refused), a queued one is
    dropped when it arrives.
    """
    task_ids = get_store().terminate(run_id, status, reason)
    if task_ids is None:
        raise LifecycleError(f"run {run_id} is not RUNNING or PAUSED: {_status(run_id)}")
    if task_ids:
        celery_app.control.revoke(task_ids, terminate=True, signal=STOP_SIGNAL)
        limits.run_ended(run_id)  # their flow-limit slots come back soon after


@celery_app.task(name=DEADLINE_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
def deadline(self: Task, run_id: str, due_ms: int, seconds: int, root: str | None = None) -> Any:
    """Time a run out when its workflow's timeoutSeconds have passed and it has not ended.

    The timer holds for the route it was started with (`root`): a rerun or restart starts
    a timer of its own, and an earlier one stops.
    """
    current = get_store().get_run_fields(run_id, "root").get("root")
    if root and current and root != current:
        return None
    if now_ms() < due_ms:
        return self.replace(deadline_signature(run_id, due_ms, seconds, root))
    try:
        terminate(run_id, f"workflow timed out after {seconds}s", status=RunStatus.TIMED_OUT)
    except LifecycleError:
        pass  # it ended in time
    return None


def deadline_signature(run_id: str, due_ms: int, seconds: int, root: str | None) -> Signature:
    """The timer of a run's timeoutSeconds, in hops shorter than the visibility timeout."""
    return celery_app.signature(DEADLINE_TASK, args=(run_id, due_ms, seconds, root),
                                immutable=True, countdown=hop_until(due_ms))


def times_out(workflow: WorkflowDef) -> bool:
    """Whether a workflow's timeoutSeconds end its runs (TIME_OUT_WF, also when not set)."""
    explicit = "timeout_policy" in workflow.model_fields_set
    return workflow.timeout_seconds > 0 and (not explicit or
                                             workflow.timeout_policy == "TIME_OUT_WF")


def retry(run_id: str) -> None:
    """Run the failed step again and go on from there; completed steps do not run again.

    A failed SUB_WORKFLOW step is retried in place, as Conductor does: its child run is
    retried, and the parent goes on when the child completes.
    """
    from app.runtime.run_limits import slot_again  # it builds on this module

    store = get_store()
    with slot_again(run_id, "be retried") as give_back:
        reply = store.retry_run(run_id)
        if not isinstance(reply, Retried):
            give_back()
    if isinstance(reply, Retried):
        _reopen_parents(run_id)
        for message in reply.messages:
            send_message(message)
        return
    verdict, detail = reply
    if verdict == "status":
        raise LifecycleError(f"run {run_id} is {detail or 'unknown'}: only a FAILED, TIMED_OUT "
                             "or TERMINATED run can be retried")
    child = _failed_child(run_id, detail) if verdict == "nomessage" else None
    if child is None:
        raise LifecycleError(f"run {run_id} cannot be retried: its failure was not in a step "
                             f"that can run again ({detail or 'no failed step'}); rerun it "
                             "from a step instead")
    retry(child)  # reopens this run too, once the child runs again


def _reopen_parents(child_id: str) -> None:
    """A child run that runs again reopens the parents that failed with it, up the tree."""
    store = get_store()
    fields = store.get_run_fields(child_id, "parentWorkflowId", "parentWorkflowTaskRef")
    parent, ref = fields.get("parentWorkflowId"), fields.get("parentWorkflowTaskRef")
    while parent and ref:
        reopened = store.reopen_parent(parent, ref, child_id)
        if reopened is None:
            return
        held_back, grandparent, grandparent_ref = reopened
        for message in held_back:
            send_message(message)
        child_id, parent, ref = parent, grandparent, grandparent_ref


def _failed_child(run_id: str, ref: str) -> str | None:
    """The child run of a failed SUB_WORKFLOW step, if it can be retried."""
    record = get_store().get_step_records(run_id, [ref]).get(ref, {})
    if record.get("taskType") != "SUB_WORKFLOW":
        return None
    child = (json.loads(record.get("output") or "{}") or {}).get("subWorkflowId")
    if not child or get_store().get_status(str(child)) not in _RETRIABLE:
        return None
    return str(child)


_RETRIABLE: Final = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.TERMINATED)


def _status(run_id: str) -> str:
    return get_store().get_status(run_id) or "unknown"
