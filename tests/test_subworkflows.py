"""Registered definitions, SUB_WORKFLOW and START_WORKFLOW on a real worker."""

from __future__ import annotations

from typing import Any

import pytest

from app import (
    DefinitionError,
    RunStatus,
    WorkflowFailed,
    get_run,
    get_workflow,
    list_workflows,
    register_workflow,
    submit_workflow,
)
from tests.support import wait_for


def child(name: str, version: int, transformation: str = "echo") -> dict[str, Any]:
    inputs = {"v": "${workflow.input.v}", "version": version}
    if transformation == "refuse":
        inputs = {"reason": "${workflow.input.v}"}
    return {"name": name, "version": version, "schemaVersion": 2, "tasks": [
        {"name": transformation, "taskReferenceName": "inner", "inputParameters": inputs}],
        "outputParameters": {"got": "${inner.output.v}", "version": version}}


def parent(child_name: str, version: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": child_name}
    if version is not None:
        params["version"] = version
    return {"name": "parent", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
         "inputParameters": {"v": "${workflow.input.v}"}, "subWorkflowParam": params},
        {"name": "echo", "taskReferenceName": "after", "inputParameters": {
            "child": "${sub.output.got}"}}]}


def test_registered_workflows_are_found_by_name_and_version(worker: Any) -> None:
    register_workflow(child("reg_child", 1))
    register_workflow(child("reg_child", 2))

    assert list_workflows()["reg_child"] == [1, 2]
    assert get_workflow("reg_child").version == 2
    assert submit_workflow("reg_child", {"v": "x"}, version=1).result(timeout=30) == {
        "got": "x", "version": 1}
    assert submit_workflow("reg_child", {"v": "y"}).result(timeout=30)["version"] == 2


def test_an_unknown_name_or_version_is_a_precise_error(worker: Any) -> None:
    register_workflow(child("known_child", 1))
    with pytest.raises(DefinitionError, match="no_such_flow: no workflow of this name"):
        submit_workflow("no_such_flow")
    with pytest.raises(DefinitionError, match=r"known_child: has no version 7 \(versions: 1\)"):
        submit_workflow("known_child", version=7)


def test_a_sub_workflow_runs_as_a_run_of_its_own_and_the_parent_waits(worker: Any) -> None:
    register_workflow(child("sub_child", 1))

    run = submit_workflow(parent("sub_child", 1), {"v": "hello"})

    assert run.result(timeout=30) == {"child": "hello"}
    sub = run.steps["sub"]
    assert sub.output["got"] == "hello"
    kid = get_run(sub.output["subWorkflowId"])
    assert kid.status is RunStatus.COMPLETED
    assert kid.record()["parentWorkflowId"] == run.id
    assert kid.steps["inner"].ended_at <= run.steps["after"].started_at


def test_a_failed_sub_workflow_fails_its_parent_step_and_run(worker: Any) -> None:
    register_workflow(child("failing_child", 1, transformation="refuse"))

    run = submit_workflow(parent("failing_child"), {"v": "x"})

    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)
    assert caught.value.step_ref == "sub"
    assert caught.value.error is not None
    assert caught.value.error["type"] == "SubWorkflowFailed"
    assert "after" not in run.steps
    kid = get_run(run.steps["sub"].output["subWorkflowId"])
    assert kid.status is RunStatus.FAILED


# -- a child's lifecycle follows its parent's (Conductor's semantics) --------------------------


def gated_child(name: str) -> dict[str, Any]:
    """A child whose one step waits on the gate its input names, then echoes `v`."""
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "gate", "taskReferenceName": "inner",
         "inputParameters": {"key": "${workflow.input.key}", "v": "${workflow.input.v}"}}],
        "outputParameters": {"got": "${inner.output.v}"}}


def broken_child(name: str) -> dict[str, Any]:
    """A child that fails until the test sets `test:fixed:<key>`."""
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "fails_until_fixed", "taskReferenceName": "inner",
         "inputParameters": {"key": "${workflow.input.key}"}}],
        "outputParameters": {"attempt": "${inner.output.attempt}"}}


def parent_of(child_name: str, *also: dict[str, Any]) -> dict[str, Any]:
    return {"name": "parent", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
         "inputParameters": {"key": "${workflow.input.key}", "v": "${workflow.input.v}"},
         "subWorkflowParam": {"name": child_name}}, *also]}


