"""SUB_WORKFLOW and START_WORKFLOW: runs that start runs.

A SUB_WORKFLOW step records a child run (linked to its parent step) and puts the child's
route, followed by `baton.sub_workflow_done`, in its own place on the parent's route: the
parent goes on only after the child completed, and a child that fails or is terminated
fails the parent step where the store ends the child run. START_WORKFLOW sends the new
run's route on its own and completes at once (fire and forget).
"""

from __future__ import annotations

from typing import Any, Final

from celery import Task, chain

from app.celery_app import celery_app
from app.config import get_settings
from app.definitions import get_workflow
from app.dsl.expressions import parse_parameter
from app.dsl.model import WorkflowDef
from app.dsl.validate import parse_definition
from app.runtime import state_events
from app.runtime.child_routing import start_workflow_routing, sub_workflow_routing
from app.runtime.containment import contained
from app.runtime.idempotent_children import (
    child_key,
    existing_run,
    may_start_again,
    started_here,
)
from app.runtime.lifecycle import still_running
from app.runtime.messages import message_of
from app.runtime.operators import OperatorError, system_task
from app.runtime.run_limits import RunLimitReached
from app.runtime.runs import (
    Parent,
    create_run,
    first_route,
    may_start,
    send_deadline,
    send_run,
)
from app.runtime.scope import build_scope, record_document
from app.runtime.state import get_store, plans
from app.runtime.step import (
    Outcome,
    StepContext,
    StepTask,
    _workflow_output,
    record_ref,
    stop_route,
)
from app.runtime.system_retries import keep_message, retry_number
from app.runtime.wait_timeouts import watch
from app.store import StepStatus

SUB_WORKFLOW_DONE: Final = "baton.sub_workflow_done"


def _child_definition(context: StepContext) -> WorkflowDef:
    params = context.spec.task.sub_workflow_param
    if params is None:
        raise OperatorError("SUB_WORKFLOW needs subWorkflowParam")
    inline = params.workflow_definition
    if isinstance(inline, WorkflowDef):
        return inline
    if isinstance(inline, str):
        resolved = parse_parameter(inline).resolve(context.scope)
        if not isinstance(resolved, dict):
            raise OperatorError("subWorkflowParam.workflowDefinition resolved to no definition")
        return parse_definition(resolved)
    if not params.name:
        raise OperatorError("subWorkflowParam needs a name or a workflowDefinition")
    name = parse_parameter(params.name).resolve(context.scope)
    return get_workflow(str(name), params.version)


def _sub_workflow(context: StepContext) -> Outcome:
    root = context.task.request.root_id
    depth = int(get_store().get_run_fields(context.run_id, "depth").get("depth") or 0) + 1
    limit = get_settings().max_sub_workflow_depth
    if depth > limit:
        raise OperatorError(f"sub-workflows nest deeper than {limit} runs "
                            "(BATON_MAX_SUB_WORKFLOW_DEPTH); does the workflow start itself?")
    parent = Parent(context.run_id, context.record_ref, context.plan.digest, root, depth)
    correlation = (context.scope.get("workflow") or {}).get("correlationId") or None
    child = _child_definition(context)
    params = context.spec.task.sub_workflow_param
    assert params is not None  # _child_definition refused a task without
    key = child_key(context)
    for _ in range(2):  # FAIL_ON_RUNNING starts again once the ended run gave up the key
        new = create_run(child, context.input, correlation_id=correlation,
                         idempotency_key=key.key if key else _started_by(
                             context, retry_number(context.task)),
                         parent=parent,
                         **sub_workflow_routing(context.run_id, params, context.scope))
        if new.plan is not None or key is None or started_here(context, new.run_id) or \
                not may_start_again(key, new.run_id):
            break
    output = {"subWorkflowId": new.run_id}
    if new.plan is None and key is not None and not started_here(context, new.run_id):
        return existing_run(context, key, new.run_id)  # another run holds the key
    if new.plan is None:  # a redelivery: the child was started by the first delivery
        return Outcome(output, status=StepStatus.IN_PROGRESS, stop=True)
    done = sub_workflow_done_signature(context.run_id, context.spec.ref, context.plan.digest,
                                       context.final, context.iteration, for_child=new.run_id)
    if new.cached:  # the child completed from the output cache: the parent goes on
        return Outcome(output, then=done, status=StepStatus.IN_PROGRESS)
    try:
        starts = may_start(new, then=done, root=root, carry=message_of(context.task))
    except RunLimitReached as exc:
        raise OperatorError(str(exc)) from None
    watch(context)  # its timeoutSeconds bounds the wait for the child
    keep_message(context)  # for a retry of the step, with a new child
    if not starts:  # it waits on its workflow's limit, and sends its route then
        return Outcome(output, status=StepStatus.IN_PROGRESS, stop=True)
    send_deadline(new.run_id, child, root)
    return Outcome(output, then=chain(first_route(new), done), status=StepStatus.IN_PROGRESS)


