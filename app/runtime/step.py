"""The step runner: what every Baton task does around its own work.

Claim the step atomically (a redelivered message for a completed step does nothing but
let the route go on), resolve its input from the run's state, do the work, record the
output; the step that ends the run also computes the workflow's output and completes
the run in the same call. A failure is recorded on the step and ends the run before the
exception reaches Celery, so correctness never rests on Celery's error callbacks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from app.celery_app import celery_app
from app.compiler.plan import READS_RUN, Plan, StepSpec, step_spec
from app.config import get_settings
from app.delays import split_delay
from app.dsl.expressions import Parameter
from app.dsl.model import WorkflowTask
from app.errors import TerminalError
from app.payloads import InvalidPayload, PayloadTooLarge, check_payload
from app.policy import StepPolicy
from app.runtime import cache, limits, state_events, timeouts
from app.runtime.containment import describe_error, guarded, hop, mark_recorded
from app.runtime.lifecycle import drop, hold_back
from app.runtime.masking import masked_exception
from app.runtime.messages import message_of
from app.runtime.schemas import check_step_input, check_step_output, checked_run_output
from app.runtime.scope import build_scope
from app.runtime.state import get_store, plans
from app.runtime.step_task import StepTask, is_fused, stop_route
from app.store import Claim, ClaimVerdict, RunStatus, StepStatus

__all__ = ["StepTask", "StepContext", "Outcome", "execute_step", "stop_route", "record_ref"]


class StepOutputError(InvalidPayload, TypeError):
    """A step's output (or input) is not a JSON value, or nests too deeply."""


@dataclass(frozen=True)
class StepContext:
    """What a step's work sees: its run, its spec, its resolved input and the run's state."""

    task: Task
    run_id: str
    plan: Plan
    spec: StepSpec
    input: Any
    scope: Mapping[str, Any]
    final: bool
    iteration: int | None
    attempts: int

    @property
    def record_ref(self) -> str:
        return record_ref(self.spec.ref, self.iteration)


@dataclass(frozen=True)
class Outcome:
    """A step's output, and what its operator decided beyond it."""

    output: Any
    then: Signature | None = None
    """A route that takes this step's place on the message's route (it ends the run if final)."""
    end_run: tuple[str, str] | None = None
    """(status, reason): end the run now with the output as the workflow's (TERMINATE)."""
    status: StepStatus = StepStatus.COMPLETED
    """The step's status once recorded; IN_PROGRESS for a loop whose iterations go on."""
    stop: bool = False
    """Send nothing more down this route (another delivery already carries it on)."""
    parked: str = ""
    """A waiting step's parked route (JSON, app.runtime.waiting), recorded with its output:
    it may be completed from outside once the route is there, and not before its own
    output is, which the completion adds to."""


Work = Callable[[StepContext], Any]
"""A step's own work: returns its output, or an Outcome."""
Resend = Callable[[str, Plan, StepSpec, Any, bool, int | None], Signature | None]
"""For a control step found completed: the route it had sent (run id, plan, spec, recorded
output, final, iteration)."""


@dataclass(frozen=True)
class StepKind:
    """What the step runner runs for the steps of one Celery task, in its own message or
    fused into another's (app.runtime.fusion)."""

    work: Work
    policy: StepPolicy | None
    resend: Resend | None


KINDS: dict[str, StepKind] = {}
"""Celery task name -> the steps it runs."""


