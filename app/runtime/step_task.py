"""The Celery task class every Baton task is made of."""

from __future__ import annotations

from celery import Task


def stop_route(task: Task) -> None:
    """Send nothing more down this message's route (Celery reads request.chain after return)."""
    task.request.chain = None


class StepTask(Task):  # type: ignore[misc]
    """Base of every Baton task: JSON arguments only, results kept small."""

    typing = False  # arguments are pointers checked by the runner, not Python signatures
    max_retries = None  # the step's own policy bounds retries, not Celery's default of 3
