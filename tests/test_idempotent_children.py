"""subWorkflowParam idempotencyKey and idempotencyStrategy, on a real worker over a real Redis."""

from __future__ import annotations

import uuid
from typing import Any

from app import RunStatus, StepStatus, WorkflowFailed, WorkflowRun, get_run, submit_workflow
from app.celery_app import celery_app
from app.runtime.state import get_store
from tests.support import wait_for


def child(name: str, *, waits: bool = False, fails: bool = False) -> dict[str, Any]:
    if waits:
        inner: dict[str, Any] = {"name": "h", "taskReferenceName": "inner", "type": "HUMAN"}
    elif fails:
        inner = {"name": "refuse", "taskReferenceName": "inner",
                 "inputParameters": {"reason": "no"}}
    else:
        inner = {"name": "echo", "taskReferenceName": "inner",
                 "inputParameters": {"v": "${workflow.input.v}"}}
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": [inner],
            "outputParameters": {"got": "${inner.output.v}"}}


def parent(definition: dict[str, Any], strategy: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": definition["name"], "workflowDefinition": definition,
                              "idempotencyKey": "order-${workflow.input.order}"}
    if strategy is not None:
        params["idempotencyStrategy"] = strategy
    return {"name": "keyed_parent", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
         "inputParameters": {"v": "from parent"}, "subWorkflowParam": params},
        {"name": "echo", "taskReferenceName": "after", "inputParameters": {
            "child": "${sub.output.got}"}}],
        "outputParameters": {"child": "${after.output.child}",
                             "id": "${sub.output.subWorkflowId}"}}


def order() -> str:
    return uuid.uuid4().hex


def child_of(run: WorkflowRun) -> WorkflowRun:
    return get_run(wait_for(lambda: (run.steps.get("sub") and run.steps["sub"].output or {})
                            .get("subWorkflowId"), timeout=30, what="the child run"))


def test_the_child_is_started_under_the_templated_key(worker: Any) -> None:
    number = order()
    run = submit_workflow(parent(child("keyed_child")), input={"order": number})
    output = run.result(timeout=30)
    assert output["child"] == "from parent"
    # the key names the child: a submit with it finds that run
    again = submit_workflow(child("keyed_child"), input={"v": "x"},
                            idempotency_key=f"order-{number}")
    assert again.id == output["id"]


def test_fail_fails_the_step_naming_the_key_and_the_run(worker: Any) -> None:
    number = order()
    existing = submit_workflow(child("keyed_child"), input={"v": "first"},
                               idempotency_key=f"order-{number}")
    assert existing.wait(timeout=30) is RunStatus.COMPLETED
    for strategy in (None, "FAIL"):
        run = submit_workflow(parent(child("keyed_child"), strategy), input={"order": number})
        assert run.wait(timeout=30) is RunStatus.FAILED
        error = run.steps["sub"].error or {}
        assert f"idempotencyKey 'order-{number}': run {existing.id} (COMPLETED) already " \
            "has it (idempotencyStrategy FAIL)" in error["message"]


def test_return_existing_takes_an_ended_runs_output(worker: Any) -> None:
    number = order()
    existing = submit_workflow(child("keyed_child"), input={"v": "first"},
                               idempotency_key=f"order-{number}")
    assert existing.wait(timeout=30) is RunStatus.COMPLETED
    run = submit_workflow(parent(child("keyed_child"), "RETURN_EXISTING"),
                          input={"order": number})
    assert run.result(timeout=30) == {"child": "first", "id": existing.id}
    assert run.steps["sub"].output == {"got": "first", "subWorkflowId": existing.id}


def test_return_existing_follows_an_open_run_to_its_end(worker: Any) -> None:
    number = order()
    existing = submit_workflow(child("waiting_child", waits=True),
                               idempotency_key=f"order-{number}")
    run = submit_workflow(parent(child("waiting_child", waits=True), "RETURN_EXISTING"),
                          input={"order": number})
    wait_for(lambda: run.steps.get("sub") and run.steps["sub"].status is StepStatus.IN_PROGRESS,
             timeout=30, what="the step to follow the existing run")
    assert run.status is RunStatus.RUNNING and "after" not in run.steps

    existing.complete_step("inner", {"v": "approved"})

    assert run.result(timeout=30) == {"child": "approved", "id": existing.id}


