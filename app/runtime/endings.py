"""What follows the end of a run, wherever it ended: the run store calls `run_ended`.

A child that did not complete fails its parent's SUB_WORKFLOW step (the parent's route
waits at the end of the child's, which stopped where the child failed); a run that did not
complete terminates its open children, as Conductor does, starts its failureWorkflow and
publishes the onCancelled events of the steps its end cancelled.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from app.definitions import get_workflow
from app.dsl.expressions import parse_parameter
from app.dsl.model import WorkflowDef
from app.errors import BatonError
from app.payloads import PayloadTooLarge
from app.runtime import run_limits, state_events
from app.runtime.cache import keep_run_output
from app.runtime.execution import workflow_execution
from app.runtime.runs import NewRun, create_run, send_run
from app.runtime.scope import record_document
from app.runtime.state import get_store, plans
from app.runtime.system_retries import child_ended
from app.store import OPEN_RUN_STATUSES, Ended, RunStatus, StepStatus

log = logging.getLogger(__name__)
FAILURE_WORKFLOW_OUTPUT = "conductor.failure_workflow"


def run_ended(ended: Ended) -> None:
    fields = get_store().get_run_fields(ended.run_id, "plan", "runLimit")
    if fields.get("runLimit"):  # its workflow's rateLimitConfig: the slot goes on
        try:
            run_limits.run_ended(ended.run_id, fields["runLimit"])
        except BatonError as exc:  # found again when the limit is next full
            log.warning("run %s: its slot of %s not given back: %s", ended.run_id,
                        fields["runLimit"], exc)
    if ended.status is RunStatus.COMPLETED:
        keep_run_output(ended.run_id, fields.get("plan"))
        return
    if ended.parent_id:
        error = {"type": "SubWorkflowFailed",
                 "message": f"sub-workflow {ended.status.value}: {ended.reason}"}
        # fenced with the parent's root when the child started: a child of an attempt
        # before the parent's rerun or restart leaves the new attempt alone
        # only a step still waiting on it: one timed out (its timeoutSeconds) keeps TIMED_OUT
        if not child_ended(ended, error) and get_store().fail_step(  # else a new child
                ended.parent_id, ended.parent_ref, error=error, root=ended.root,
                expect=StepStatus.IN_PROGRESS):
            state_events.step_ended(ended.parent_id, ended.parent_ref)
    _terminate_children(ended)
    _start_failure_workflow(ended)
    state_events.cancelled(ended.run_id)


def _terminate_children(ended: Ended) -> None:
    """End the open runs started by this run's SUB_WORKFLOW steps."""
    from app.runtime.lifecycle import LifecycleError, terminate

    for ref, record in get_store().get_steps(ended.run_id).items():
        if record.get("taskType") != "SUB_WORKFLOW" or \
                record.get("status") not in (StepStatus.IN_PROGRESS, StepStatus.CANCELED):
            continue
        child = (json.loads(record.get("output") or "{}") or {}).get("subWorkflowId")
        fields = get_store().get_run_fields(str(child), "status", "parentWorkflowId") \
            if child else {}
        # a run the step follows (an idempotency key's existing run) is not its to end
        if fields.get("status") not in OPEN_RUN_STATUSES or \
                fields.get("parentWorkflowId") != ended.run_id:
            continue
        try:
            terminate(str(child), f"parent run {ended.run_id} ended {ended.status.value} "
                                  f"at step '{ref}'")
        except LifecycleError:
            pass  # it ended meanwhile


def _start_failure_workflow(ended: Ended) -> None:
    """Start the definition's failureWorkflow for a run that ended without completing."""
    store = get_store()
    run_id = ended.run_id
    run = store.get_run(run_id) or {}
    if not run.get("plan"):
        return
    workflow = plans.get(run["plan"]).definition
    named = workflow.failure_workflow or ""
    if named.startswith("$") and not named.startswith("${"):
        named = "${" + named[1:] + "}"  # Conductor also takes "$workflow.input.name"
    scope = {"workflow": record_document(run)}
    name = parse_parameter(named).resolve(scope) if named else None
    if not name:
        return
    try:
        failure = get_workflow(str(name), workflow.failure_workflow_version)
        failed_ref = run.get("failedReferenceTaskName") or ""
        failed = store.get_step_records(run_id, [failed_ref]).get(failed_ref, {}) \
            if failed_ref else {}
        given = {**(record_document(run).get("input") or {}), "workflowId": run_id,
                 "reason": ended.reason, "failureStatus": ended.status.value,
                 "failureTaskId": failed.get("taskId")}
        new = _create_failure_run(failure, given, run_id, run.get("correlationId") or None)
        if new.plan is not None:
            send_run(new, failure)
        started = new.run_id
    except BatonError as exc:
        log.warning("run %s: failureWorkflow %r not started: %s", run_id, name, exc)
        started = f"Error workflow {name} failed to start.  reason: {exc}"
    # as Conductor does, the failed run's output names its failure run (or why none started)
    store.add_run_output(run_id, ended.status.value, FAILURE_WORKFLOW_OUTPUT, started)


def _create_failure_run(
    failure: WorkflowDef, given: dict[str, Any], run_id: str, correlation_id: str | None
) -> NewRun:
    """The failure run, given the failed run's execution as `failedWorkflow` as Conductor
    does. An execution over the input limit goes without its tasks' data (`inputData`,
    `outputData`), so that compensation still starts and can read which tasks completed."""
    def start(execution: dict[str, Any] | None) -> NewRun:
        return create_run(failure, {**given, "failedWorkflow": execution},
                          correlation_id=correlation_id, idempotency_key=f"failure:{run_id}")

    execution = workflow_execution(get_store(), run_id)
    try:
        return start(execution)
    except PayloadTooLarge:
        if execution is None:
            raise
        return start({**execution, "input": {}, "output": {}, "variables": {},
                      "workflowDefinition": None, "truncated": True,
                      "tasks": [{**task, "inputData": {}, "outputData": {}}
                                for task in execution["tasks"]]})
