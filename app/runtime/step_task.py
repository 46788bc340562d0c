"""The Celery task class every Baton task is made of, and its request in the worker."""

from __future__ import annotations

from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Task, states
from celery.worker.request import Request

from app.store import ROUTE_ROOT


def stop_route(task: Task) -> None:
    """Send nothing more down this message's route (Celery reads request.chain after return)."""
    task.request.chain = None


class StepRequest(Request):  # type: ignore[misc]
    """A Baton task's request as the worker's main process handles it.

    A pool process stores a fork member's SUCCESS first and counts the member towards its
    fork after. Killed in between, Celery sees the stored SUCCESS, acknowledges the message
    and never counts it: the fork would never close. So a lost member that succeeded is
    counted here once more; Celery's Redis backend counts each member of a fork once
    (by task id and place), and not at all once the fork closed.
    """

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        if isinstance(exc_info.exception, WorkerLostError) and self.chord:
            meta = self.task.backend.get_task_meta(self.id)
            if meta.get("status") == states.SUCCESS:
                self.task.backend.on_chord_part_return(self, states.SUCCESS,
                                                       meta.get("result"))
        return super().on_failure(exc_info, send_failed_event, return_ok)


class StepTask(Task):  # type: ignore[misc]
    """Base of every Baton task: JSON arguments only, results kept small."""

    typing = False  # arguments are pointers checked by the runner, not Python signatures
    max_retries = None  # the step's own policy bounds retries, not Celery's default of 3
    Request = f"{__name__}:StepRequest"

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        # the run store fences this task's writes with its route's root (see ROUTE_ROOT)
        ROUTE_ROOT.set(str(self.request.root_id or ""))

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        ROUTE_ROOT.set("")
