"""A task's message, kept in Redis and sent again later: route, chord membership and all.

Pausing, retrying a failed step and completing a waiting step all hold a message back
and send it on later; this is the one way they capture and resend it.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from app.celery_app import celery_app


def message_of(task: Task, **kwargs: Any) -> dict[str, Any]:
    """The running task's message as JSON data; `kwargs` override its keyword arguments."""
    request = task.request
    return {
        "task": task.name,
        "args": list(request.args or ()),
        "kwargs": {**(request.kwargs or {}), **kwargs},
        "chain": request.chain,
        "chord": request.chord,
        "group_id": request.group,
        "group_index": request.group_index,
        "root_id": request.root_id,
    }


def request_message(request: Any) -> dict[str, Any]:
    """As `message_of`, for a task's request in the worker's main process (not running)."""
    _, _, embed = request._payload
    return {"task": request.task.name, "args": list(request.args or ()),
            "kwargs": dict(request.kwargs or {}), "chain": (embed or {}).get("chain"),
            "chord": request.chord, "group_id": request.group,
            "group_index": request.group_index, "root_id": request.root_id}


def send_message(message: dict[str, Any], countdown: float | None = None,
                 **options: Any) -> None:
    """Send a captured message again; Celery routes it by its task's name. `options` are
    further Celery options (its expiry, time limits)."""
    celery_app.send_task(
        message["task"], args=message["args"], kwargs=message["kwargs"],
        chain=message.get("chain"), chord=message.get("chord"),
        group_id=message.get("group_id"), group_index=message.get("group_index"),
        root_id=message.get("root_id"), countdown=countdown, **options,
    )
