"""Run state under races: pause and resume at any moment, a step completed from outside by
many callers at once, refs taken at run time, failures outside a step's own work, and
retention that never expires an open run. Real workers, a real Redis."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from app import NotWaiting, RunStatus, StepStatus, WorkflowRun, submit_workflow
from app.config import get_settings
from app.runtime.state import get_store, plans
from app.store.keys import definition_key, run_key, step_key
from tests.support import wait_for
from tests.test_lifecycle import attempts as counted
from tests.test_lifecycle import entered, open_gate


def wf(*tasks: dict[str, Any], name: str = "state") -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def task(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "inputParameters": inputs}


def human(ref: str) -> dict[str, Any]:
    return {"name": ref, "taskReferenceName": ref, "type": "HUMAN"}


def waiting(run: WorkflowRun, ref: str) -> bool:
    step = run.steps.get(ref)
    return step is not None and step.status is StepStatus.IN_PROGRESS


# -- pause and resume ------------------------------------------------------------------------


def test_a_run_paused_while_its_last_step_runs_completes_on_resume(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("first", v=1), task("last", "gate", key=key, v=2)))
    wait_for(lambda: entered(key), timeout=30, what="the last step to start")

    run.pause()
    open_gate(key)
    wait_for(lambda: run.steps["last"].status is StepStatus.COMPLETED, timeout=30,
             what="the last step to complete")
    assert run.status is RunStatus.PAUSED  # nothing ends a paused run but its resume

    run.resume()
    assert run.result(timeout=30) == {"v": 2}


def test_a_step_failing_while_its_run_is_paused_fails_the_run_on_resume(worker: Any) -> None:
    key = uuid.uuid4().hex
    # the gate gives up after 10 s: the retry below fails that way, the gate being shut
    run = submit_workflow(wf(task("bad", "gate_then_refuse", key=key, seconds=10),
                             task("after")))
    wait_for(lambda: entered(key), timeout=30, what="the step to start")

    run.pause()
    open_gate(key)
    wait_for(lambda: run.steps["bad"].status is StepStatus.FAILED, timeout=30,
             what="the step to fail")
    assert run.status is RunStatus.PAUSED

    run.resume()
    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.record()["failedReferenceTaskName"] == "bad"
    assert "after" not in run.steps
    run.retry()  # its message was kept, as for a failure while running
    assert run.wait(timeout=30) is RunStatus.FAILED  # it fails again: the gate is shut
    assert counted(f"gate:{key}") == 2


def test_bursts_of_pause_and_resume_during_a_fork_never_leave_the_run_stuck(
    worker: Any,
) -> None:
    keys = [uuid.uuid4().hex for _ in range(4)]
    branches = [[task(f"g{i}", "gate", key=k, i=i), task(f"e{i}", i=i)]
                for i, k in enumerate(keys)]
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN",
            "forkTasks": branches}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN",
            "joinOn": [f"e{i}" for i in range(4)]}
    run = submit_workflow(wf(fork, join, task("end", n="${j.output.e3.i}")))
    wait_for(lambda: all(entered(k) for k in keys), timeout=30, what="every branch to start")

    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            try:
                run.pause()
                run.resume()
            except Exception:  # noqa: BLE001 (the run ended meanwhile)
                return

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for k in keys:
            open_gate(k)
        wait_for(lambda: run.status.terminal or all(
            run.steps.get(f"e{i}") and run.steps[f"e{i}"].status is StepStatus.COMPLETED
            for i in range(4)), timeout=30, what="every branch to end")
    finally:
        stop.set()
        flipper.join(timeout=30)
    if run.status is RunStatus.PAUSED:
        run.resume()
    assert run.result(timeout=30) == {"n": 3}


# -- completing a step from outside ------------------------------------------------------------


def race(calls: int, call: Any) -> list[BaseException | None]:
    """Run `call` from `calls` threads released at once; each one's exception (or None)."""
    barrier = threading.Barrier(calls)
    results: list[BaseException | None] = [None] * calls

    def one(index: int) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_human_step_completed_by_eight_callers_at_once_completes_once(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(human("h"), task("next", "flaky", key=key, failures=0)))
    wait_for(lambda: waiting(run, "h"), timeout=30, what="the HUMAN step to wait")

    results = race(8, lambda: run.complete_step("h", {"ok": True}))

    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, NotWaiting) for r in results if r is not None)
    assert run.result(timeout=30) == {"attempt": 1}
    assert counted(key) == 1  # the step after it ran once


