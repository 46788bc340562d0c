"""timeoutSeconds of SUB_WORKFLOW, JOIN and DO_WHILE tasks: how long they wait for others.

Conductor keeps such a task IN_PROGRESS while its child run, its fork's branches or its
iterations go on, and times it out like any other task: from its start (a JOIN starts with
its fork, as Conductor schedules both together; a DO_WHILE and a SUB_WORKFLOW when their
step starts). The WAIT timer (app.runtime.wait_timeouts) is started then and, once due,
calls `time_out_wait`: a step still waiting is TIMED_OUT and its run ends TIMED_OUT at once,
its other open steps (the branches, the iteration) cancelled as when a run times out; the
child run of a SUB_WORKFLOW step is terminated. RETRY does the same (Conductor does not
retry these built-in tasks; a SUB_WORKFLOW step with RETRY is refused); under ALERT_ONLY the
timeout is noted (`timeoutAlert`) and the step waits on. The store decides between the
step's end and its timeout: exactly one wins.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from celery import Task

from app.celery_app import celery_app
from app.compiler.canvas import JOIN_WATCH_TASK
from app.compiler.plan import StepSpec
from app.policy import TimeoutPolicy
from app.runtime.containment import contained
from app.runtime.lifecycle import STOP_SIGNAL, LifecycleError, still_running, terminate
from app.runtime.state import get_store, plans
from app.runtime.step import record_ref
from app.runtime.step_task import StepTask
from app.runtime.timeouts import ALERT_FIELD, chosen_policy
from app.store import DONE_STEP_STATUSES, FAILED_STEP_STATUSES, StepStatus, now_ms
from app.timeouts import Limit, reason

log = logging.getLogger(__name__)
WAITS_ON_OTHERS: Final = frozenset({"SUB_WORKFLOW", "JOIN", "DO_WHILE"})
"""Step types whose timeoutSeconds bounds their wait for other steps or runs."""
_ENDED: Final = DONE_STEP_STATUSES | FAILED_STEP_STATUSES | {StepStatus.CANCELED}


def time_out_wait(spec: StepSpec, run_id: str, iteration: int | None, root: str,
                  due_ms: int) -> None:
    """The timer of a waiting step is due: time the step out, or note it (ALERT_ONLY)."""
    store = get_store()
    chosen = chosen_policy(None, spec.policy_overrides)
    recorded_as = record_ref(spec.ref, iteration)
    record = store.get_step_records(run_id, [recorded_as]).get(recorded_as, {})
    if record.get("status") in _ENDED:
        return  # it ended in time
    started = due_ms - int(chosen.timeout_seconds * 1000)
    text = reason(Limit.TIMEOUT, chosen, elapsed=(now_ms() - started) / 1000,
                  task_id=str(record.get("taskId") or ""), name=spec.name)
    if chosen.timeout_policy is TimeoutPolicy.ALERT_ONLY:
        log.warning("run %s, step %s: %s", run_id, recorded_as, text)
        fields = {ALERT_FIELD: text}
        if not record:  # a JOIN whose branches run: no claim of its own has recorded it
            fields.update(referenceTaskName=recorded_as, taskType=spec.type,
                          taskDefName=spec.name)
        store.record_step(run_id, recorded_as, fields)
        return
    cancelled = store.time_out_step(
        run_id, recorded_as, reason=text, task_type=spec.type, name=spec.name, root=root,
        start_ms=started, alias=spec.ref if iteration is not None else None)
    if cancelled is None:
        return  # it ended first, or its run did
    if cancelled:
        celery_app.control.revoke(cancelled, terminate=True, signal=STOP_SIGNAL)
    if spec.type == "SUB_WORKFLOW":
        _terminate_child(run_id, recorded_as)


def _terminate_child(run_id: str, ref: str) -> None:
    """End the child run of a SUB_WORKFLOW step that timed out: nothing waits on it now.
    (Its end no longer touches the step, which keeps TIMED_OUT: app.runtime.endings.)"""
    record = get_store().get_step_records(run_id, [ref]).get(ref, {})
    child = (json.loads(record.get("output") or "{}") or {}).get("subWorkflowId")
    if not child:
        return
    try:
        terminate(str(child), f"parent run {run_id} timed out its step '{ref}'")
    except LifecycleError:
        pass  # it ended meanwhile


@celery_app.task(name=JOIN_WATCH_TASK, bind=True, base=StepTask, ignore_result=True)  # type: ignore[untyped-decorator]
@contained(lambda *args, **kwargs: None)
def join_watch(self: Task, run_id: str, ref: str, digest: str,
               iteration: int | None = None) -> Any:
    """A fork starts: start the timer of its JOIN, which waits for the branches from now."""
    from app.runtime.wait_timeouts import start_timer  # it calls this module when due

    if still_running(self, run_id):
        start_timer(run_id, plans.get(digest).steps[ref], digest, iteration,
                    str(self.request.root_id or ""))
