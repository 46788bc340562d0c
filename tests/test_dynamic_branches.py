"""A dynamic fork's branches as Conductor derives them: any one-step type, its ref naming
(`_<name>_<i>`, then `_<fork>_<name>_<i>`), `__index`, items that are not objects, and
one sub-workflow per item (`forkTaskWorkflow`)."""

from __future__ import annotations

from typing import Any

import pytest

from app import RunStatus, register_workflow, submit_workflow


def wf(*tasks: dict[str, Any], name: str = "dyn") -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def fork(ref: str, **inputs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"name": ref, "taskReferenceName": ref, "type": "FORK_JOIN_DYNAMIC",
             "inputParameters": inputs},
            {"name": "join", "taskReferenceName": f"{ref}_join", "type": "JOIN"})


def test_item_branches_are_named_and_indexed_as_in_conductor(worker: Any) -> None:
    first = fork("fan", forkTaskName="echo", forkTaskInputs=["a", {"k": 1}])
    second = fork("fan2", forkTaskName="echo", forkTaskInputs=[{"k": 2}])
    run = submit_workflow(wf(*first, *second))

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    # items that are not objects are given as `input`; each branch gets its `__index`
    assert run.steps["fan_join"].output == {
        "_echo_0": {"input": "a", "__index": 0}, "_echo_1": {"k": 1, "__index": 1}}
    # once the run has run a dynamic fork, the next names its branches after itself
    assert run.steps["fan2_join"].output == {"_fan2_echo_0": {"k": 2, "__index": 0}}
    assert run.steps["fan"].output == {"forkedTasks": ["_echo_0", "_echo_1"]}


def test_branches_of_a_system_type_run_that_operator(worker: Any) -> None:
    doubled = fork("double", forkTaskType="INLINE", forkTaskInputs=[
        {"evaluatorType": "graaljs", "expression": "$.x * 2", "x": x} for x in (1, 5)])
    run = submit_workflow(wf(*doubled))

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    steps = run.steps
    assert {ref: steps[ref].type for ref in ("_INLINE_0", "_INLINE_1")} == \
        {"_INLINE_0": "INLINE", "_INLINE_1": "INLINE"}
    assert run.steps["double_join"].output == {"_INLINE_0": {"result": 2},
                                               "_INLINE_1": {"result": 10}}


def test_one_sub_workflow_per_item(worker: Any) -> None:
    register_workflow({**wf({"name": "echo", "taskReferenceName": "say",
                             "inputParameters": {"said": "${workflow.input.word}"}},
                            name="say_one")})
    per_item = fork("each", forkTaskWorkflow="say_one", forkTaskWorkflowVersion="1",
                    forkTaskInputs=[{"word": "hi"}, {"word": "yo"}])
    run = submit_workflow(wf(*per_item))

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    joined = run.steps["each_join"].output
    assert sorted(joined) == ["_say_one_0", "_say_one_1"]
    assert joined["_say_one_1"]["said"] == "yo"
    assert run.steps["_say_one_0"].type == "SUB_WORKFLOW"


def test_listed_branches_may_be_of_any_one_step_type(worker: Any) -> None:
    listed = fork("mixed", tasks="${workflow.input.tasks}", inputs="${workflow.input.inputs}")
    listed[0].update(dynamicForkTasksParam="tasks", dynamicForkTasksInputParamName="inputs")
    tasks = [{"name": "echo", "taskReferenceName": "plain"},
             {"name": "sum", "taskReferenceName": "sum", "type": "JSON_JQ_TRANSFORM"}]
    inputs = {"plain": {"v": 1}, "sum": {"xs": [1, 2, 3], "queryExpression": ".xs | add"}}
    run = submit_workflow(wf(*listed), input={"tasks": tasks, "inputs": inputs})

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    joined = run.steps["mixed_join"].output
    assert joined["plain"] == {"v": 1} and joined["sum"]["result"] == 6


@pytest.mark.parametrize(("task", "message"), [
    ({"name": "x", "taskReferenceName": "x", "type": "DO_WHILE"},
     "dynamic task 'x': type DO_WHILE cannot be a dynamic fork's branch"),
    # a field Baton refuses in a definition is refused in a branch given at run time
    ({"name": "echo", "taskReferenceName": "x", "asyncComplete": True},
     "dynamic task 'x': asyncComplete: not supported on a SIMPLE task"),
])
def test_a_branch_baton_cannot_run_fails_its_fork(
    worker: Any, task: dict[str, Any], message: str
) -> None:
    listed = fork("bad", tasks=[task], inputs={})
    listed[0].update(dynamicForkTasksParam="tasks", dynamicForkTasksInputParamName="inputs")
    run = submit_workflow(wf(*listed))

    assert run.wait(timeout=60) is RunStatus.FAILED
    error = run.steps["bad"].error or {}
    assert message in error["message"]