def test_a_human_step_in_a_fork_completed_at_once_does_not_close_the_fork_early(
    worker: Any,
) -> None:
    key = uuid.uuid4().hex
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        [human("h")], [task("slow", "gate", key=key, v="slow")]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["h", "slow"]}
    run = submit_workflow(wf(fork, join))
    wait_for(lambda: waiting(run, "h") and entered(key), timeout=30,
             what="both branches to start")

    results = race(8, lambda: run.complete_step("h", {"ok": True}))
    assert sum(r is None for r in results) == 1
    assert run.status is RunStatus.RUNNING
    assert "j" not in run.steps  # the other branch has not ended

    open_gate(key)
    assert run.result(timeout=30) == {"h": {"ok": True}, "slow": {"v": "slow"}}


# -- refs taken at run time ----------------------------------------------------------------


def dynamic_fork(listed: str) -> list[dict[str, Any]]:
    return [
        {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC",
         "inputParameters": {"tasks": listed, "inputs": "${workflow.input.inputs}"},
         "dynamicForkTasksParam": "tasks", "dynamicForkTasksInputParamName": "inputs"},
        {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN"},
    ]


@pytest.mark.parametrize("taken", ["approve", "fan_join", "fan", "approve__1"])
def test_a_dynamic_branch_cannot_take_a_ref_of_the_plan(worker: Any, taken: str) -> None:
    run = submit_workflow(
        wf(*dynamic_fork("${workflow.input.tasks}"), human("approve"), task("paid")),
        {"tasks": [{"name": "echo", "taskReferenceName": taken}], "inputs": {}})

    assert run.wait(timeout=30) is RunStatus.FAILED
    error = run.steps["fan"].error or {}
    assert f"dynamic task '{taken}'" in error["message"]
    assert "approve" not in run.steps or run.steps["approve"].status is not StepStatus.COMPLETED
    assert "paid" not in run.steps


def test_two_dynamic_forks_cannot_share_a_branch_ref(worker: Any) -> None:
    first = dynamic_fork("${workflow.input.tasks}")
    second = [{**first[0], "taskReferenceName": "fan2"},
              {**first[1], "taskReferenceName": "fan2_join"}]
    run = submit_workflow(wf(*first, *second),
                          {"tasks": [{"name": "echo", "taskReferenceName": "b"}],
                           "inputs": {"b": {"v": 1}}})

    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.record()["failedReferenceTaskName"] == "fan2"
    assert "takes the ref of fork fan" in run.steps["fan2"].error["message"]
    assert run.steps["b"].output == {"v": 1}  # the first fork's branch is untouched


# -- failures outside a step's own work --------------------------------------------------------


def test_a_step_whose_plan_cannot_be_rebuilt_fails_its_run_with_the_reason(
    worker: Any,
) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("first", "gate", key=key), task("second")))
    wait_for(lambda: entered(key), timeout=30, what="the first step to start")
    digest = run.record()["plan"]
    get_store().client.delete(definition_key(digest))
    plans._plans.pop(digest, None)  # as on a worker that never saw the run before
    plans._alive.pop(digest, None)

    open_gate(key)

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["second"]
    assert step.status is StepStatus.FAILED
    assert step.error is not None and step.error["type"] == "PlanMissing"


# -- retention ----------------------------------------------------------------------------------


def test_an_open_run_never_expires_and_retention_counts_from_its_end(worker: Any) -> None:
    run = submit_workflow(wf(human("h"), task("after", v=1)))
    wait_for(lambda: waiting(run, "h"), timeout=30, what="the HUMAN step to wait")
    client = get_store().client
    digest = run.record()["plan"]
    open_keys = [run_key(run.id), step_key(run.id, "h"), definition_key(digest)]
    assert [client.ttl(k) for k in open_keys] == [-1, -1, -1]

    run.complete_step("h", {})
    assert run.result(timeout=30) == {"v": 1}

    for key in [*open_keys, step_key(run.id, "after")]:
        assert client.ttl(key) > 0, key


def test_an_input_too_deep_for_the_worker_fails_the_run_instead_of_leaving_it_running(
    worker: Any,
) -> None:
    # as deep as submit takes (max_json_depth); deeper is refused at submit
    nested: Any = "bottom"
    for _ in range(get_settings().max_json_depth - 1):
        nested = {"d": nested}
    run = submit_workflow(wf(task("deep", v="${workflow.input.n}")), {"n": nested})

    status = run.wait(timeout=30)

    assert status in (RunStatus.COMPLETED, RunStatus.FAILED)  # ended, either way
    if status is RunStatus.FAILED:
        assert run.steps["deep"].error is not None
