"""Run lifecycle: pause, resume, terminate and retry, without an orchestrator.

Every step checks its run's status when it claims (a flag in Redis, so it holds after
every worker restarts). A step that finds its run PAUSED parks its message and stops;
`resume` sends the parked messages on. `terminate` ends the run, cancels its open steps
and revokes their Celery tasks; queued steps do nothing when they arrive. A step that
fails keeps its message, so `retry` can send it again and the run goes on from there.
Rerun and restart, which start a run again, are in `app.runtime.rerun`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore

from app.celery_app import celery_app
from app.config import get_settings
from app.dsl.model import WorkflowDef
from app.errors import BatonError
from app.runtime.keys import parked_key, refs_key, run_key, step_key
from app.runtime.messages import message_of, send_message
from app.runtime.state import get_store
from app.runtime.step_task import StepTask, stop_route
from app.runtime.store import now_ms

DEADLINE_TASK: Final = "baton.deadline"

# KEYS: run, parked ; ARGV: now, retention, message json
# Returns 1 when parked, 2 when the run is RUNNING again (resumed or retried since the
# claim saw it stopped), 0 when it is gone or COMPLETED.
_PARK: Final = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'RUNNING' then return 2 end
if not status or status == 'COMPLETED' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: run, parked ; ARGV: from status, to status
_RESUME: Final = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return parked
"""

# KEYS: run, parked, refs ; ARGV: now, reason, step key prefix, status (TERMINATED, TIMED_OUT)
_TERMINATE: Final = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'RUNNING' and status ~= 'PAUSED' then return false end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'reasonForIncompletion', ARGV[2],
  'endTime', ARGV[1])
local revoked = {}
for _, ref in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local key = ARGV[3] .. ref
  local step = redis.call('HGET', key, 'status')
  if step == 'IN_PROGRESS' or step == 'SCHEDULED' then
    redis.call('HSET', key, 'status', 'CANCELED', 'endTime', ARGV[1])
    revoked[#revoked + 1] = redis.call('HGET', key, 'taskId') or ''
  end
end
return revoked
"""

# KEYS: run, parked ; ARGV: step key prefix
_RETRY: Final = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'FAILED' and status ~= 'TIMED_OUT' and status ~= 'TERMINATED' then
  return {'status', status or ''}
end
local ref = redis.call('HGET', KEYS[1], 'failedReferenceTaskName')
if not ref then return {'nostep', ''} end
local key = ARGV[1] .. ref
local message = redis.call('HGET', key, 'message')
if not message then return {'nomessage', ref} end
redis.call('HSET', KEYS[1], 'status', 'RUNNING')
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HDEL', KEYS[1], 'reasonForIncompletion', 'failedReferenceTaskName', 'endTime',
  'permissiveFailure', 'output')
redis.call('HSET', key, 'status', 'SCHEDULED', 'deliveries', '0')
redis.call('HDEL', key, 'message')
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return {'ok', ref, message, parked}
"""


class LifecycleError(BatonError):
    """Raised when a lifecycle operation does not apply to a run in its current status."""


def _script(text: str) -> Any:
    return get_store().client.register_script(text)


def hold_back(task: Task, run_id: str, status: str | None) -> None:
    """Hold back the message of a task that found its run paused or ended.

    `resume` sends it on for a PAUSED run, `retry` for a FAILED, TIMED_OUT or TERMINATED
    one. A chord member is then ignored rather than counted, so the fork can still close
    when its message comes back.
    """
    if status in (None, "RUNNING", "COMPLETED"):
        return
    store = get_store()
    message = message_of(task)
    keys = [run_key(run_id), parked_key(run_id)]
    verdict = store.guard(lambda: _script(_PARK)(
        keys=keys, args=[now_ms(), store.retention, json.dumps(message)]))
    if verdict == 2:
        send_message(message)  # resumed or retried since the claim: go round again
    if verdict and task.request.chord:
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
    if status == "RUNNING":
        return True
    hold_back(task, run_id, status)
    stop_route(task)
    return False


def pause(run_id: str) -> None:
    """No new step starts until `resume`; steps already running finish."""
    _switch(run_id, "RUNNING", "PAUSED")


def resume(run_id: str) -> None:
    """Let a PAUSED run go on from where each of its routes stopped."""
    for message in _switch(run_id, "PAUSED", "RUNNING"):
        send_message(json.loads(message))


def _switch(run_id: str, was: str, becomes: str) -> list[str]:
    """Move a run from one status to the other; returns the messages it had held back."""
    store = get_store()
    parked = store.guard(lambda: _script(_RESUME)(keys=[run_key(run_id), parked_key(run_id)],
                                                  args=[was, becomes]))
    if parked is None:
        raise LifecycleError(f"run {run_id} is not {was}: {_status(run_id)}")
    return list(parked)


def terminate(run_id: str, reason: str = "terminated", status: str = "TERMINATED") -> None:
    """End a RUNNING or PAUSED run (TERMINATED, or TIMED_OUT) and revoke its open steps' tasks."""
    store = get_store()
    keys = [run_key(run_id), parked_key(run_id), refs_key(run_id)]
    revoked = store.guard(lambda: _script(_TERMINATE)(
        keys=keys, args=[now_ms(), reason, step_key(run_id, ""), status]))
    if revoked is None:
        raise LifecycleError(f"run {run_id} is not RUNNING or PAUSED: {_status(run_id)}")
    task_ids = [str(t) for t in revoked if t]
    if task_ids:
        celery_app.control.revoke(task_ids)  # queued copies are dropped; claims stop the rest
    store.run_ended(run_id)


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
        terminate(run_id, f"workflow timed out after {seconds}s", status="TIMED_OUT")
    except LifecycleError:
        pass  # it ended in time
    return None


def hop_until(due_ms: int) -> float:
    """Seconds to wait towards `due_ms`, never past half the visibility timeout: a timer
    message held longer than that would be delivered again before it is due."""
    hop = get_settings().visibility_timeout / 2
    return max(0.0, min((due_ms - now_ms()) / 1000, hop))


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
    """Run the failed step again and go on from there; completed steps do not run again."""
    store = get_store()
    reply = store.guard(lambda: _script(_RETRY)(keys=[run_key(run_id), parked_key(run_id)],
                                                args=[step_key(run_id, "")]))
    verdict, detail = str(reply[0]), str(reply[1])
    if verdict == "status":
        raise LifecycleError(f"run {run_id} is {detail or 'unknown'}: only a FAILED, TIMED_OUT "
                             "or TERMINATED run can be retried")
    if verdict != "ok":
        raise LifecycleError(f"run {run_id} cannot be retried: its failure was not in a step "
                             f"that can run again ({detail or 'no failed step'}); rerun it "
                             "from a step instead")
    for message in [reply[2], *reply[3]]:
        send_message(json.loads(message))


def _status(run_id: str) -> str:
    return get_store().get_status(run_id) or "unknown"
