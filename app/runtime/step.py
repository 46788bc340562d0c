"""The step runner: what every Baton task does around its own work.

Claim the step atomically (a redelivered message for a completed step does nothing but
let the route go on), resolve its input from the run's state, do the work, record the
output; the step that ends the run also computes the workflow's output and completes
the run in the same call. A failure is recorded on the step and ends the run before the
exception reaches Celery, so correctness never rests on Celery's error callbacks.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from app.celery_app import celery_app
from app.compiler.canvas import TIME_LIMIT_GRACE
from app.compiler.plan import Plan, StepSpec
from app.config import get_settings
from app.errors import TerminalError
from app.policy import StepPolicy
from app.registry import Transformation
from app.runtime.scope import build_scope
from app.runtime.state import get_store, plans

Work = Callable[[StepSpec, dict[str, Any], Mapping[str, Any]], Any]
"""A step's own work: (spec, resolved input, scope) -> output."""

_TRACEBACK_LIMIT = 8000


class StepTask(Task):  # type: ignore[misc]
    """Base of every Baton task: JSON arguments only, results kept small."""

    typing = False  # arguments are pointers checked by the runner, not Python signatures
    max_retries = None  # the step's own policy bounds retries, not Celery's default of 3


class StepOutputError(TypeError):
    """A step's output (or input) is not a JSON value."""


def execute_step(
    task: Task,
    run_id: str,
    ref: str,
    digest: str,
    final: bool,
    work: Work,
    policy: StepPolicy | None = None,
) -> None:
    """Run one step of a run; `policy` (retries, timeouts) applies to transformations only."""
    store = get_store()
    plan = plans.get(digest)
    spec = plan.steps[ref]
    reads = spec.reads + plan.output_reads if final else spec.reads
    claim = store.claim_step(
        run_id,
        ref,
        dependencies=reads,
        worker=str(task.request.hostname or ""),
        task_id=str(task.request.id or ""),
        task_type=spec.type,
        name=spec.name,
        max_deliveries=get_settings().max_deliveries,
    )
    if claim.verdict == "done":
        if final:
            _finish_again(plan, run_id)
        return
    if claim.verdict == "exhausted":
        error = {
            "type": "DeliveryLimitExceeded",
            "message": f"step delivered {claim.detail} times without finishing "
            "(does it kill its worker?)",
        }
        store.fail_step(run_id, ref, error=error)
        stop_route(task)
        return
    if claim.verdict != "run":
        stop_route(task)  # the run ended (failed, cancelled) or expired: go no further
        return

    scope = build_scope(claim.run, claim.dependencies, task_id=task.request.id)
    step_input: Any = None
    try:
        step_input = spec.inputs.resolve(scope)
        output = normalise_output(work(spec, step_input, scope))
        run_output = None
        if final:
            run_output = _workflow_output(plan, scope, ref, step_input, output)
    except Exception as exc:
        chosen = policy.merged(spec.policy_overrides) if policy is not None else None
        error = describe_error(exc)
        if chosen is not None and not isinstance(exc, TerminalError):
            if claim.attempts <= chosen.retry_count:
                store.retry_step(run_id, ref, error=error, input=step_input)
                # Celery sends the same message again after the delay, route and all
                raise task.retry(countdown=chosen.delay(claim.attempts - 1), exc=exc) from exc
        store.fail_step(run_id, ref, error=error, input=step_input, step_status=_status(exc))
        raise
    store.complete_step(
        run_id, ref, input=step_input, output=output, run_output=run_output, final=final
    )


def _status(exc: BaseException) -> str:
    if isinstance(exc, TerminalError):
        return "FAILED_WITH_TERMINAL_ERROR"
    if isinstance(exc, SoftTimeLimitExceeded):
        return "TIMED_OUT"
    return "FAILED"


def normalise_output(value: Any) -> dict[str, Any]:
    """A step's output is a JSON object: None -> {}, another value -> {"result": value}."""
    if value is None:
        output: dict[str, Any] = {}
    elif isinstance(value, dict):
        output = value
    else:
        output = {"result": value}
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepOutputError(f"output is not JSON-serialisable: {exc}") from None
    return output


def describe_error(exc: BaseException) -> dict[str, str]:
    text = "".join(traceback.format_exception(exc))
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": text[-_TRACEBACK_LIMIT:],
    }


def stop_route(task: Task) -> None:
    """Send nothing more down this message's route (Celery reads request.chain after return)."""
    task.request.chain = None


def _workflow_output(
    plan: Plan, scope: Mapping[str, Any], ref: str, step_input: Any, output: dict[str, Any]
) -> Any:
    if plan.output is None:
        return output
    own = dict(scope.get(ref) or {})
    own.update(input=step_input, output=output, status="COMPLETED")
    return plan.output.resolve({**scope, ref: own})


def _finish_again(plan: Plan, run_id: str) -> None:
    """The final step had completed but the run was left RUNNING (the worker died between)."""
    store = get_store()
    if store.get_status(run_id) != "RUNNING":
        return
    reads = tuple(dict.fromkeys([*plan.output_reads, plan.last_ref]))
    records = store.get_step_records(run_id, reads)
    run = store.get_run(run_id) or {}
    scope = build_scope(run, records)
    last = scope.get(plan.last_ref) or {}
    output = plan.output.resolve(scope) if plan.output is not None else last.get("output")
    store.complete_run(run_id, output)


def register_transformation_task(transformation: Transformation) -> Task:
    """Make the Celery task `tasks.<name>` that runs a transformation as a step."""
    func = transformation.func

    def work(spec: StepSpec, step_input: dict[str, Any], scope: Mapping[str, Any]) -> Any:
        return func(**step_input)

    policy = transformation.policy

    def run(self: Task, run_id: str, ref: str, digest: str, final: bool = False) -> None:
        execute_step(self, run_id, ref, digest, final, work, policy)

    run.__doc__ = func.__doc__
    limits: dict[str, float] = {}
    if policy.timeout_seconds:
        limits = {"soft_time_limit": policy.timeout_seconds,
                  "time_limit": policy.timeout_seconds + TIME_LIMIT_GRACE}
    return celery_app.task(
        name=transformation.task_name, bind=True, base=StepTask, **limits
    )(run)