def step_task(
    name: str, work: Work, *, policy: StepPolicy | None = None, resend: Resend | None = None,
    doc: str | None = None, options: Mapping[str, Any] | None = None,
) -> Task:
    """Register the Celery task `name` that runs `work` as a step through the step runner.

    Every step task takes the same pointers: (run id, step ref, plan digest, whether it
    ends the run, loop iteration). `options` are Celery task options (time limits).
    """

    def run(
        self: Task, run_id: str, ref: str, digest: str, final: bool = False,
        iteration: int | None = None, delay_left: float = 0.0,
        fused: list[str] | None = None, limit_ticket: list[str] | None = None,
    ) -> Any:
        # limit_ticket: the slot a parked message was handed (read off the request)
        if delay_left > 0:
            return hop(self, delay_left)
        if fused is not None:
            from app.runtime.fusion import run_fused  # it runs each step through this module

            return run_fused(self, run_id, [ref, *fused], digest, final=final,
                             iteration=iteration)
        return execute_step(self, run_id, ref, digest, work, final=final,
                            iteration=iteration, policy=policy, resend=resend)

    KINDS[name] = StepKind(work, policy, resend)
    run.__doc__ = doc or work.__doc__
    run.__name__ = getattr(work, "__name__", name)
    return celery_app.task(name=name, bind=True, base=StepTask, step_policy=policy,
                           **(options or {}))(run)


def record_ref(ref: str, iteration: int | None) -> str:
    """The ref a step's record is kept under: `<ref>__<n>` in loop iteration n."""
    return f"{ref}__{iteration}" if iteration is not None else ref


def execute_step(
    task: Task, run_id: str, ref: str, digest: str, work: Work, *,
    final: bool = False, iteration: int | None = None, policy: StepPolicy | None = None,
    resend: Resend | None = None,
) -> Any:
    """Run one step of a run (see `_execute_step`); nothing it raises goes unrecorded.

    With the run store down (Redis restarting) nothing about the step can be recorded, and
    a task that raised would be acknowledged and its message lost: it is rejected with
    requeue instead, or stays unacknowledged until the visibility timeout brings it back.
    Whatever else escapes the step's own handling (its plan cannot be rebuilt, its input
    cannot be read) fails the step and its run, with the message kept for `retry`.
    """
    return guarded(task, run_id, record_ref(ref, iteration), lambda: _execute_step(
        task, run_id, ref, digest, work, final=final, iteration=iteration, policy=policy,
        resend=resend))


