"""Containment: nothing a task raises goes unrecorded, and no delay outlives a message.

Whatever escapes a step's own handling (its plan cannot be rebuilt, its input cannot be
read, a control task's decision fails) is recorded as the failure of its step and run,
with its message kept for `retry`; only a run store that cannot take writes (unreachable,
out of memory, read-only) sends the message back to its queue instead. A delay longer than
one hop (app.delays) sends the same message again, hop by hop.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject, TaskPredicate

from app.delays import split_delay
from app.errors import StoreUnavailable
from app.runtime.messages import message_of, send_message
from app.runtime.state import get_store
from app.runtime.step_task import stop_route
from app.store import RunStatus

log = logging.getLogger(__name__)
_TRACEBACK_LIMIT = 8000
F = TypeVar("F", bound=Callable[..., Any])


def hop(task: Task, delay: float) -> None:
    """Send this very message again after the next hop of its delay (see app.delays)."""
    countdown, left = split_delay(delay)
    send_message(message_of(task, delay_left=left), countdown=countdown)
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

        return run  # type: ignore[return-value]

    return wrap


def describe_error(exc: BaseException) -> dict[str, str]:
    text = "".join(traceback.format_exception(exc))
    return {"type": type(exc).__name__, "message": str(exc), "traceback": text[-_TRACEBACK_LIMIT:]}



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
    mark_recorded(exc)
    raise exc


def mark_recorded(exc: BaseException) -> None:
    """Mark an exception whose failure the step runner has recorded already."""
    setattr(exc, _RECORDED, True)
