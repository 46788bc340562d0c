"""pollTimeoutSeconds on a queue no worker takes from: a timer on the control queue.

A step's message with an expiry (pollTimeoutSeconds, or what is left of its
totalTimeoutSeconds) is handled by the worker that takes it past its expiry
(app.runtime.timeouts). A message nobody takes would wait forever, where Conductor times
the task out: so every such message, wherever it is sent from (a route going on, a fork,
a retry, the client), sends `baton.poll_timeout` with a copy of itself, due at its expiry,
to the control queue, which always has workers. Once due, a step the message has not
started is timed out just as the worker would (retried per policy, or its run ended). The
store lets exactly one of the worker and the timer act on one message (RunStore.expire_step):
the timer knows how many attempts the step had ended when the message was sent, so a step
started since is left alone. A message without an expiry costs one header look-up.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

from celery import Task
from celery.signals import after_task_publish

from app.celery_app import celery_app
from app.delays import hop_until
from app.runtime.state import get_store, plans
from app.runtime.step import record_ref
from app.runtime.step_task import StepTask
from app.runtime.timeouts import Expiry, handle_expiry
from app.store import RunStatus, now_ms

log = logging.getLogger(__name__)
POLL_TIMER_TASK: Final = "baton.poll_timeout"


@after_task_publish.connect  # type: ignore[untyped-decorator]
def _sent(sender: str | None = None, body: Any = None, headers: Any = None,
          **_: Any) -> None:
    if not headers or not headers.get("expires"):
        return  # no expiry: nothing to watch (every message but a poll-timed step's)
    try:
        watch(str(sender), body, headers)
    except Exception:  # a message sent stays sent: the worker that takes it still acts
        log.exception("the poll timer of %s[%s] could not be sent", sender, headers.get("id"))


def watch(name: str, body: Any, headers: Any) -> None:
    """Send the timer of a step's message that has just been sent with an expiry."""
    args, kwargs, embed = body
    if name == POLL_TIMER_TASK or len(args) < 3:
        return
    run_id, ref, digest = str(args[0]), str(args[1]), str(args[2])
    recorded_as = record_ref(ref, kwargs.get("iteration"))
    expires = datetime.fromisoformat(str(headers["expires"]))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)  # as Celery reads it: in UTC
    root = str(headers.get("root_id") or "")
    sent = {
        "message": {"task": name, "args": list(args), "kwargs": dict(kwargs),
                    "chain": (embed or {}).get("chain"), "chord": (embed or {}).get("chord"),
                    "group_id": headers.get("group"), "group_index": headers.get("group_index"),
                    "root_id": root},
        "task_id": str(headers.get("id")), "retries": int(headers.get("retries") or 0),
        "timelimit": list(headers.get("timelimit") or (None, None)), "root": root,
        "sent_attempts": len(get_store().get_attempts(run_id, [recorded_as])[recorded_as]),
    }
    due = int(expires.timestamp() * 1000)
    _timer(run_id, ref, digest, due, sent).apply_async(root_id=root or None)


def _timer(run_id: str, ref: str, digest: str, due_ms: int, sent: dict[str, Any]) -> Any:
    return celery_app.signature(POLL_TIMER_TASK, args=(run_id, ref, digest, due_ms, sent),
                                immutable=True, countdown=hop_until(due_ms))


@celery_app.task(name=POLL_TIMER_TASK, bind=True, base=StepTask, ignore_result=True)  # type: ignore[untyped-decorator]
def poll_timeout(self: Task, run_id: str, ref: str, digest: str, due_ms: int,
                 sent: dict[str, Any]) -> Any:
    """Time out the step of a message still not started at its expiry, or wait on."""
    if now_ms() < due_ms:
        return self.replace(_timer(run_id, ref, digest, due_ms, sent))
    status = get_store().get_status(run_id)
    if status == RunStatus.PAUSED:
        # as Conductor, nothing is decided for a paused run: looked at again later
        spec = plans.get(digest).steps.get(ref)
        wait = float((spec.policy_overrides if spec else {}).get("poll_timeout_seconds") or 60)
        return self.replace(_timer(run_id, ref, digest, now_ms() + int(wait * 1000), sent))
    if status != RunStatus.RUNNING:
        return None
    message = sent["message"]
    expiry = Expiry(message, sent["task_id"], sent["retries"], tuple(sent["timelimit"]),
                    datetime.fromtimestamp(due_ms / 1000, UTC), sent["root"],
                    sent_attempts=sent["sent_attempts"])
    handle_expiry(expiry, celery_app.tasks.get(message["task"]), run_id, ref, digest,
                  message["kwargs"].get("iteration"))
    return None