def _execute_step(
    task: Task,
    run_id: str,
    ref: str,
    digest: str,
    work: Work,
    *,
    final: bool = False,
    iteration: int | None = None,
    policy: StepPolicy | None = None,
    resend: Resend | None = None,
) -> Any:
    """Run one step of a run; `policy` (retries, timeouts) applies to transformations only."""
    store = get_store()
    plan = plans.get(digest)
    spec = plan.steps.get(ref) or _dynamic_spec(run_id, ref)
    recorded_as = record_ref(ref, iteration)
    reads = spec.reads + plan.output_reads if final else spec.reads
    limit = limits.step_limit(task, spec, policy)
    request = task.request  # one look-up of Celery's request stack for the claim's fields
    claim = store.claim_step(
        run_id,
        recorded_as,
        dependencies=reads,
        worker=str(request.hostname or ""),
        task_id=str(request.id or ""),
        task_type=spec.type,
        name=spec.name,
        max_deliveries=get_settings().max_deliveries,
        reads_run=spec.reads_run or final,
        slot=limits.slot_ask(task.name, request, limit),
    )
    if claim.verdict is not ClaimVerdict.RUN:
        # a slot it was handed goes on
        limits.give_back(task, run_id, recorded_as, claim.verdict is ClaimVerdict.STOPPED)
    if claim.verdict is ClaimVerdict.DROPPED:
        drop(task)  # its run is over for good (cancelled, timed out)
    if claim.verdict is ClaimVerdict.STALE:
        stop_route(task)  # sent before the run was rerun or restarted: its route is over
        return None
    if claim.verdict is ClaimVerdict.DONE:
        return _already_done(task, run_id, plan, spec, claim, final, iteration, resend)
    if claim.verdict is ClaimVerdict.EXHAUSTED:
        error = {"type": "DeliveryLimitExceeded",
                 "message": f"step delivered {claim.detail} times without finishing "
                            "(does it kill its worker?)"}
        store.fail_step(run_id, recorded_as, error=error)
        state_events.ended(run_id, spec, recorded_as)
        stop_route(task)
        return None
    if claim.verdict is not ClaimVerdict.RUN:
        hold_back(task, run_id, claim.detail)  # held back until the run resumes
        stop_route(task)  # the run ended (failed, cancelled), paused or expired
        return None

    scope = build_scope(claim.run, claim.dependencies, request.id, claim.variables)
    held = limits.acquire(task, run_id, recorded_as, claim.attempts, limit, scope,
                          taken=claim.slot_taken)
    if held is limits.PARKED:
        return None  # over its limit: the message waits in Redis, not in a worker
    step_input: Any = None
    try:
        resolved = spec.inputs.resolve(scope)
        template = spec.task.task_definition.input_template if spec.task.task_definition else None
        if template and isinstance(resolved, dict):
            resolved = {**template, **resolved}  # the task definition's defaults
        check_input(resolved)  # before it is recorded: a failed step keeps no input then
        step_input = resolved
        check_step_input(plan, spec, step_input)
        state_events.started(run_id, spec, recorded_as, step_input)
        context = StepContext(task, run_id, plan, spec, step_input, scope, final, iteration,
                              claim.attempts)
        hit = cache.look_up(spec, step_input, scope)
        with timeouts.alerting(run_id, recorded_as, str(task.request.id),
                               timeouts.chosen_policy(policy, spec.policy_overrides)):
            outcome = _outcome(hit.output if hit.found else work(context))
        check_step_output(plan, spec, outcome.output, outcome.status)
        ends = final and outcome.then is None and outcome.end_run is None and not outcome.stop
        run_output = _workflow_output(plan, scope, ref, step_input, outcome.output) if ends \
            else None
    except cache.CacheUnreachable:
        limits.release(held)
        raise  # nothing was decided: the message goes back to its queue (guarded)
    except Exception as exc:
        limits.release(held)  # before a retry is sent, so that it may take the slot
        return _failed(task, run_id, plan, spec, claim, step_input, exc, final, iteration,
                       policy)
    # a step left waiting may be completed from outside as soon as its route is parked
    # (HUMAN, WAIT, asyncComplete): its own record must not write over that completion
    waiting = outcome.status is StepStatus.IN_PROGRESS
    freed = limits.slot_free(held)  # given back with the output: no call of its own
    over_limit = store.complete_step(
        run_id, recorded_as, input=step_input, output=outcome.output, run_output=run_output,
        final=ends, status=outcome.status, alias=ref if iteration is not None else None,
        cached=hit.found, expect=StepStatus.IN_PROGRESS if waiting else None,
        parked=outcome.parked, slot=freed)
    limits.release(held, freed)
    if over_limit is None:
        stop_route(task)  # completed meanwhile: that completion carried the route on
        if task.request.chord:
            raise Ignore()
        return None
    state_events.ended(run_id, spec, recorded_as)
    if over_limit and not ends:
        stop_route(task)  # the output took the run over its size limit: the run failed
        return None
    if outcome.status is StepStatus.COMPLETED:
        cache.keep(hit, outcome.output)
    if outcome.end_run is not None:
        status, reason = outcome.end_run
        failed_ref = ref if status != RunStatus.COMPLETED else ""
        store.end_run(run_id, status, outcome.output, reason=reason, failed_ref=failed_ref)
        stop_route(task)
        return None
    if outcome.then is not None:
        return task.replace(outcome.then)
    if outcome.stop:
        stop_route(task)
        if task.request.chord:
            # another message carries this step on (a waiting step's parked route, the
            # first delivery's): the fork counts that one, not this
            raise Ignore()
    return None


def check_input(value: Any) -> None:
    """A step's resolved input is JSON data within the input limit.

    Expressions can repeat one large value many times (`{a: ${x}, b: ${x}, ...}`): the
    limit is checked before the input is serialised and recorded.
    """
    _check(value, "input", get_settings().max_input_bytes, "BATON_MAX_INPUT_BYTES")