def child_of(run: Any) -> Any:
    from tests.support import wait_for

    step = wait_for(lambda: run.steps.get("sub") if run.steps.get("sub") and
                    run.steps["sub"].output else None, timeout=30, what="the child to start")
    return get_run(step.output["subWorkflowId"])


def test_cancelling_a_parent_terminates_its_running_child(worker: Any) -> None:
    import uuid

    from app import StepStatus
    from app.runtime.state import get_store

    register_workflow(gated_child("cancel_child"))
    key = uuid.uuid4().hex
    run = submit_workflow(parent_of("cancel_child"), {"key": key, "v": 1})
    kid = child_of(run)

    run.cancel("no longer needed")

    assert kid.wait(timeout=30) is RunStatus.TERMINATED
    assert run.id in kid.record()["reasonForIncompletion"]
    assert run.steps["sub"].status is StepStatus.CANCELED
    get_store().client.rpush(f"test:gate:{key}", "open")


def test_a_parent_failing_elsewhere_terminates_its_running_child(worker: Any) -> None:
    import uuid

    from app import StepStatus
    from app.runtime.state import get_store

    register_workflow(gated_child("orphan_child"))
    key = uuid.uuid4().hex
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        parent_of("orphan_child")["tasks"],
        [{"name": "gate_then_refuse", "taskReferenceName": "bad",
          "inputParameters": {"key": f"{key}:bad"}}]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["sub", "bad"]}
    run = submit_workflow({**parent_of("orphan_child"), "tasks": [fork, join]},
                          {"key": key, "v": 1})
    kid = child_of(run)

    get_store().client.rpush(f"test:gate:{key}:bad", "open")

    assert run.wait(timeout=30) is RunStatus.FAILED
    assert kid.wait(timeout=30) is RunStatus.TERMINATED
    # the child's end fails the parent's step just after the child is recorded TERMINATED
    wait_for(lambda: run.steps["sub"].status is not StepStatus.IN_PROGRESS, timeout=30,
             what="the parent's step to end with its child")
    get_store().client.rpush(f"test:gate:{key}", "open")


def test_retrying_a_parent_retries_its_failed_child_in_place(worker: Any) -> None:
    import uuid

    from app.runtime.state import get_store

    register_workflow(broken_child("retry_child"))
    key = uuid.uuid4().hex
    run = submit_workflow(parent_of("retry_child", {
        "name": "echo", "taskReferenceName": "after",
        "inputParameters": {"attempt": "${sub.output.attempt}"}}), {"key": key})
    assert run.wait(timeout=30) is RunStatus.FAILED
    kid = child_of(run)
    assert kid.status is RunStatus.FAILED

    get_store().client.set(f"test:fixed:{key}", "1")
    run.retry()

    assert run.result(timeout=30) == {"attempt": 2}
    assert kid.status is RunStatus.COMPLETED
    assert run.steps["sub"].output["subWorkflowId"] == kid.id  # the same child, retried


def test_retrying_a_failed_child_on_its_own_reopens_its_parent(worker: Any) -> None:
    import uuid

    from app.runtime.state import get_store

    register_workflow(broken_child("alone_child"))
    key = uuid.uuid4().hex
    run = submit_workflow(parent_of("alone_child"), {"key": key})
    assert run.wait(timeout=30) is RunStatus.FAILED
    kid = child_of(run)

    get_store().client.set(f"test:fixed:{key}", "1")
    kid.retry()

    assert kid.result(timeout=30) == {"attempt": 2}
    assert run.result(timeout=30)["attempt"] == 2


def test_a_workflow_that_starts_itself_stops_at_the_depth_limit(
    worker: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "max_sub_workflow_depth", 3)
    register_workflow({"name": "forever", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
         "subWorkflowParam": {"name": "forever"}}]})

    run = submit_workflow("forever")

    assert run.wait(timeout=30) is RunStatus.FAILED
    depth, current = 0, run
    while current.steps["sub"].output and current.steps["sub"].output.get("subWorkflowId"):
        current = get_run(current.steps["sub"].output["subWorkflowId"])
        depth += 1
    assert depth == 3
    assert "nest deeper than 3 runs" in current.steps["sub"].error["message"]
