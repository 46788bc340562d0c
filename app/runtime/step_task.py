"""The Celery task class every Baton task is made of, and its request in the worker."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task, states
from celery.app.task import Context
from celery.concurrency.base import BasePool
from celery.result import AsyncResult
from celery.utils import uuid
from celery.worker import state as worker_state
from celery.worker.request import Request

from app.celery_app import celery_app, control_time_limits
from app.compiler.fusion import FUSED
from app.store import ROUTE_ROOT

log = logging.getLogger(__name__)
COUNT_MEMBER_TASK: Final = "baton.count_member"
SEND_CHECK_EVERY: Final = 200
"""Messages a task sends for its own run between two looks at whether the run ended."""


def stop_route(task: Task) -> None:
    """Send nothing more down this message's route (Celery reads request.chain after return);
    a message running fused steps runs none after this one (app.runtime.fusion)."""
    task.request.chain = None
    task.request.baton_stopped = True


def is_fused(task: Task) -> bool:
    """Whether the running message runs fused steps (app.runtime.fusion)."""
    return FUSED in (task.request.kwargs or {})


def route_stopped(task: Task) -> bool:
    """Whether the running step stopped its message's route (see stop_route)."""
    return bool(getattr(task.request, "baton_stopped", False))


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
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        if isinstance(exc, TimeLimitExceeded) and self._killed(exc):
            return None
        if isinstance(exc, WorkerLostError) and self.chord:
            meta = self.task.backend.get_task_meta(self.id)
            if meta.get("status") == states.SUCCESS:
                result = meta.get("result")
                self.task.backend.on_chord_part_return(self, states.SUCCESS, result)
                celery_app.send_task(
                    COUNT_MEMBER_TASK, countdown=_join_claim_seconds() + 1,
                    args=(self.id, self.group, self.group_index, self.chord, result))
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _killed(self, exc: TimeLimitExceeded) -> bool:
        """Past the hard time limit the pool process is killed before it could record
        anything (the pool reports it here, then to `on_timeout`): the step's failure, and
        its message for `retry`, are recorded here, or its run would stay RUNNING with
        nothing left to end it. True when Celery is to do nothing more about it."""
        from app.runtime.containment import record_killed

        recorded = record_killed(self, float(exc.args[0] if exc.args else 0))
        if not (recorded and self.chord and self.task.acks_late):
            return False
        # Celery would count the killed member towards its fork, which then never closes,
        # not even once the step is retried: as the runner does with a failed fork member,
        # it is not counted
        self.__dict__["_baton_uncounted"] = True
        worker_state.task_ready(self)
        self.acknowledge()
        return True

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft and self.__dict__.get("_baton_uncounted"):
            log.error("Hard time limit (%ss) exceeded for %s[%s]", timeout, self.name, self.id)
            return
        super().on_timeout(soft, timeout)

    def terminate(self, pool: BasePool, signal: Any = None) -> None:
        """Stop the running task (revoke with terminate); a pool that cannot (threads)
        lets it run to its end, where its claim or record finds the run ended."""
        # a prefork pool sets terminate_job on itself once started; a threads pool keeps
        # the base class's, which raises
        if getattr(pool.terminate_job, "__func__", None) is BasePool.terminate_job:
            log.info("pool %s cannot stop task %s[%s]: it runs to its end",
                     type(pool).__name__, self.name, self.id)
            return
        super().terminate(pool, signal)

    def revoked(self) -> bool:
        """A step's message past its expiry (pollTimeoutSeconds) is handled as a timeout
        (app.runtime.timeouts) rather than discarded unrecorded, as Celery would."""
        already = bool(self.__dict__.get("_already_revoked"))
        if not already and self.expires and self.id not in worker_state.revoked \
                and datetime.now(UTC) > self.expires:
            from app.runtime.timeouts import expired_in_queue

            if expired_in_queue(self):
                worker_state.task_ready(self)
                self.acknowledge()
                self._already_revoked = True
                return True
        return bool(super().revoked())

    @property
    def time_limits(self) -> Any:
        limits = self.__dict__.get("_baton_time_limits", (None, None))
        ceiling = control_time_limits(self.task.name) if limits[0] else None
        if ceiling is not None and limits[0] > ceiling[0]:
            return ceiling  # a control task's own timeoutSeconds stays under the ceiling
        return limits

    @time_limits.setter
    def time_limits(self, value: Any) -> None:
        self.__dict__["_baton_time_limits"] = value