sub_workflow = system_task("SUB_WORKFLOW")(_sub_workflow)


def sub_workflow_done_signature(run_id: str, ref: str, digest: str, final: bool,
                                iteration: int | None, for_child: str | None = None) -> Any:
    """`baton.sub_workflow_done` for a SUB_WORKFLOW step whose run has completed; with
    `for_child`, only while that child is the step's (a retried step starts another)."""
    frame: dict[str, Any] = {"final": True} if final else {}
    if iteration is not None:
        frame["iteration"] = iteration
    if for_child is not None:
        frame["for_child"] = for_child
    return celery_app.signature(SUB_WORKFLOW_DONE, args=(run_id, ref, digest), kwargs=frame,
                                immutable=True)


def _started_by(context: StepContext, retry: int = 0) -> str:
    """The idempotency key of the run a step starts: one run per step, run epoch and retry
    of the step (a SUB_WORKFLOW's retry starts a new child).

    A redelivered step finds the run its first delivery started; after a retry, rerun or
    restart (each a new epoch of the run) the step starts a new one.
    """
    epoch = (context.scope.get("workflow") or {}).get("epoch")
    key = f"{context.run_id}:{context.record_ref}"
    key = f"{key}:{epoch}" if epoch else key
    return f"{key}:retry{retry}" if retry else key


@celery_app.task(name=SUB_WORKFLOW_DONE, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda ref, digest, final=False, iteration=None, **_: record_ref(ref, iteration))
def sub_workflow_done(
    self: Task, run_id: str, ref: str, digest: str, final: bool = False,
    iteration: int | None = None, for_child: str | None = None,
) -> None:
    """The child completed: its output becomes the SUB_WORKFLOW step's, and the parent goes on."""
    store, plan = get_store(), plans.get(digest)
    recorded_as = record_ref(ref, iteration)
    reads = list(dict.fromkeys([recorded_as, *(plan.output_reads if final else ())]))
    run, variables, records = store.read_state(run_id, reads)
    step = record_document(records.get(recorded_as, {}))
    if not still_running(self, run_id, run):
        return
    if step.get("status") != StepStatus.IN_PROGRESS:
        stop_route(self)  # a redelivery: the parent step completed already
        return
    child_id = (step.get("output") or {}).get("subWorkflowId")
    if for_child is not None and for_child != child_id:
        stop_route(self)  # a child the step's retry has replaced (retried by hand)
        return
    child = record_document(store.get_run(str(child_id)) or {})
    output = {**(child.get("output") or {}), "subWorkflowId": child_id}
    scope = build_scope(run, records, self.request.id, variables)
    run_output = _workflow_output(plan, scope, ref, step.get("input"), output) if final else None
    if store.complete_step(run_id, recorded_as, input=step.get("input"), output=output,
                           run_output=run_output, final=final,
                           alias=ref if iteration is not None else None,
                           expect=StepStatus.IN_PROGRESS) is None:
        stop_route(self)  # another delivery completed it first
        return
    state_events.step_ended(run_id, recorded_as, plan)


def _start_workflow(context: StepContext) -> dict[str, Any]:
    request = (context.input or {}).get("startWorkflow")
    if not isinstance(request, dict) or not request.get("name"):
        raise OperatorError("START_WORKFLOW needs inputParameters.startWorkflow with a name")
    if request.get("idempotencyKey") is not None:
        raise OperatorError("startWorkflow.idempotencyKey: not supported yet (each step starts "
                            "its run once, under a key of its own); remove it")
    workflow = get_workflow(str(request["name"]), request.get("version"))
    new = create_run(workflow, request.get("input") or {},
                     correlation_id=request.get("correlationId"),
                     idempotency_key=_started_by(context),
                     **start_workflow_routing(context.run_id, request))
    if new.plan is not None:
        send_run(new, workflow)
    return {"workflowId": new.run_id}


start_workflow = system_task("START_WORKFLOW")(_start_workflow)
