"""WAIT and HUMAN: timed waits, completion from outside, waiting inside a fork branch."""

from __future__ import annotations

from typing import Any

import pytest

from app import NotWaiting, RunStatus, WorkflowRun, submit_workflow
from app.runtime.waiting import parse_duration
from tests.support import wait_for


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "waits", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def echo(ref: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}


def waiting(run: WorkflowRun, ref: str) -> bool:
    step = run.steps.get(ref)
    return step is not None and step.status.value == "IN_PROGRESS" and step.output is not None


def test_durations_read_as_conductor_writes_them() -> None:
    assert parse_duration("1d 2h 3m 4s") == 86400 + 7200 + 180 + 4
    assert parse_duration("30 seconds") == 30
    assert parse_duration("2 minutes 5 secs") == 125


def test_a_timed_wait_completes_when_due_and_the_run_goes_on(worker: Any) -> None:
    run = submit_workflow(wf({"name": "wait", "taskReferenceName": "w", "type": "WAIT",
                              "inputParameters": {"duration": "1s"}}, echo("after", v=1)))

    assert run.result(timeout=30) == {"v": 1}
    step = run.steps["w"]
    assert step.started_at is not None and step.ended_at is not None
    assert (step.ended_at - step.started_at).total_seconds() >= 0.95


def test_a_human_step_in_a_fork_branch_still_closes_the_fork(worker: Any) -> None:
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        [{"name": "approve", "taskReferenceName": "approve", "type": "HUMAN"}],
        [echo("auto", v="x")]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN",
            "joinOn": ["approve", "auto"]}
    run = submit_workflow(wf(fork, join, echo("after", ok="${approve.output.ok}")))

    wait_for(lambda: waiting(run, "approve"), timeout=30, what="the HUMAN step to wait")
    assert run.status is RunStatus.RUNNING
    assert "j" not in run.steps
    run.complete_step("approve", {"ok": True})

    assert run.result(timeout=30) == {"ok": True}
    assert run.steps["j"].output == {"approve": {"ok": True}, "auto": {"v": "x"}}


def test_completing_a_step_that_does_not_wait_is_refused(worker: Any) -> None:
    run = submit_workflow(wf({"name": "wait", "taskReferenceName": "w", "type": "WAIT"},
                             echo("after")))
    wait_for(lambda: waiting(run, "w"), timeout=30, what="the WAIT step to wait")

    with pytest.raises(NotWaiting, match="step 'after'"):
        run.complete_step("after", {})
    run.complete_step("w", {"by": "ops"})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    with pytest.raises(NotWaiting, match="no longer waiting"):
        run.complete_step("w", {})
