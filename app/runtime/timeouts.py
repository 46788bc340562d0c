"""A step's timeouts at run time, with Conductor's statuses (see app.timeouts).

- An attempt stopped at its soft time limit is TIMED_OUT. Under TIME_OUT_WF its run ends
  TIMED_OUT at once; under RETRY (and for a response timeout, whatever the policy) it is
  retried per retry_count, and the run ends TIMED_OUT once no retry is left.
- Under ALERT_ONLY the attempt is not stopped: past its timeout a warning is logged and the
  step's record notes it (`timeoutAlert`).
- A retry gets what is left of the total budget as its time limit and a fresh expiry; once
  the budget is spent the step is TIMED_OUT and its run ends TIMED_OUT, not retried.
- A message that waited in its queue past its expiry (pollTimeoutSeconds, or the end of the
  total budget) is never run by Celery: the worker's main process records the step TIMED_OUT
  here and sends the message again (route, fork membership and all) or ends the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from app.celery_app import control_time_limits
from app.delays import split_delay
from app.policy import StepPolicy, TimeoutPolicy
from app.runtime.messages import request_message, send_message
from app.runtime.state import get_store, plans
from app.store import ROUTE_ROOT, RunStatus
from app.timeouts import Limit, attempt_limit, ran_past, reason, retried_anyway, time_limit_options

log = logging.getLogger(__name__)
ALERT_FIELD = "timeoutAlert"
"""The step record's field that notes an ALERT_ONLY step ran past its timeoutSeconds."""


@dataclass(frozen=True)
class TimedOut:
    """A step that ran past one of its limits, and what that does to its run."""

    limit: Limit
    reason: str
    """Conductor's reasonForIncompletion."""
    ends_run: bool
    """The run ends now, whatever retries are left (TIME_OUT_WF, the total budget spent)."""
    run_status: RunStatus = RunStatus.TIMED_OUT


def chosen_policy(policy: StepPolicy | None, overrides: Any) -> StepPolicy:
    """The step's policy: its task's (or the defaults) with what the workflow task sets."""
    return (policy or StepPolicy()).merged(overrides)


def judge(task: Task, run_id: str, ref: str, name: str, chosen: StepPolicy,
          exc: BaseException) -> TimedOut | None:
    """How an attempt stopped by `exc` timed out; None when not by a limit of its own (it
    failed otherwise, or a control task ran into the operator's ceiling)."""
    if not isinstance(exc, SoftTimeLimitExceeded):
        return None
    _, soft = task.request.timelimit or (None, None)
    soft = soft or task.soft_time_limit
    ceiling = control_time_limits(task.name)
    if soft is None or (ceiling is not None and soft > ceiling[1]):
        return None
    deadline = _deadline(run_id, ref, chosen)
    limit = ran_past(chosen, soft, deadline is not None and time.time() >= deadline - 0.5)
    elapsed = time.time() - _first_start(run_id, ref) if limit is Limit.TOTAL else soft
    text = reason(limit, chosen, elapsed=elapsed, task_id=str(task.request.id), name=name)
    ends = limit is Limit.TOTAL or (chosen.timeout_policy is TimeoutPolicy.TIME_OUT_WF
                                    and not retried_anyway(limit))
    return TimedOut(limit, text, ends_run=ends)


def retry_options(run_id: str, ref: str, chosen: StepPolicy, delay: float) -> dict[str, Any] | None:
    """Celery options for a retry sent `delay` seconds from now: a fresh expiry (a retried
    message keeps its first one otherwise) and the time limit left of the total budget.
    None when the total budget would be spent before the retry starts."""
    options: dict[str, Any] = {}
    expiry = chosen.poll_timeout_seconds
    deadline = _deadline(run_id, ref, chosen)
    if deadline is not None:
        left = deadline - time.time() - delay
        if left <= 0:
            return None
        options.update(time_limit_options(attempt_limit(chosen, left)))
        expiry = min(expiry or left, left)
    if expiry:
        options["expires"] = delay + expiry
    return options


def budget_spent(run_id: str, ref: str, chosen: StepPolicy, task_id: str, name: str,
                 timed_out: bool) -> TimedOut:
    """The verdict on a step whose total budget leaves no time for a retry: no more
    attempts; the run ends TIMED_OUT if the step timed out, else FAILED (as Conductor)."""
    elapsed = time.time() - _first_start(run_id, ref)
    text = reason(Limit.TOTAL, chosen, elapsed=elapsed, task_id=task_id, name=name)
    return TimedOut(Limit.TOTAL, text, ends_run=True,
                    run_status=RunStatus.TIMED_OUT if timed_out else RunStatus.FAILED)


@contextmanager
def alerting(run_id: str, ref: str, task_id: str, chosen: StepPolicy) -> Iterator[None]:
    """Under ALERT_ONLY, note on the step's record (and log) that it ran past its timeout,
    at the moment it does; the attempt itself runs on."""
    if chosen.timeout_policy is not TimeoutPolicy.ALERT_ONLY or not chosen.timeout_seconds:
        yield
        return
    seconds = chosen.timeout_seconds

    def alert() -> None:
        text = reason(Limit.TIMEOUT, chosen, elapsed=seconds, task_id=task_id, name=ref)
        log.warning("run %s, step %s: %s", run_id, ref, text)
        try:
            get_store().record_step(run_id, ref, {ALERT_FIELD: text})
        except Exception:  # an alert that cannot be noted is still logged
            log.exception("run %s, step %s: the timeout alert could not be recorded",
                          run_id, ref)

    timer = threading.Timer(seconds, alert)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@dataclass(frozen=True)