def test_return_existing_fails_with_a_failed_run_and_leaves_an_open_one_alone(
        worker: Any) -> None:
    number = order()
    failed = submit_workflow(child("failing_child", fails=True),
                             idempotency_key=f"order-{number}")
    assert failed.wait(timeout=30) is RunStatus.FAILED
    run = submit_workflow(parent(child("failing_child"), "RETURN_EXISTING"),
                          input={"order": number})
    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.steps["sub"].error["type"] == "SubWorkflowFailed"

    # a followed run is not the parent's child: cancelling the parent leaves it running
    other = order()
    existing = submit_workflow(child("waiting_child", waits=True),
                               idempotency_key=f"order-{other}")
    follower = submit_workflow(parent(child("waiting_child", waits=True), "RETURN_EXISTING"),
                               input={"order": other})
    wait_for(lambda: follower.steps.get("sub"), timeout=30, what="the step to follow")
    follower.cancel()
    assert follower.wait(timeout=30) is RunStatus.TERMINATED
    assert existing.status is RunStatus.RUNNING


def test_fail_on_running_starts_anew_once_the_run_ended(worker: Any) -> None:
    number = order()
    existing = submit_workflow(child("waiting_child", waits=True),
                               idempotency_key=f"order-{number}")
    refused = submit_workflow(parent(child("keyed_child"), "FAIL_ON_RUNNING"),
                              input={"order": number})
    assert refused.wait(timeout=30) is RunStatus.FAILED
    assert "(RUNNING) already has it" in refused.steps["sub"].error["message"]

    existing.complete_step("inner", {"v": "done"})
    assert existing.wait(timeout=30) is RunStatus.COMPLETED
    run = submit_workflow(parent(child("keyed_child"), "FAIL_ON_RUNNING"),
                          input={"order": number})
    output = run.result(timeout=30)
    assert output["child"] == "from parent" and output["id"] != existing.id
    assert submit_workflow(child("keyed_child"), idempotency_key=f"order-{number}").id \
        == output["id"]


def test_a_redelivered_step_finds_its_own_child(worker: Any) -> None:
    number = order()
    run = submit_workflow(parent(child("waiting_child", waits=True)), input={"order": number})
    started = child_of(run)
    wait_for(lambda: started.steps.get("inner"), timeout=30, what="the child to wait")
    store = get_store()
    record = store.get_step_records(run.id, ["sub"])["sub"]
    fields = store.get_run_fields(run.id, "plan", "root")

    celery_app.send_task("baton.sub_workflow", args=(run.id, "sub", fields["plan"]),
                         task_id=record["taskId"], root_id=fields["root"])
    wait_for(lambda: int(store.get_step_records(run.id, ["sub"])["sub"]["deliveries"])
             > int(record["deliveries"]), timeout=30, what="the message to come again")
    wait_for(lambda: run.steps["sub"].status is StepStatus.IN_PROGRESS, timeout=30,
             what="the step to wait on")

    started.complete_step("inner", {"v": "ok"})
    assert run.result(timeout=30) == {"child": "ok", "id": started.id}


def test_start_workflow_refuses_an_idempotency_key(worker: Any) -> None:
    starter = {"name": "starter", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "start", "taskReferenceName": "start", "type": "START_WORKFLOW",
         "inputParameters": {"startWorkflow": {"name": "keyed_child", "idempotencyKey": "k"}}}]}
    run = submit_workflow(starter)
    try:
        run.result(timeout=30)
    except WorkflowFailed as failed:
        assert failed.error is not None
        assert "startWorkflow.idempotencyKey: not supported yet" in failed.error["message"]
    else:
        raise AssertionError("the START_WORKFLOW step should have failed")
