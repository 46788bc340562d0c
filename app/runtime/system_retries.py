"""Retries of system tasks: Conductor retries a failed INLINE, LAMBDA, JSON_JQ_TRANSFORM,
EVENT, SET_VARIABLE, START_WORKFLOW, SUB_WORKFLOW, WAIT or HUMAN task as any other, per its
retryCount, retryLogic and retryDelaySeconds (only its control-flow operators are not).

A failure inside the step runner is retried there, as an HTTP step's: the Celery tasks of
these types carry a retry policy (`retry_policy`) which the workflow task fills in.

Two types fail after their step has handed its route on and waits:
- a SUB_WORKFLOW step, when its child run fails or times out (app.runtime.endings); its
  retry starts a new child run;
- a WAIT or HUMAN step, when its timeoutSeconds pass under timeoutPolicy RETRY; its retry
  waits again.
Such a step, if its task has retries, keeps its own message (route and fork membership
included) when it starts waiting (`keep_message`), and `retry_waiting` sends that message
again after the policy's delay, as a new attempt. The attempt's number travels in the
message (Celery's `retries`): a redelivered message is the same attempt, not one more.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

from app.delays import split_delay
from app.policy import StepPolicy
from app.runtime import state_events
from app.runtime.messages import message_of, send_message
from app.runtime.scope import record_document
from app.runtime.state import get_store, plans
from app.runtime.timeouts import chosen_policy, retry_options
from app.store import ROUTE_ROOT, Ended, RunStatus, StepStatus

if TYPE_CHECKING:
    from celery import Task

    from app.compiler.plan import StepSpec
    from app.runtime.step import StepContext

log = logging.getLogger(__name__)

RETRIED_TYPES: Final = frozenset({
    "INLINE", "LAMBDA", "JSON_JQ_TRANSFORM", "EVENT", "SET_VARIABLE", "START_WORKFLOW",
    "SUB_WORKFLOW", "WAIT", "HUMAN",
})
"""System task types retried per their task's retry fields (HTTP has a policy of its own)."""

MESSAGE_FIELD: Final = "retryMessage"
"""The step record's field that keeps a waiting step's own message for its retry."""

_CHILD_ENDINGS: Final = {RunStatus.FAILED: StepStatus.FAILED,
                         RunStatus.TIMED_OUT: StepStatus.TIMED_OUT}
"""A child run's endings that fail its parent's step retriably, as Conductor's (a TERMINATED
child cancels the step, which is not retried)."""


def retry_policy(type_name: str) -> StepPolicy | None:
    """The retry policy of a system task type's Celery task (None: never retried)."""
    return StepPolicy() if type_name in RETRIED_TYPES else None


def retry_number(task: Task) -> int:
    """Which retry of its step a task's message is (0: the first attempt)."""
    return int(task.request.retries or 0)


def keep_message(context: StepContext) -> None:
    """Keep the message of a step that starts waiting, for a retry of the step, if its task
    has retries (no write otherwise)."""
    if not chosen_policy(None, context.spec.policy_overrides).retry_count:
        return
    request = context.task.request
    message = {**message_of(context.task), "retries": retry_number(context.task),
               "timelimit": list(request.timelimit or (None, None))}
    get_store().record_step(context.run_id, context.record_ref,
                            {MESSAGE_FIELD: json.dumps(message)})


def child_ended(ended: Ended, error: dict[str, str]) -> bool:
    """A child run that did not complete: retry its parent's SUB_WORKFLOW step with a new
    child if retries are left. True when handled (retried, or the child is no longer the
    step's); False when the parent's step fails."""
    status = _CHILD_ENDINGS.get(ended.status)
    if status is None or not ended.parent_id:
        return False
    return retry_waiting(ended.parent_id, ended.parent_ref, error, status=status,
                         child=ended.run_id, root=ended.root)


def retry_waiting(
    run_id: str, recorded_as: str, error: dict[str, str], *, status: StepStatus,
    child: str | None = None, root: str | None = None,
) -> bool:
    """Retry a waiting step that failed (`status`, `error`): its kept message is sent again
    after the policy's delay. True when handled: retried, or nothing is left to do (it is no
    longer waiting, or `child` is not the child run it waits on); False when no retry is left
    (or kept): the caller ends the step as before.

    `root` fences the write in place of the message's route root.
    """
    store = get_store()
    record = store.get_step_records(run_id, [recorded_as]).get(recorded_as, {})
    kept = record.get(MESSAGE_FIELD)
    if not kept:
        return False
    document = record_document(record)
    if child is not None and (document.get("output") or {}).get("subWorkflowId") != child:
        log.info("run %s, step %s: child run %s ended %s, but the step waits on another one",
                 run_id, recorded_as, child, status.value)
        return True
    message: dict[str, Any] = json.loads(kept)
    retries = int(message.pop("retries", 0))
    hard, soft = message.pop("timelimit", None) or (None, None)
    spec = _spec(run_id, str(message["args"][1]), str(message["args"][2]))
    chosen = chosen_policy(None, spec.policy_overrides)
    if retries >= chosen.retry_count:
        return False
    delay = chosen.delay(retries)
    options = retry_options(run_id, recorded_as, chosen, delay)
    if options is None:
        return False  # the total budget is spent before the retry would start
    token = ROUTE_ROOT.set(root if root is not None else str(message.get("root_id") or ""))
    try:
        if not store.retry_step(run_id, recorded_as, error=error, input=document.get("input"),
                                expect=StepStatus.IN_PROGRESS):
            return True  # it ended meanwhile (completed, cancelled) or the run started again
    finally:
        ROUTE_ROOT.reset(token)
    state_events.ended(run_id, spec, recorded_as, status)
    # a long delay goes in hops, each shorter than the visibility timeout
    countdown, left = split_delay(delay)
    message["kwargs"] = {**(message.get("kwargs") or {}), "delay_left": left}
    send_message(message, countdown=countdown, retries=retries + 1,
                 **{"time_limit": hard, "soft_time_limit": soft, **options})
    log.info("run %s, step %s: %s: %s; retry %d in %gs", run_id, recorded_as, status.value,
             error.get("message"), retries + 1, delay)
    return True


def _spec(run_id: str, ref: str, digest: str) -> StepSpec:
    from app.runtime.step import _dynamic_spec  # the step runner imports this module

    return plans.get(digest).steps.get(ref) or _dynamic_spec(run_id, ref)


def superseded_wait(run_id: str, recorded_as: str, due_ms: int) -> bool:
    """Whether a timed WAIT's timer, due at `due_ms`, belongs to an attempt that a retry has
    replaced (the step now waits until another time)."""
    record = get_store().get_step_records(run_id, [recorded_as]).get(recorded_as, {})
    until = (record_document(record).get("output") or {}).get("waitUntil")
    return until is not None and until != due_ms
