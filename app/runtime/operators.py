"""Baton's system tasks on the control queue: join, exclusive join, noop, terminate,
set variable, inline script, jq transform, and the segment `continue`.

They run through the same step runner as transformations (claim, record, finish), so a
system step is as visible and as redelivery-safe as any other step. A failed system step
is retried per its task's retry fields, as Conductor's, except the control-flow operators
(JOIN, EXCLUSIVE_JOIN, SWITCH, DO_WHILE...), which fail at once (app.runtime.system_retries).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from celery import Task

from app.celery_app import celery_app
from app.compiler.canvas import CONTINUE_TASK, CONTROL_TASKS, compile_route
from app.config import get_settings
from app.errors import BatonError, TerminalError
from app.runtime import javascript, jq_sandbox
from app.runtime.containment import contained
from app.runtime.lifecycle import still_running
from app.runtime.state import get_store, plans
from app.runtime.step import (
    Outcome,
    StepContext,
    StepTask,
    record_ref,
    step_task,
)
from app.runtime.system_retries import retry_policy
from app.store import FAILED_STEP_STATUSES, RunStatus, StepStatus, now_ms


class OperatorError(BatonError):
    """A system task was given input it cannot work with."""


class InlineScriptError(javascript.ScriptError, TerminalError):
    """An INLINE script failed (a syntax or runtime error, a thrown error): as Conductor's
    FAILED_WITH_TERMINAL_ERROR, not retried, since it would fail the same way again. A script
    over its time or memory limit is retried."""


def system_task(type_name: str) -> Callable[[Callable[[StepContext], Any]], Any]:
    """Register `work` as the Celery task of a system task type, run by the step runner."""

    def register(work: Callable[[StepContext], Any]) -> Any:
        return step_task(CONTROL_TASKS[type_name], work, policy=retry_policy(type_name))

    return register


@system_task("JOIN")
def join(context: StepContext) -> Any:
    """Close a fork: runs once every branch has ended; output maps joined refs to outputs.

    As Conductor's, the output holds the joined tasks that ran and have an output, and a
    joined task that never ran (it ends a case of a SWITCH that took another case) keeps
    the JOIN waiting (IN_PROGRESS) until the run is cancelled or times out.
    """
    spec, store = context.spec, get_store()
    names = list(spec.join_on)
    fork_record = context.scope.get(spec.fork_ref or "") or {}
    forked = (fork_record.get("output") or {}).get("forkedTasks")
    if forked:  # a dynamic fork: its branches are known from its own output
        names = list(dict.fromkeys([*names, *forked]))
    records = store.get_step_records(context.run_id, names) if forked else {}
    output = {}
    never_ran = []
    for name in names:
        record = context.scope.get(name) or _document(records.get(name))
        if not record.get("status"):
            never_ran.append(name)
            continue
        if record.get("status") in FAILED_STEP_STATUSES:
            raise OperatorError(f"branch step '{name}' failed (permissive)")
        if record.get("output"):
            output[name] = record.get("output")
    if spec.fork_ref is not None and not forked:
        fork_ref = record_ref(spec.fork_ref, context.iteration)
        store.record_step(context.run_id, fork_ref, {
            "status": StepStatus.COMPLETED.value, "taskType": "FORK_JOIN", "output": "{}",
            "referenceTaskName": fork_ref, "endTime": str(now_ms())})
    if never_ran:
        return Outcome(output, status=StepStatus.IN_PROGRESS, stop=True)
    return output


@system_task("EXCLUSIVE_JOIN")
def exclusive_join(context: StepContext) -> Any:
    """Pass on the output of the one joined task that ran (after a SWITCH or DECISION)."""
    for name in context.spec.join_on:
        record = context.scope.get(name) or {}
        if record.get("status") in (StepStatus.COMPLETED, StepStatus.COMPLETED_WITH_ERRORS):
            return record.get("output")
    raise OperatorError("none of the tasks in joinOn or defaultExclusiveJoinTask ran")


@system_task("NOOP")
def noop(context: StepContext) -> dict[str, Any]:
    """Do nothing, visibly: the step is recorded COMPLETED with an empty output."""
    return {}


@system_task("TERMINATE")
def terminate(context: StepContext) -> Outcome:
    """End the run now with terminationStatus, terminationReason and workflowOutput."""
    given = context.input if isinstance(context.input, dict) else {}
    status = str(given.get("terminationStatus") or RunStatus.COMPLETED).upper()
    if status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TERMINATED):
        raise OperatorError(f"terminationStatus must be COMPLETED, FAILED or TERMINATED, "
                            f"not '{status}'")
    reason = str(given.get("terminationReason") or "")
    output = given.get("workflowOutput") or {}
    return Outcome(output, end_run=(status, reason))


@system_task("SET_VARIABLE")
def set_variable(context: StepContext) -> dict[str, Any]:
    """Set `workflow.variables` from the task's input."""
    get_store().set_variables(context.run_id, dict(context.input))
    return {}


@system_task("INLINE")
def inline(context: StepContext) -> dict[str, Any]:
    """Evaluate a script (INLINE's `expression`, LAMBDA's `scriptExpression`) with `$` = input."""
    task, given = context.spec.task, dict(context.input)
    if context.spec.type == "LAMBDA":
        # Conductor runs a LAMBDA's script as a function body: it may `return` its value
        script = given.pop("scriptExpression", task.script_expression) or ""
        return {"result": javascript.evaluate(f"(function () {{ {script}\n}})()", given,
                                              where="scriptExpression")}
    evaluator = given.pop("evaluatorType", task.evaluator_type) or "javascript"
    expression = given.pop("expression", task.expression) or ""
    if evaluator == "value-param":
        return {"result": given.get(expression)}
    if evaluator not in ("javascript", "graaljs"):
        raise OperatorError(f"evaluatorType must be javascript, graaljs or value-param, "
                            f"not '{evaluator}'")
    try:
        return {"result": javascript.evaluate(expression, given, where="expression")}
    except javascript.ScriptOverLimit:
        raise
    except javascript.ScriptError as exc:
        raise InlineScriptError(str(exc)) from None


@system_task("JSON_JQ_TRANSFORM")
def jq_transform(context: StepContext) -> dict[str, Any]:
    """Apply `queryExpression` (jq) to the rest of the input; `result` is the first value.

    The program runs in a sandboxed evaluator process (see app.runtime.jq_sandbox).
    """
    given = dict(context.input)
    query = given.pop("queryExpression", None)
    if not isinstance(query, str) or not query.strip():
        raise OperatorError("inputParameters.queryExpression must be a jq program")
    try:
        results = jq_sandbox.evaluate(query, given)
    except jq_sandbox.JqError as exc:
        raise OperatorError(f"queryExpression: jq: {exc}") from None
    except javascript.ScriptError as exc:
        raise javascript.ScriptError(f"queryExpression: {exc}") from None
    return {"result": results[0] if results else None, "resultList": results}


@celery_app.task(name=CONTINUE_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda *args, **kwargs: None)
def continue_route(
    self: Task, run_id: str, sequence_id: str, start: int, digest: str, final: bool = False,
    iteration: int | None = None,
) -> Any:
    """Compile the next segment of a sequence and put it in this task's place on the route."""
    if not still_running(self, run_id):
        return None
    plan = plans.get(digest)
    route = compile_route(plan, run_id, get_settings().segment_size, sequence_id, start,
                          final=final, iteration=iteration)
    return self.replace(route) if route is not None else None


def _document(record: dict[str, str] | None) -> dict[str, Any]:
    if not record:
        return {}
    return {**record, "output": json.loads(record["output"]) if record.get("output") else None}