def normalise_output(value: Any) -> dict[str, Any]:
    """A step's output is a JSON object: None -> {}, another value -> {"result": value}."""
    if value is None:
        output: dict[str, Any] = {}
    elif isinstance(value, dict):
        output = value
    else:
        output = {"result": value}
    try:
        _check(output, "output", get_settings().max_output_bytes, "BATON_MAX_OUTPUT_BYTES")
    except PayloadTooLarge:
        raise
    except StepOutputError as exc:
        raise StepOutputError(f"output is not JSON-serialisable: {exc}") from None
    return output


def _check(value: Any, where: str, max_bytes: int, setting: str) -> None:
    try:
        check_payload(value, where, max_depth=get_settings().max_json_depth,
                      max_bytes=max_bytes, error=StepOutputError)
    except PayloadTooLarge as exc:
        raise PayloadTooLarge(f"{exc} ({setting})") from None


def _outcome(result: Any) -> Outcome:
    if isinstance(result, Outcome):
        return Outcome(normalise_output(result.output), result.then, result.end_run,
                       result.status, result.stop, result.parked)
    return Outcome(normalise_output(result))


def _failed(
    task: Task, run_id: str, plan: Plan, spec: StepSpec, claim: Claim, step_input: Any,
    exc: Exception, final: bool, iteration: int | None, policy: StepPolicy | None,
) -> None:
    """Retry, carry on (optional, permissive) or fail the run, as the step's flags say."""
    store = get_store()
    recorded_as = record_ref(spec.ref, iteration)
    alias = spec.ref if iteration is not None else None
    error = describe_error(exc)
    chosen = timeouts.chosen_policy(policy, spec.policy_overrides)
    timed_out = timeouts.judge(task, run_id, recorded_as, spec.name, chosen, exc)
    if timed_out is not None:
        error["message"] = timed_out.reason
    if policy is not None and not isinstance(exc, _NOT_RETRIED) \
            and not (timed_out and timed_out.ends_run):
        # a retry after a poll timeout (sent by the worker) ran no claim: the message counts,
        # unless it runs fused steps (no poll timeout), whose retries are not this step's
        attempts = claim.attempts if is_fused(task) else \
            max(claim.attempts, int(task.request.retries or 0) + 1)
        if attempts <= chosen.retry_count:
            delay = chosen.delay(attempts - 1)
            options = timeouts.retry_options(run_id, recorded_as, chosen, delay)
            if options is not None:
                store.retry_step(run_id, recorded_as, error=error, input=step_input)
                state_events.ended(run_id, spec, recorded_as, _status(exc))
                # Celery sends the same message again after the delay, route and all; a
                # long delay goes in hops, each shorter than the visibility timeout
                countdown, left = split_delay(delay)
                kwargs = {**(task.request.kwargs or {}), "delay_left": left} if left else None
                shown = masked_exception(store, run_id, exc)  # what Celery (and Flower) see
                raise task.retry(countdown=countdown, kwargs=kwargs, exc=shown, throw=False,
                                 **options) from shown
            timed_out = timeouts.budget_spent(run_id, recorded_as, chosen, str(task.request.id),
                                              spec.name, timed_out is not None)
    if timed_out is not None and timed_out.ends_run:
        return _timed_out(task, run_id, spec, recorded_as, step_input, error, timed_out, exc)
    if spec.task.optional:
        scope = build_scope(claim.run, claim.dependencies, task.request.id, claim.variables)
        run_output = _workflow_output(plan, scope, spec.ref, step_input, {}) if final else None
        store.complete_step(run_id, recorded_as, input=step_input, output={},
                            run_output=run_output, final=final, alias=alias,
                            status=StepStatus.COMPLETED_WITH_ERRORS, error=error)
        state_events.ended(run_id, spec, recorded_as)
        return None
    if spec.task.permissive:
        store.fail_step(run_id, recorded_as, error=error, input=step_input,
                        step_status=_status(exc), run_status="")
        state_events.ended(run_id, spec, recorded_as)
        if final:
            store.complete_run(run_id, {})  # ends FAILED: a permissive step failed
        return None
    store.fail_step(run_id, recorded_as, error=error, input=step_input,
                    step_status=_status(exc), message=message_of(task),
                    run_status=RunStatus.TIMED_OUT if timed_out else RunStatus.FAILED)
    state_events.ended(run_id, spec, recorded_as)
    # Celery marks the rest of a failed task's route failed, counting a fork member it holds
    # (a sub-workflow's child route holds its parent's step): a retried step (or child) could
    # no longer close its fork
    stop_route(task)
    if task.request.chord:
        # A chord counts a failed member and never fires again: an ignored one is not
        # counted, so a retried step can still close its fork.
        raise Ignore()
    shown = masked_exception(store, run_id, exc)
    mark_recorded(shown)
    raise shown