class Expiry:
    """A step's message found past its expiry: by the worker that took it, or by the timer
    sent with it (app.runtime.poll_timers) when no worker took it."""

    message: dict[str, Any]
    """The message, to send again for a retry (route, fork membership and all)."""
    task_id: str
    retries: int
    timelimit: tuple[Any, Any]
    expires: datetime | None
    root: str
    sent_attempts: int | None = None
    """The step's failed attempts when the message was sent (known to the timer): once an
    attempt ended since, the message has started and a later one is the step's own."""

    @property
    def identity(self) -> str:
        """One message of the step: retries and expiries send it again with more retries."""
        return f"{self.task_id}:{self.retries}"


def expired_in_queue(request: Any) -> bool:
    """In the worker's main process: handle a step's message found past its expiry, which
    Celery would discard unrecorded (and count as a failed fork member). True when handled:
    the step is TIMED_OUT and its message sent again for a retry, or its run ended, or its
    timer had done so (the message is then dropped)."""
    args, kwargs = list(request.args or ()), dict(request.kwargs or {})
    if len(args) < 3 or not isinstance(request.task, Task):
        return False
    run_id, ref, digest = str(args[0]), str(args[1]), str(args[2])
    root = str(request.root_id or "")
    token = ROUTE_ROOT.set(root)
    try:
        hard, soft = request.request_dict.get("timelimit") or (None, None)
        expiry = Expiry(request_message(request), str(request.id),
                        int(request.request_dict.get("retries") or 0), (hard, soft),
                        request.expires, root)
        return handle_expiry(expiry, request.task, run_id, ref, digest,
                             kwargs.get("iteration"))
    except Exception:
        log.exception("run %s: the expiry of %s[%s] could not be recorded", run_id,
                      request.task.name, request.id)
        return False
    finally:
        ROUTE_ROOT.reset(token)


def handle_expiry(expiry: Expiry, task: Task | None, run_id: str, ref: str, digest: str,
                  iteration: int | None) -> bool:
    """Time out the step of an expired message (see expired_in_queue); False when the
    step has no limit that sets an expiry (the message is Celery's to discard)."""
    spec = plans.get(digest).steps.get(ref)
    if spec is None:
        return False
    policy: StepPolicy | None = getattr(task, "step_policy", None)
    chosen = chosen_policy(policy, spec.policy_overrides)
    if not chosen.poll_timeout_seconds and not chosen.total_timeout_seconds:
        return False
    recorded_as = f"{ref}__{iteration}" if iteration is not None else ref
    _expired(expiry, run_id, recorded_as, spec.name, chosen, retriable=policy is not None)
    return True


def _expired(expiry: Expiry, run_id: str, ref: str, name: str, chosen: StepPolicy,
             retriable: bool) -> None:
    store = get_store()
    if store.get_status(run_id) not in (RunStatus.RUNNING, RunStatus.PAUSED):
        return  # over: its message is dropped
    retries = expiry.retries
    deadline = _deadline(run_id, ref, chosen)
    task_id = expiry.task_id
    if deadline is not None and time.time() >= deadline - 0.5:
        verdict = budget_spent(run_id, ref, chosen, task_id, name, timed_out=True)
    else:
        waited = chosen.poll_timeout_seconds + _past(expiry.expires)
        text = reason(Limit.POLL, chosen, elapsed=waited, task_id=task_id, name=name)
        verdict = TimedOut(Limit.POLL, text,
                           ends_run=chosen.timeout_policy is TimeoutPolicy.TIME_OUT_WF)
    error = {"type": "TimeoutError", "message": verdict.reason}
    message = expiry.message
    if retriable and not verdict.ends_run and retries < chosen.retry_count:
        delay = chosen.delay(retries)
        options = retry_options(run_id, ref, chosen, delay)
        if options is not None:
            if not store.expire_step(run_id, ref, identity=expiry.identity, error=error,
                                     sent_attempts=expiry.sent_attempts, root=expiry.root,
                                     retry=True):
                return  # started since, or its expiry was handled (worker or timer)
            countdown, left = split_delay(delay)
            if left:
                message["kwargs"]["delay_left"] = left
            hard, soft = expiry.timelimit
            send_message(message, countdown=countdown, task_id=task_id, retries=retries + 1,
                         **{"time_limit": hard, "soft_time_limit": soft, **options})
            log.info("run %s, step %s: %s; retried", run_id, ref, verdict.reason)
            return
        verdict = budget_spent(run_id, ref, chosen, task_id, name, timed_out=True)
    error = {"type": "TimeoutError", "message": verdict.reason}
    if store.expire_step(run_id, ref, identity=expiry.identity, error=error,
                         sent_attempts=expiry.sent_attempts, root=expiry.root, retry=False,
                         run_status=verdict.run_status, message=message):
        log.info("run %s, step %s: %s", run_id, ref, verdict.reason)


def _past(expires: datetime | None) -> float:
    """Seconds since an expiry."""
    if expires is None:
        return 0.0
    return max(0.0, time.time() - expires.timestamp())


def _deadline(run_id: str, ref: str, chosen: StepPolicy) -> float | None:
    """When the step's total budget ends (epoch seconds), None without one."""
    if not chosen.total_timeout_seconds:
        return None
    return _first_start(run_id, ref) + chosen.total_timeout_seconds


def _first_start(run_id: str, ref: str) -> float:
    """When the step's first attempt started (epoch seconds; now if none has)."""
    store = get_store()
    for attempt in store.get_attempts(run_id, [ref])[ref]:
        if attempt.get("startTime"):
            return float(attempt["startTime"]) / 1000
    started = store.get_step_records(run_id, [ref]).get(ref, {}).get("startTime")
    return float(started) / 1000 if started else time.time()
