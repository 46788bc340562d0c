"""Containment: nothing a task raises goes unrecorded, and no delay outlives a message.

Whatever escapes a step's own handling (its plan cannot be rebuilt, its input cannot be
read, a control task's decision fails) is recorded as the failure of its step and run,
with its message kept for `retry`; only a run store that cannot take writes (unreachable,
out of memory, read-only) sends the message back to its queue instead. A delay longer than
one hop (app.delays) sends the same message again, hop by hop.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task, current_task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded, TaskPredicate

from app.celery_app import control_time_limits
from app.delays import split_delay
from app.errors import StoreUnavailable
from app.runtime.masking import masked_exception
from app.runtime.messages import message_of, request_message, send_message
from app.runtime.state import get_store
from app.runtime.step_task import stop_route
from app.store import RunStatus, StepStatus

log = logging.getLogger(__name__)
_TRACEBACK_LIMIT = 8000
F = TypeVar("F", bound=Callable[..., Any])


def hop(task: Task, delay: float) -> None:
    """Send this very message again after the next hop of its delay (see app.delays)."""
    countdown, left = split_delay(delay)
    # the same time limits, retry count and expiry (pollTimeoutSeconds: a time, not a delay)
    hard, soft = task.request.timelimit or (None, None)
    send_message(message_of(task, delay_left=left), countdown=countdown,
                 expires=task.request.expires, time_limit=hard, soft_time_limit=soft,
                 retries=task.request.retries or 0)
    stop_route(task)
    if task.request.chord:
        raise Ignore()  # the fork counts the message that runs the step


def contained(record_as: Callable[..., str | None]) -> Callable[[F], F]:
    """For a control task that runs outside the step runner (loop decisions, timers, hops):
    whatever its body raises is recorded as `escaped` does, on the step `record_as` names
    from the task's arguments (None: the run itself fails)."""

    def wrap(body: F) -> F:
        @functools.wraps(body)
        def run(self: Task, run_id: str, *args: Any, **kwargs: Any) -> Any:
            return guarded(self, run_id, record_as(*args, **kwargs),
                            lambda: body(self, run_id, *args, **kwargs))

        setattr(run, _RECORD_AS, record_as)  # for a task killed past its time limit
        return run  # type: ignore[return-value]

    return wrap


def describe_error(exc: BaseException) -> dict[str, str]:
    text = "".join(traceback.format_exception(exc))
    message = str(exc)
    if isinstance(exc, SoftTimeLimitExceeded) and current_task:
        hard, soft = current_task.request.timelimit or (None, None)
        message = _time_limit_message(current_task.name, hard or current_task.time_limit,
                                      soft or current_task.soft_time_limit)
    return {"type": type(exc).__name__, "message": message, "traceback": text[-_TRACEBACK_LIMIT:]}


def _time_limit_message(name: str, hard: float | None, soft: float | None = None) -> str:
    """Which limit a task ran past, named as an operator or a definition sets it.

    `soft` is given when the task was stopped at its soft limit, None when it was killed.
    """
    control = control_time_limits(name)
    setting = "timeoutSeconds"
    if control is not None and (not hard or hard >= control[0]):
        setting = "control_time_limit"
        hard, soft = control[0], control[1] if soft is not None else None
    if soft is not None:
        return (f"{name} ran past its time limit ({setting}: stopped after {float(soft):g}s, "
                f"killed at {float(hard or 0):g}s)")
    return f"{name} ran past its time limit ({setting}: killed after {float(hard or 0):g}s)"


_RECORD_AS = "_baton_record_as"
"""On a `contained` task's function: the step its failures are recorded on."""


def record_killed(request: Any, timeout: float) -> bool:
    """In the worker's main process: record the failure of a task whose pool process was
    killed past its hard time limit; False when it is not a run's task or not recorded.

    The step fails TIMED_OUT and keeps its message for `retry`, as a failed step does.
    """
    args, kwargs = list(request.args or ()), dict(request.kwargs or {})
    if not args:
        return False
    run_id = str(args[0])
    error = {"type": "TimeLimitExceeded",
             "message": _time_limit_message(request.task.name, timeout)}
    try:
        ref = _recorded_as(request.task, args, kwargs)
        if ref is None:
            get_store().end_run(run_id, RunStatus.FAILED, None,
                                reason=f"{error['type']}: {error['message']}")
            return True
        get_store().fail_step(run_id, ref, error=error, step_status=StepStatus.TIMED_OUT,
                              message=request_message(request),
                              root=str(request.root_id or ""))
    except Exception:  # the worker's main process must go on whatever happens here
        log.exception("run %s: the failure of %s[%s], killed past its time limit, could not "
                      "be recorded", run_id, request.task.name, request.id)
        return False
    return True


def _recorded_as(task: Task, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """The step a delivery of `task` records on: a `contained` task names it; a step task
    has `ref` (and `iteration`) among its arguments."""
    record_as = getattr(task.run, _RECORD_AS, None)
    if record_as is not None:
        ref = record_as(*args[1:], **kwargs)
        return None if ref is None else str(ref)
    try:
        bound = inspect.signature(task.run).bind(*args, **kwargs).arguments
    except TypeError:
        return None
    if "ref" not in bound:
        return None
    from app.runtime.step import record_ref

    return record_ref(str(bound["ref"]), bound.get("iteration"))



_RECORDED = "_baton_recorded"
"""Set on an exception whose failure the step runner has recorded already."""


def guarded(task: Task, run_id: str, recorded_as: str | None, call: Callable[[], Any]) -> Any:
    """Run a task's body; what it raises is recorded on `recorded_as` (see `escaped`)."""
    try:
        return call()
    except StoreUnavailable as exc:
        raise _back_to_queue(run_id, recorded_as, exc) from exc
    except TaskPredicate:
        raise  # Celery's own flow: retry, replace, ignore, reject
    except Exception as exc:
        if getattr(exc, _RECORDED, False):
            raise
        return escaped(task, run_id, recorded_as, exc)


def _back_to_queue(run_id: str, ref: str | None, exc: StoreUnavailable) -> Reject:
    """The rejection that sends a message back to its queue: nothing can be recorded now."""
    log.warning("run %s, step %s: %s; its message goes back to the queue", run_id,
                ref or "-", exc)
    return Reject(str(exc), requeue=True)


def escaped(task: Task, run_id: str, recorded_as: str | None, exc: Exception) -> Any:
    """Record a failure that escaped a step's own handling: the step and its run fail."""
    error = describe_error(exc)
    try:
        if recorded_as is None:
            get_store().end_run(run_id, RunStatus.FAILED, None,
                                reason=f"{error['type']}: {error['message']}")
        else:
            get_store().fail_step(run_id, recorded_as, error=error, message=message_of(task))
    except StoreUnavailable as lost:
        raise _back_to_queue(run_id, recorded_as, lost) from lost
    stop_route(task)
    if task.request.chord:
        raise Ignore() from exc  # counted when it is retried, as in _failed
    shown = masked_exception(get_store(), run_id, exc)  # what Celery (and Flower) see
    mark_recorded(shown)
    raise shown


def mark_recorded(exc: BaseException) -> None:
    """Mark an exception whose failure the step runner has recorded already."""
    setattr(exc, _RECORDED, True)
