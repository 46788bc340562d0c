"""timeoutSeconds of a WAIT or HUMAN task: how long it may wait for its completion.

Conductor keeps such a task IN_PROGRESS while it waits and times it out like any other.
A Baton WAIT or HUMAN step that starts waiting with a timeout sends `baton.wait_timeout`
to itself (in hops shorter than the visibility timeout); once due, a step still waiting is
TIMED_OUT and its run ends TIMED_OUT (TIME_OUT_WF; RETRY once its retryCount is spent,
before which the step waits again as a new attempt: app.runtime.system_retries), or under
ALERT_ONLY the timeout is noted and the step waits on. The step's
completion and its timeout race through the store: only an IN_PROGRESS step is completed
or timed out, so exactly one of them wins. The same timer bounds the wait of SUB_WORKFLOW,
JOIN and DO_WHILE steps (app.runtime.wait_limits).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from celery import Task
from celery.canvas import Signature

from app.celery_app import celery_app
from app.compiler.plan import StepSpec
from app.delays import hop_until
from app.policy import TimeoutPolicy
from app.runtime import state_events
from app.runtime.scope import record_document
from app.runtime.state import get_store, plans
from app.runtime.step import StepContext, StepTask, record_ref
from app.runtime.system_retries import retry_waiting
from app.runtime.timeouts import ALERT_FIELD, chosen_policy
from app.runtime.wait_limits import WAITS_ON_OTHERS, time_out_wait
from app.store import RunStatus, StepStatus, now_ms
from app.timeouts import Limit, reason

log = logging.getLogger(__name__)
WAIT_TIMEOUT_TASK: Final = "baton.wait_timeout"


def watch(context: StepContext) -> None:
    """Start the timer of a step that starts waiting, if its task sets a timeout."""
    start_timer(context.run_id, context.spec, context.plan.digest, context.iteration,
                str(context.task.request.root_id or ""))


def start_timer(run_id: str, spec: StepSpec, digest: str, iteration: int | None,
                root: str) -> None:
    """Start the timer of the step `spec`, which starts waiting now, if its task sets a
    timeout (a JOIN waits from when its fork starts)."""
    seconds = chosen_policy(None, spec.policy_overrides).timeout_seconds
    if seconds:
        due = now_ms() + int(seconds * 1000)
        _timer(run_id, spec.ref, digest, due, iteration, root).apply_async()


def _timer(run_id: str, ref: str, digest: str, due_ms: int, iteration: int | None,
           root: str) -> Signature:
    return celery_app.signature(WAIT_TIMEOUT_TASK,
                                args=(run_id, ref, digest, due_ms, iteration, root),
                                immutable=True, countdown=hop_until(due_ms))


@celery_app.task(name=WAIT_TIMEOUT_TASK, bind=True, base=StepTask,  # type: ignore[untyped-decorator]
                 ignore_result=True)
def wait_timeout(self: Task, run_id: str, ref: str, digest: str, due_ms: int,
                 iteration: int | None = None, root: str = "") -> Any:
    """Time out a waiting step whose timeoutSeconds have passed, or wait another hop."""
    store = get_store()
    run = store.get_run_fields(run_id, "status", "root")
    if run.get("status") not in (RunStatus.RUNNING, RunStatus.PAUSED) or \
            (root and run.get("root") and run["root"] != root):
        return None  # the run ended, or was rerun: a timer of its own runs then
    if now_ms() < due_ms:
        return self.replace(_timer(run_id, ref, digest, due_ms, iteration, root))
    spec = plans.get(digest).steps[ref]
    if spec.type in WAITS_ON_OTHERS:
        return time_out_wait(spec, run_id, iteration, root, due_ms)
    chosen = chosen_policy(None, spec.policy_overrides)
    recorded_as = record_ref(ref, iteration)
    record = store.get_step_records(run_id, [recorded_as]).get(recorded_as, {})
    started = int(record.get("startTime") or now_ms())
    if record.get("status") == StepStatus.IN_PROGRESS and record.get("startTime") and \
            now_ms() - started < chosen.timeout_seconds * 1000:
        return None  # the timer of an attempt a retry replaced: the new one has its own
    text = reason(Limit.TIMEOUT, chosen, elapsed=(now_ms() - started) / 1000,
                  task_id=str(record.get("taskId") or ""), name=spec.name)
    if record.get("status") == StepStatus.TIMED_OUT:
        pass  # timed out by an earlier delivery of this timer, which stopped before the run
    elif chosen.timeout_policy is TimeoutPolicy.ALERT_ONLY:
        log.warning("run %s, step %s: %s", run_id, recorded_as, text)
        store.record_step(run_id, recorded_as, {ALERT_FIELD: text})
        return None
    else:
        error = {"type": "TimeoutError", "message": text}
        if chosen.timeout_policy is TimeoutPolicy.RETRY and retry_waiting(
                run_id, recorded_as, error, status=StepStatus.TIMED_OUT, root=root or None):
            return None  # retried: it waits again
        given = record_document(record).get("input")
        timed_out = store.complete_step(run_id, recorded_as, input=given, output={},
                                        status=StepStatus.TIMED_OUT, error=error,
                                        alias=ref if iteration is not None else None,
                                        expect=StepStatus.IN_PROGRESS)
        if timed_out is None:
            return None  # completed (or cancelled) first
        store.record_step(run_id, recorded_as, {"reasonForIncompletion": text})
        state_events.step_ended(run_id, recorded_as, plans.get(digest))
    store.end_run(run_id, RunStatus.TIMED_OUT, None, reason=text, failed_ref=ref)
    return None
