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
