"""taskDefinition.timeoutSeconds of SUB_WORKFLOW, JOIN and DO_WHILE tasks on a real worker:
it bounds their wait for the child run, the branches, the iterations (Conductor's statuses
and reasons), and a poll timeout times out a step no worker takes.

What they wait on is a WAIT step nobody completes, so no worker is kept busy meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from app import RunStatus, StepStatus, get_run, submit_workflow
from app.runtime.state import get_store
from app.runtime.timeouts import ALERT_FIELD
from tests.support import scaled, wait_for

pytestmark = pytest.mark.timeout(120)


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "wait_timeouts", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def held(ref: str) -> dict[str, Any]:
    """A step that waits until completed from outside."""
    return {"name": ref, "taskReferenceName": ref, "type": "WAIT"}


def echo(ref: str) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": {"ref": ref}}


def limit(seconds: float, policy: str | None = None) -> dict[str, Any]:
    definition: dict[str, Any] = {"name": "limited", "timeoutSeconds": seconds}
    if policy:
        definition["timeoutPolicy"] = policy
    return {"taskDefinition": definition}


def sub_workflow(*child: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
            "subWorkflowParam": {"name": "child", "workflowDefinition": {
                "name": "child", "version": 1, "schemaVersion": 2, "tasks": list(child)}},
            **extra}


def fork_join(branches: list[list[dict[str, Any]]], **join: Any) -> list[dict[str, Any]]:
    refs = [branch[-1]["taskReferenceName"] for branch in branches]
    return [{"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
             "forkTasks": branches},
            {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": refs,
             **join}]


def reason(run: Any) -> str:
    return str(run.record()["reasonForIncompletion"])


def status(run: Any, ref: str) -> StepStatus:
    return StepStatus(run.steps[ref].status)


TIMED_OUT_AFTER_1 = ("Task timed out after 1 seconds. Timeout configured as 1 seconds. "
                     "Timeout policy configured to ")


def test_a_sub_workflow_past_its_timeout_times_out_and_its_child_is_terminated(
    worker: Any
) -> None:
    run = submit_workflow(wf(sub_workflow(held("w"), **limit(1)), echo("after")))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert status(run, "sub") is StepStatus.TIMED_OUT and "after" not in run.steps
    assert reason(run) == TIMED_OUT_AFTER_1 + "TIME_OUT_WF"
    child = get_run(str(run.steps["sub"].output["subWorkflowId"]))
    assert child.wait(timeout=scaled(20)) is RunStatus.TERMINATED
    assert status(child, "w") is StepStatus.CANCELED
    # the child's end leaves the timed-out step as it is
    assert status(run, "sub") is StepStatus.TIMED_OUT and run.status is RunStatus.TIMED_OUT


def test_a_sub_workflow_under_alert_only_waits_on_for_its_child(worker: Any) -> None:
    run = submit_workflow(wf(sub_workflow(held("w"), **limit(1, "ALERT_ONLY")), echo("after")))

    wait_for(lambda: get_store().get_steps(run.id).get("sub", {}).get(ALERT_FIELD),
             timeout=scaled(20), what="the timeout alert")
    assert run.status is RunStatus.RUNNING
    child = get_run(str(run.steps["sub"].output["subWorkflowId"]))
    child.complete_step("w", {"by": "ops"})
    assert run.wait(timeout=scaled(20)) is RunStatus.COMPLETED
    assert status(run, "sub") is StepStatus.COMPLETED
    assert get_store().get_steps(run.id)["sub"][ALERT_FIELD].startswith(TIMED_OUT_AFTER_1)


@pytest.mark.parametrize("policy", ["TIME_OUT_WF", "RETRY"])
def test_a_join_past_its_timeout_times_out_and_its_branches_are_cancelled(
    worker: Any, policy: str
) -> None:
    # RETRY too: Conductor does not retry a JOIN, the run times out
    run = submit_workflow(wf(*fork_join([[held("held")], [echo("quick")]], **limit(1, policy)),
                             echo("after")))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert status(run, "join") is StepStatus.TIMED_OUT
    assert status(run, "held") is StepStatus.CANCELED
    assert status(run, "quick") is StepStatus.COMPLETED and "after" not in run.steps
    assert reason(run) == TIMED_OUT_AFTER_1 + policy
    assert run.record()["failedReferenceTaskName"] == "join"


def test_a_dynamic_fork_join_past_its_timeout_times_out(worker: Any) -> None:
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN_DYNAMIC",
            "inputParameters": {"tasks": [held("held")], "inputs": {"held": {}}},
            "dynamicForkTasksParam": "tasks", "dynamicForkTasksInputParamName": "inputs"}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN", **limit(1)}
    run = submit_workflow(wf(fork, join))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert status(run, "join") is StepStatus.TIMED_OUT
    assert status(run, "held") is StepStatus.CANCELED


def test_a_join_whose_branches_end_in_time_is_not_timed_out(worker: Any) -> None:
    run = submit_workflow(wf(*fork_join([[held("held")], [echo("quick")]], **limit(2)),
                             echo("after")))
    wait_for(lambda: run.steps.get("held") and status(run, "held") is StepStatus.IN_PROGRESS,
             timeout=scaled(20), what="the branch to wait")
    run.complete_step("held", {"by": "ops"})

    assert run.wait(timeout=scaled(20)) is RunStatus.COMPLETED
    # its timer, once due, finds the join completed and does nothing
    done = time.monotonic()
    wait_for(lambda: time.monotonic() > done + 2.5, timeout=10, what="the timer to be due")
    assert run.status is RunStatus.COMPLETED and status(run, "join") is StepStatus.COMPLETED


def test_a_loop_past_its_timeout_times_out_and_its_iteration_is_cancelled(worker: Any) -> None:
    loop = {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE",
            "loopCondition": "true", "loopOver": [held("held")], **limit(1)}
    run = submit_workflow(wf(loop, echo("after")))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert status(run, "loop") is StepStatus.TIMED_OUT and "after" not in run.steps
    assert get_store().get_steps(run.id)["held__1"]["status"] == StepStatus.CANCELED
    assert reason(run) == TIMED_OUT_AFTER_1 + "TIME_OUT_WF"