def _join_claim_seconds() -> float:
    """How long Celery's Redis backend lets one process hold a fork's claim to send its join
    (as celery.backends.redis computes it)."""
    return max(5, int((celery_app.conf.result_chord_join_timeout or 5.0) * 2))


@celery_app.task(name=COUNT_MEMBER_TASK, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def count_member(self: Task, task_id: str, group_id: str, group_index: int | None,
                 chord: Any, result: Any, looks: int = 1) -> None:
    """Count a fork member whose pool process died after it succeeded (see StepRequest).

    The dead process may hold the fork's claim for longer than the first look waited:
    Celery extends it by the time publishing the join may take. While someone else's
    claim stands and the fork has not closed, this looks again once the claim expires."""
    member = Context(id=task_id, group=group_id, group_index=group_index, chord=chord)
    self.backend.on_chord_part_return(member, states.SUCCESS, result)
    left = _claim_left(self.backend, group_id)
    if left is not None and looks < MAX_LOOKS:
        self.apply_async(args=(task_id, group_id, group_index, chord, result),
                         kwargs={"looks": looks + 1}, countdown=left + 1)


MAX_LOOKS: Final = 10
"""At most this many looks, the first included, at the fork a lost member belongs to; each
one after the first waits out one claim."""


def _claim_left(backend: Any, group_id: str) -> float | None:
    """Seconds left to a claim held on the fork's join by a process other than the caller
    (Celery's Redis backend: `.c` holds its token, or 'done' once the join was sent); None
    when no claim stands (the fork closed, or waits for members still running)."""
    key = backend.get_key_for_group(group_id, ".c")
    held = backend.client.get(key)
    if held is None or held in (b"done", "done"):
        return None
    ttl = backend.client.ttl(key)
    return float(ttl) if ttl >= 0 else _join_claim_seconds()


@dataclass
class _Sending:
    """What the running task has sent for its own run (see StepTask.apply_async)."""

    run_id: str
    sent: int = 0
    over: bool = False


_SENDING: ContextVar[_Sending | None] = ContextVar("baton_sending", default=None)


class StepTask(Task):  # type: ignore[misc]
    """Base of every Baton task: JSON arguments only, results kept small.

    The first argument of every Baton task is its run's id.
    """

    typing = False  # arguments are pointers checked by the runner, not Python signatures
    step_policy: Any = None
    """A step task's retry and timeout policy (StepPolicy; None: its steps are not retried)."""
    max_retries = None  # the step's own policy bounds retries, not Celery's default of 3
    Request = f"{__name__}:StepRequest"

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        # the run store fences this task's writes with its route's root (see ROUTE_ROOT)
        ROUTE_ROOT.set(str(self.request.root_id or ""))
        _SENDING.set(_Sending(str(args[0])) if args else None)

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        ROUTE_ROOT.set("")
        _SENDING.set(None)

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Send this task; a task that sends many for its own run (a dynamic fork's
        branches) stops once the run has ended for good, looking every SEND_CHECK_EVERY."""
        sending = _SENDING.get()
        if sending is not None and args and str(args[0]) == sending.run_id:
            if not sending.over:
                sending.sent += 1
                if sending.sent % SEND_CHECK_EVERY == 0:
                    from app.runtime.state import get_store

                    sending.over = get_store().ended_for_good(sending.run_id)
                    if sending.over:
                        log.info("run %s has ended: no more of its messages are sent "
                                 "(%d were)", sending.run_id, sending.sent - 1)
            if sending.over:
                return AsyncResult(options.get("task_id") or uuid(), app=self.app)
        return super().apply_async(args, kwargs, **options)
