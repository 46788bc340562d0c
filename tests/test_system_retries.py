"""Retries of system tasks on a real worker, per their task's retryCount, retryLogic and
retryDelaySeconds: INLINE, LAMBDA, JSON_JQ_TRANSFORM, EVENT, SET_VARIABLE and START_WORKFLOW
in the step runner, SUB_WORKFLOW with a new child run per attempt, WAIT and HUMAN waiting
again after a timeout under timeoutPolicy RETRY."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from app import (
    NotWaiting,
    RunStatus,
    StepStatus,
    WorkflowFailed,
    WorkflowRun,
    list_runs,
    register_workflow,
    submit_workflow,
)
from app.runtime.messages import send_message
from app.runtime.state import get_store
from app.runtime.system_retries import MESSAGE_FIELD
from app.store.keys import attempts_key, event_stream, run_key
from tests.support import wait_for


def wf(*tasks: dict[str, Any], name: str = "system_retries") -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def retried(task: dict[str, Any], count: int, delay: int = 0) -> dict[str, Any]:
    return {**task, "retryCount": count,
            "taskDefinition": {"name": task["name"], "retryDelaySeconds": delay}}


def failed_once(run: WorkflowRun, ref: str) -> bool:
    step = run.steps.get(ref)
    return step is not None and len(step.failed_attempts) >= 1


def gaps_ms(run: WorkflowRun, ref: str) -> list[int]:
    """The time from each failed attempt's end to the next attempt's start."""
    step = run.steps[ref]
    starts = [a["startTime"] for a in step.failed_attempts[1:]]
    if step.status is not StepStatus.FAILED:
        assert step.started_at is not None
        starts.append(int(step.started_at.timestamp() * 1000))
    return [start - a["endTime"] for a, start in zip(step.failed_attempts, starts, strict=False)]


# -- in the step runner ----------------------------------------------------------------------

OK = "${workflow.variables.ok}"
SCRIPTS = {
    # over its memory limit until the test sets `ok` (a thrown error is not retried)
    "INLINE": {"evaluatorType": "javascript", "expression":
               "var a = []; while (!$.ok) a.push(new Array(1e5).fill(1)); 'done'"},
    "LAMBDA": {"scriptExpression": "if (!$.ok) throw new Error('not yet'); return 'done';"},
    "JSON_JQ_TRANSFORM": {"queryExpression": 'if .ok then "done" else error("not yet") end'},
}


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_a_failed_script_step_is_retried_after_its_delay(worker: Any, kind: str) -> None:
    step = retried({"name": kind.lower(), "taskReferenceName": "s", "type": kind,
                    "inputParameters": {**SCRIPTS[kind], "ok": OK}}, count=5, delay=1)

    run = submit_workflow(wf(step))
    wait_for(lambda: failed_once(run, "s"), timeout=30, what="a failed first attempt")
    get_store().set_variables(run.id, {"ok": True})

    assert run.result(timeout=30)["result"] == "done"
    record = run.steps["s"]
    assert record.status is StepStatus.COMPLETED
    assert record.attempts == len(record.failed_attempts) + 1 >= 2
    assert all(gap >= 950 for gap in gaps_ms(run, "s"))


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_retries_exhausted_fail_the_run_as_before(worker: Any, kind: str) -> None:
    step = retried({"name": kind.lower(), "taskReferenceName": "s", "type": kind,
                    "inputParameters": {**SCRIPTS[kind], "ok": False}}, count=2)

    run = submit_workflow(wf(step))

    assert run.wait(timeout=30) is RunStatus.FAILED
    record = run.steps["s"]
    assert record.status is StepStatus.FAILED
    assert record.attempts == 3
    assert [a["attempt"] for a in record.failed_attempts] == [1, 2, 3]
    assert run.record()["failedReferenceTaskName"] == "s"


def test_an_inline_script_error_is_terminal_and_not_retried(worker: Any) -> None:
    step = retried({"name": "inline", "taskReferenceName": "s", "type": "INLINE",
                    "inputParameters": {"evaluatorType": "javascript",
                                        "expression": "throw new Error('bad data')"}}, count=3)

    run = submit_workflow(wf(step))

    with pytest.raises(WorkflowFailed, match="bad data"):
        run.result(timeout=30)
    assert run.steps["s"].status is StepStatus.FAILED_WITH_TERMINAL_ERROR
    assert run.steps["s"].attempts == 1


def test_an_event_step_is_retried_until_its_stream_takes_the_event(worker: Any) -> None:
    sink = f"retries-{uuid.uuid4().hex}"
    stream = event_stream(sink)
    get_store().client.set(stream, "not a stream")  # XADD fails: WRONGTYPE
    step = retried({"name": "event", "taskReferenceName": "e", "type": "EVENT", "sink": sink,
                    "inputParameters": {"v": 1}}, count=5, delay=1)

    run = submit_workflow(wf(step))
    wait_for(lambda: failed_once(run, "e"), timeout=30, what="a failed first attempt")
    assert "WRONGTYPE" in run.steps["e"].failed_attempts[0]["error"]["message"]
    get_store().client.delete(stream)

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert get_store().client.xlen(stream) == 1
    record = run.steps["e"]
    assert record.attempts == len(record.failed_attempts) + 1 >= 2
    assert all(gap >= 950 for gap in gaps_ms(run, "e"))


def test_a_set_variable_step_is_retried_until_it_can_write(worker: Any) -> None:
    step = retried({"name": "set", "taskReferenceName": "s", "type": "SET_VARIABLE",
                    "startDelay": 1, "inputParameters": {"x": 1}}, count=5, delay=1)
    run = submit_workflow(wf(step))
    # while the step's start is delayed: its write of the variables fails (the run's byte
    # count is no integer) until the test puts the count back
    client, key = get_store().client, run_key(run.id)
    counted = client.hget(key, "bytes")
    client.hset(key, "bytes", "garbled")
    wait_for(lambda: client.llen(attempts_key(run.id, "s")), timeout=30,
             what="a failed first attempt")
    client.hset(key, "bytes", counted or "0")

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert get_store().get_variables(run.id) == {"x": "1"}
    record = run.steps["s"]
    assert "not an integer" in record.failed_attempts[0]["error"]["message"]
    assert record.attempts == len(record.failed_attempts) + 1 >= 2
    assert all(gap >= 950 for gap in gaps_ms(run, "s"))


def test_a_start_workflow_step_is_retried_until_its_workflow_exists(worker: Any) -> None:
    name = f"started_later_{uuid.uuid4().hex[:8]}"
    step = retried({"name": "start", "taskReferenceName": "s", "type": "START_WORKFLOW",
                    "inputParameters": {"startWorkflow": {"name": name, "input": {"v": 1}}}},
                   count=5, delay=1)

    run = submit_workflow(wf(step))
    wait_for(lambda: failed_once(run, "s"), timeout=30, what="a failed first attempt")
    register_workflow(wf({"name": "echo", "taskReferenceName": "e",
                          "inputParameters": {"v": "${workflow.input.v}"}}, name=name))

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    started = list_runs(name=name)
    assert [r.id for r in started] == [run.steps["s"].output["workflowId"]]
    assert all(gap >= 950 for gap in gaps_ms(run, "s"))


# -- SUB_WORKFLOW: a new child run per attempt -----------------------------------------------


def child_flow(name: str, gated: bool = False) -> dict[str, Any]:
    """A child that fails until its `key` has been tried `failures` times, over all children."""
    flaky = {"name": "flaky", "taskReferenceName": "f", "retryCount": 0, "inputParameters": {
        "key": "${workflow.input.key}", "failures": "${workflow.input.failures}"}}
    gate = {"name": "gate", "taskReferenceName": "g",
            "inputParameters": {"key": "${workflow.input.key}"}}
    return wf(*([gate] if gated else []), flaky, name=name)


def parent_flow(child: str, count: int, delay: int = 0) -> dict[str, Any]:
    sub = retried({"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                   "subWorkflowParam": {"name": child},
                   "inputParameters": {"key": "${workflow.input.key}",
                                       "failures": "${workflow.input.failures}"}}, count, delay)
    after = {"name": "echo", "taskReferenceName": "after",
             "inputParameters": {"attempt": "${sub.output.attempt}"}}
    return wf(sub, after, name=f"{child}_parent")


def children(name: str) -> list[Any]:
    return sorted(list_runs(name=name), key=lambda r: r.created_at)


def test_a_failed_child_is_retried_as_a_new_child_run(worker: Any) -> None:
    child = f"child_{uuid.uuid4().hex[:8]}"
    register_workflow(child_flow(child))

    run = submit_workflow(parent_flow(child, count=3, delay=1),
                          {"key": uuid.uuid4().hex, "failures": 2})

    assert run.result(timeout=30) == {"attempt": 3}
    kids = children(child)
    assert [k.status for k in kids] == [RunStatus.FAILED, RunStatus.FAILED,
                                        RunStatus.COMPLETED]
    sub = run.steps["sub"]
    assert sub.status is StepStatus.COMPLETED
    assert sub.output["subWorkflowId"] == kids[-1].id
    assert sub.attempts == 3
    assert [a["error"]["type"] for a in sub.failed_attempts] == ["SubWorkflowFailed"] * 2
    assert all(gap >= 950 for gap in gaps_ms(run, "sub"))


def test_a_child_failing_every_retry_fails_the_parent_as_before(worker: Any) -> None:
    child = f"child_{uuid.uuid4().hex[:8]}"
    register_workflow(child_flow(child))

    run = submit_workflow(parent_flow(child, count=1), {"key": uuid.uuid4().hex, "failures": 9})

    assert run.wait(timeout=30) is RunStatus.FAILED
    assert [k.status for k in children(child)] == [RunStatus.FAILED, RunStatus.FAILED]
    sub = run.steps["sub"]
    assert sub.status is StepStatus.FAILED
    assert len(sub.failed_attempts) == 2
    assert run.record()["failedReferenceTaskName"] == "sub"
    assert "after" not in run.steps


def test_a_redelivered_sub_workflow_message_starts_no_child_and_spends_no_retry(
    worker: Any,
) -> None:
    child = f"child_{uuid.uuid4().hex[:8]}"
    register_workflow(child_flow(child, gated=True))
    key = uuid.uuid4().hex

    run = submit_workflow(parent_flow(child, count=1), {"key": key, "failures": 1})
    wait_for(lambda: get_store().client.get(f"test:attempts:gate:{key}"), timeout=30,
             what="the first child to start")
    record = get_store().get_step_records(run.id, ["sub"])["sub"]
    kept = json.loads(record[MESSAGE_FIELD])
    retries = kept.pop("retries")
    kept.pop("timelimit")
    send_message(kept, retries=retries)  # as the broker would deliver it again
    wait_for(lambda: run.steps["sub"].attempts == 2, timeout=30,
             what="the copy to be claimed")
    assert len(children(child)) == 1
    get_store().client.rpush(f"test:gate:{key}", "open", "open")

    # the one retry is left: the second child completes
    assert run.result(timeout=30) == {"attempt": 2}
    assert [k.status for k in children(child)] == [RunStatus.FAILED, RunStatus.COMPLETED]
    assert len(run.steps["sub"].failed_attempts) == 1


# -- WAIT and HUMAN: waiting again after a timeout under RETRY -------------------------------


def waiting_task(kind: str, count: int, timeout: int, delay: int = 0,
                 **inputs: Any) -> dict[str, Any]:
    return {"name": kind.lower(), "taskReferenceName": "w", "type": kind, "retryCount": count,
            "inputParameters": inputs,
            "taskDefinition": {"name": kind.lower(), "timeoutSeconds": timeout,
                               "timeoutPolicy": "RETRY", "retryDelaySeconds": delay}}


def completed(run: WorkflowRun) -> bool:
    try:
        run.complete_step("w", {"ok": True})
    except NotWaiting:
        return False  # not yet parked again
    return True


def kept_message(run: WorkflowRun) -> str | None:
    return get_store().get_step_records(run.id, ["w"]).get("w", {}).get(MESSAGE_FIELD)


def attempt_waits(run: WorkflowRun, attempt: int) -> bool:
    step = run.steps.get("w")
    return step is not None and step.status is StepStatus.IN_PROGRESS \
        and len(step.failed_attempts) == attempt - 1 and step.attempts >= attempt


@pytest.mark.parametrize("kind", ["HUMAN", "WAIT"])
def test_a_timed_out_wait_waits_again_and_can_be_completed(worker: Any, kind: str) -> None:
    run = submit_workflow(wf(waiting_task(kind, count=2, timeout=1, delay=1),
                             {"name": "echo", "taskReferenceName": "after",
                              "inputParameters": {"ok": "${w.output.ok}"}}))

    wait_for(lambda: attempt_waits(run, 2) and completed(run), timeout=30,
             what="the second attempt to wait and be completed")

    assert run.result(timeout=30) == {"ok": True}
    step = run.steps["w"]
    assert [a["error"]["type"] for a in step.failed_attempts] == ["TimeoutError"]
    assert all(gap >= 950 for gap in gaps_ms(run, "w"))


def test_a_wait_timing_out_every_attempt_times_the_run_out(worker: Any) -> None:
    run = submit_workflow(wf(waiting_task("HUMAN", count=1, timeout=1)))

    assert run.wait(timeout=30) is RunStatus.TIMED_OUT
    step = run.steps["w"]
    assert step.status is StepStatus.TIMED_OUT
    assert len(step.failed_attempts) == 1  # the retried one; the last ends the step


def test_a_redelivered_waiting_message_spends_no_retry(worker: Any) -> None:
    run = submit_workflow(wf(waiting_task("HUMAN", count=1, timeout=2)))
    kept = json.loads(wait_for(lambda: kept_message(run), timeout=30, what="the step to wait"))
    retries = kept.pop("retries")
    kept.pop("timelimit")
    send_message(kept, retries=retries)  # as the broker would deliver it again

    assert run.wait(timeout=30) is RunStatus.TIMED_OUT
    step = run.steps["w"]
    assert len(step.failed_attempts) == 1  # one retry, then the run timed out
    assert step.started_at is not None and step.ended_at is not None
    # the retry waited its own full timeout: no earlier delivery's timer cut it short
    assert (step.ended_at - step.started_at).total_seconds() >= 1.95


def test_an_earlier_attempts_wake_does_not_end_a_retried_wait(worker: Any) -> None:
    # attempt 1 times out at 2 s and waits again at once; its wake, due at 3 s, finds the
    # second attempt waiting (until 5 s), which times out at 4 s: the run times out
    run = submit_workflow(wf(waiting_task("WAIT", count=1, timeout=2, duration="3s")))

    assert run.wait(timeout=30) is RunStatus.TIMED_OUT
    assert len(run.steps["w"].failed_attempts) == 1


def test_a_retried_sub_workflow_in_a_fork_branch_still_closes_the_fork(worker: Any) -> None:
    child = f"child_{uuid.uuid4().hex[:8]}"
    register_workflow(child_flow(child))
    sub = parent_flow(child, count=1)["tasks"][0]
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
        [sub], [{"name": "echo", "taskReferenceName": "other", "inputParameters": {"v": 1}}]]}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN",
            "joinOn": ["sub", "other"]}
    after = {"name": "echo", "taskReferenceName": "after",
             "inputParameters": {"attempt": "${sub.output.attempt}"}}

    run = submit_workflow(wf(fork, join, after), {"key": uuid.uuid4().hex, "failures": 1})

    assert run.result(timeout=30) == {"attempt": 2}
    assert [k.status for k in children(child)] == [RunStatus.FAILED, RunStatus.COMPLETED]
