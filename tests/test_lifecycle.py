"""Pause, resume, cancel, retry and restart, on a real worker over a real Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app import LifecycleError, RunStatus, StepStatus, WorkflowRun, submit_workflow
from app.runtime.state import get_store
from tests.support import failure_run, wait_for


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "life", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def task(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "inputParameters": inputs}


def open_gate(key: str) -> None:
    get_store().client.rpush(f"test:gate:{key}", "open")


def entered(key: str) -> bool:
    return bool(get_store().client.get(f"test:attempts:gate:{key}"))


def attempts(key: str) -> int:
    return int(get_store().client.get(f"test:attempts:{key}") or 0)


def test_a_paused_run_starts_no_new_step_and_resume_goes_on(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("first", "gate", key=key, v=1), task("second", v=2),
                             task("third", v="${second.output.v}")))
    wait_for(lambda: entered(key), timeout=30, what="the first step to start")

    run.pause()
    assert run.status is RunStatus.PAUSED
    open_gate(key)
    wait_for(lambda: run.steps["first"].status is StepStatus.COMPLETED, timeout=30,
             what="the running step to finish")
    wait_for(lambda: get_store().client.llen(f"baton:run:{{{run.id}}}:parked") == 1,
             timeout=30, what="the next step to be held back")
    assert "second" not in run.steps or run.steps["second"].status is not StepStatus.COMPLETED

    run.resume()
    assert run.result(timeout=30) == {"v": 2}


def test_cancel_ends_the_run_and_queued_steps_do_nothing(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("first", "gate", key=key), task("second")))
    wait_for(lambda: entered(key), timeout=30, what="the first step to start")

    run.cancel("no longer needed")
    open_gate(key)

    assert run.wait(timeout=30) is RunStatus.TERMINATED
    assert run.record()["reasonForIncompletion"] == "no longer needed"
    assert run.steps["first"].status is StepStatus.CANCELED
    with pytest.raises(LifecycleError, match="is not RUNNING or PAUSED"):
        run.cancel()


def test_retry_runs_the_failed_step_again_and_not_the_completed_ones(worker: Any) -> None:
    key, done_key = uuid.uuid4().hex, uuid.uuid4().hex
    run = submit_workflow(wf(task("before", "flaky", key=done_key, failures=0),
                             task("broken", "fails_until_fixed", key=key),
                             task("after", v="${broken.output.attempt}")))
    assert run.wait(timeout=30) is RunStatus.FAILED

    get_store().client.set(f"test:fixed:{key}", "1")
    run.retry()

    assert run.result(timeout=30) == {"v": 2}
    assert attempts(done_key) == 1
    assert run.steps["broken"].attempts == 2


def test_retry_of_a_failed_fork_branch_still_closes_the_fork(worker: Any) -> None:
    key = uuid.uuid4().hex
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        [task("broken", "fails_until_fixed", key=key)], [task("fine", v=1)]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN",
            "joinOn": ["broken", "fine"]}
    run = submit_workflow(wf(fork, join))
    assert run.wait(timeout=30) is RunStatus.FAILED

    get_store().client.set(f"test:fixed:{key}", "1")
    run.retry()

    assert run.result(timeout=30) == {"broken": {"attempt": 2}, "fine": {"v": 1}}


def test_restart_runs_everything_again_with_the_same_input(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("one", "flaky", key=key, failures=0)))
    assert run.result(timeout=30) == {"attempt": 1}

    run.restart()

    assert run.result(timeout=30) == {"attempt": 2}
    with pytest.raises(LifecycleError, match="only a FAILED, TIMED_OUT or TERMINATED run"):
        WorkflowRun(run.id).retry()


def test_a_workflow_timeout_times_the_run_out_while_a_step_runs(worker: Any) -> None:
    key = uuid.uuid4().hex
    definition = {**wf(task("slow", "gate", key=key), task("after")), "timeoutSeconds": 1}
    run = submit_workflow(definition)
    wait_for(lambda: entered(key), timeout=30, what="the slow step to start")

    assert run.wait(timeout=30) is RunStatus.TIMED_OUT
    open_gate(key)
    assert run.record()["reasonForIncompletion"] == "workflow timed out after 1s"
    assert run.steps["slow"].status is StepStatus.CANCELED
    assert "after" not in run.steps


def test_a_failed_run_starts_its_failure_workflow(worker: Any) -> None:
    from app import register_workflow

    register_workflow(wf(task("handle", v="${workflow.input.failureStatus}",
                              failed="${workflow.input.workflowId}"))
                      | {"name": "on_failure"})
    definition = wf(task("bad", "refuse", reason="boom")) | {"failureWorkflow": "on_failure"}

    run = submit_workflow(definition, input={"order": 3})
    assert run.wait(timeout=30) is RunStatus.FAILED

    started = failure_run(run, "on_failure")
    assert started.result(timeout=30) == {"v": "FAILED", "failed": run.id}
    given = started.record()["input"]
    assert given["order"] == 3 and given["reason"] == "Refused: boom"
    assert given["failureTaskId"] == run.steps["bad"].task_id
    # Conductor also gives the failed run's execution, which compensation reads
    failed = given["failedWorkflow"]
    assert (failed["workflowId"], failed["status"], failed["input"]) == \
        (run.id, "FAILED", {"order": 3})
    assert [(t["referenceTaskName"], t["status"], t["inputData"]) for t in failed["tasks"]] \
        == [("bad", "FAILED", {"reason": "boom"})]
    assert failed["failedReferenceTaskNames"] == ["bad"]
    assert failed["workflowDefinition"]["failureWorkflow"] == "on_failure"
    # as Conductor's, the failed run's output names the failure run it started
    wait_for(lambda: (run.output or {}).get("conductor.failure_workflow") == started.id,
             timeout=30, what="the failed run's output to name its failure run")


def test_the_failure_run_is_added_to_a_large_output_and_a_start_error_is_named(
        worker: Any) -> None:
    from app import register_workflow

    register_workflow(wf(task("handle")) | {"name": "on_failure"})
    big = "x" * 4000  # over the size at which the store keeps an output as a blob
    ending = {"name": "end", "taskReferenceName": "end", "type": "TERMINATE",
              "inputParameters": {"terminationStatus": "FAILED", "workflowOutput": {"big": big}}}
    run = submit_workflow(wf(ending) | {"failureWorkflow": "on_failure"})
    assert run.wait(timeout=30) is RunStatus.FAILED
    started = failure_run(run, "on_failure")
    wait_for(lambda: (run.output or {}).get("conductor.failure_workflow") == started.id,
             timeout=30, what="the failed run's output to name its failure run")
    assert run.output["big"] == big

    missing = submit_workflow(wf(task("bad", "refuse", reason="boom"))
                              | {"failureWorkflow": "no_such_workflow"})
    assert missing.wait(timeout=30) is RunStatus.FAILED
    noted = wait_for(lambda: (missing.output or {}).get("conductor.failure_workflow"),
                     timeout=30, what="the failed run's output to say why none started")
    assert noted.startswith("Error workflow no_such_workflow failed to start.  reason: ")


def test_a_failure_run_is_not_noted_over_a_run_that_was_reopened(worker: Any) -> None:
    store = get_store()
    run = submit_workflow(wf(task("only", v=1)))
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert not store.add_run_output(run.id, "FAILED", "conductor.failure_workflow", "x")
    assert "conductor.failure_workflow" not in run.output
