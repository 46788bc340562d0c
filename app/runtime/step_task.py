"""The Celery task class every Baton task is made of."""

from __future__ import annotations

from typing import Any

from celery import Task

from app.store import ROUTE_ROOT


def stop_route(task: Task) -> None:
    """Send nothing more down this message's route (Celery reads request.chain after return)."""
    task.request.chain = None


class StepTask(Task):  # type: ignore[misc]
    """Base of every Baton task: JSON arguments only, results kept small."""

    typing = False  # arguments are pointers checked by the runner, not Python signatures
    max_retries = None  # the step's own policy bounds retries, not Celery's default of 3

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        # the run store fences this task's writes with its route's root (see ROUTE_ROOT)
        ROUTE_ROOT.set(str(self.request.root_id or ""))

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        ROUTE_ROOT.set("")
