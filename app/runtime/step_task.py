"""The Celery task class every Baton task is made of, and its request in the worker."""

from __future__ import annotations

from typing import Any, Final

from billiard.exceptions import WorkerLostError
from celery import Task, states
from celery.app.task import Context
from celery.worker.request import Request

from app.celery_app import celery_app
from app.store import ROUTE_ROOT

COUNT_MEMBER_TASK: Final = "baton.count_member"


def stop_route(task: Task) -> None:
    """Send nothing more down this message's route (Celery reads request.chain after return)."""
    task.request.chain = None


class StepRequest(Request):  # type: ignore[misc]
    """A Baton task's request as the worker's main process handles it.

    A pool process stores a fork member's SUCCESS first, then counts the member towards
    its fork, claims the fork's join and sends it. Killed in between, Celery sees the
    stored SUCCESS, acknowledges the message and runs nothing again: the fork would never
    close. So a lost member that succeeded is counted once more here, and again once a
    claim the dead process may have held has expired (`count_member`). Celery's Redis
    backend counts each member of a fork once (by task id and place), and not at all once
    the fork closed; a join sent twice runs once (its claim).
    """

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        if isinstance(exc_info.exception, WorkerLostError) and self.chord:
            meta = self.task.backend.get_task_meta(self.id)
            if meta.get("status") == states.SUCCESS:
                result = meta.get("result")
                self.task.backend.on_chord_part_return(self, states.SUCCESS, result)
                celery_app.send_task(
                    COUNT_MEMBER_TASK, countdown=_join_claim_seconds() + 1,
                    args=(self.id, self.group, self.group_index, self.chord, result))
        return super().on_failure(exc_info, send_failed_event, return_ok)


def _join_claim_seconds() -> float:
    """How long Celery's Redis backend lets one process hold a fork's claim to send its join
    (as celery.backends.redis computes it)."""
    return max(5, int((celery_app.conf.result_chord_join_timeout or 5.0) * 2))


@celery_app.task(name=COUNT_MEMBER_TASK, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def count_member(self: Task, task_id: str, group_id: str, group_index: int | None,
                 chord: Any, result: Any) -> None:
    """Count a fork member whose pool process died after it succeeded (see StepRequest)."""
    member = Context(id=task_id, group=group_id, group_index=group_index, chord=chord)
    self.backend.on_chord_part_return(member, states.SUCCESS, result)


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