def _timed_out(
    task: Task, run_id: str, spec: StepSpec, recorded_as: str, step_input: Any,
    error: dict[str, str], timed_out: timeouts.TimedOut, exc: Exception,
) -> None:
    """End the run at once (TIME_OUT_WF, the total budget spent), optional step or not, as
    Conductor does: with the timeout's own reason."""
    get_store().fail_step(run_id, recorded_as, error=error, input=step_input,
                          step_status=_status(exc), run_status=timed_out.run_status,
                          message=message_of(task), reason=timed_out.reason)
    state_events.ended(run_id, spec, recorded_as)
    stop_route(task)
    if task.request.chord:
        raise Ignore()
    shown = masked_exception(get_store(), run_id, exc)  # what Celery (and Flower) see
    mark_recorded(shown)
    raise shown


def _already_done(
    task: Task, run_id: str, plan: Plan, spec: StepSpec, claim: Claim, final: bool,
    iteration: int | None, resend: Resend | None,
) -> Any:
    """A redelivered message for a completed step: carry the route on, run nothing again."""
    if resend is not None:
        recorded = claim.dependencies.get(record_ref(spec.ref, iteration), {}).get("output")
        route = resend(run_id, plan, spec, json.loads(recorded) if recorded else {}, final,
                       iteration)
        if route is not None:
            return task.replace(route)
    if final:
        _finish_again(plan, run_id)
    return None


def _dynamic_spec(run_id: str, ref: str) -> StepSpec:
    """The spec of a step a run defined at run time (a dynamic fork's branch)."""
    defined = get_store().get_dynamic_step(run_id, ref)
    if defined is None:
        raise KeyError(f"run {run_id} defines no step '{ref}'")
    task = WorkflowTask.model_validate(
        defined.get("task") or {"name": defined["name"], "taskReferenceName": ref})
    # its input was resolved when the fork ran: it is data, not expressions
    return replace(step_spec(task), inputs=Parameter(defined["input"], dynamic=False),
                   reads=(), reads_run=task.type in READS_RUN)


# An output that is not JSON data, or too large, comes out the same when tried again.
_NOT_RETRIED = (TerminalError, InvalidPayload)


def _status(exc: BaseException) -> StepStatus:
    if isinstance(exc, _NOT_RETRIED):
        return StepStatus.FAILED_WITH_TERMINAL_ERROR
    if isinstance(exc, SoftTimeLimitExceeded):
        return StepStatus.TIMED_OUT
    return StepStatus.FAILED


def _workflow_output(
    plan: Plan, scope: Mapping[str, Any], ref: str, step_input: Any, output: dict[str, Any]
) -> Any:
    if plan.output is None:
        return checked_run_output(plan, output)
    own = dict(scope.get(ref) or {})
    own.update(input=step_input, output=output, status=StepStatus.COMPLETED.value)
    return checked_run_output(plan, plan.output.resolve({**scope, ref: own}))


def _finish_again(plan: Plan, run_id: str) -> None:
    """The final step had completed but the run was left RUNNING (the worker died between)."""
    store = get_store()
    if store.get_status(run_id) != RunStatus.RUNNING:
        return
    reads = tuple(dict.fromkeys([*plan.output_reads, plan.last_ref]))
    run, variables, records = store.read_state(run_id, reads)
    scope = build_scope(run, records, None, variables)
    last = scope.get(plan.last_ref) or {}
    output = plan.output.resolve(scope) if plan.output is not None else last.get("output")
    store.complete_run(run_id, checked_run_output(plan, output))
