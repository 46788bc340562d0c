"""State-change events of steps that end outside the step runner, and of cancelled steps.

WAIT, HUMAN, SUB_WORKFLOW, DO_WHILE, JOIN and EXCLUSIVE_JOIN publish onScheduled/onStart
when they start and onSuccess/onFailed where they end (an outside completion, a timeout,
the child's end, the loop's last decision); a step cancelled with its run publishes
onCancelled, once. On real workers; each test reads the streams as another system would.
"""

from __future__ import annotations

import uuid
from typing import Any

from app import RunStatus, StepStatus, WorkflowRun, submit_workflow
from app.runtime import state_events
from app.runtime.state import get_store
from app.store.keys import cancel_events_key
from tests.support import wait_for
from tests.test_state_events import entries, gate_entered, new_sink, open_gate, published

ALL_STATES = ("onScheduled", "onStart", "onSuccess", "onFailed", "onCancelled")


def wf(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "ends", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **fields}


def watched(sink: str, ref: str, **task: Any) -> dict[str, Any]:
    """A task that publishes every state to `sink`, with its status and output then."""
    events = {",".join(ALL_STATES): [{"type": sink, "payload": {
        "status": f"${{{ref}.status}}", "output": f"${{{ref}.output}}"}}]}
    return {"name": task.pop("name", ref), "taskReferenceName": ref,
            "onStateChange": events, **task}


def echo(ref: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}


def by_ref(sink: str) -> dict[str, list[tuple[str, str]]]:
    """(state, payload status) of each event of the sink, per task ref."""
    found: dict[str, list[tuple[str, str]]] = {}
    for entry in entries(sink):
        found.setdefault(entry["taskReferenceName"], []).append(
            (entry["state"], entry["payload"]["status"]))
        assert entry["status"] == entry["payload"]["status"]
    return found


def waiting(run: WorkflowRun, ref: str) -> bool:
    step = run.steps.get(ref)
    return step is not None and step.status is StepStatus.IN_PROGRESS \
        and step.output is not None


STARTED = [("onScheduled", "IN_PROGRESS"), ("onStart", "IN_PROGRESS")]
SUCCEEDED = [*STARTED, ("onSuccess", "COMPLETED")]


def test_steps_that_end_outside_the_runner_publish_each_state(worker: Any) -> None:
    sink = new_sink()
    child = {"name": "ends_child", "version": 1, "schemaVersion": 2,
             "tasks": [echo("inner", v="${workflow.input.v}")],
             "outputParameters": {"got": "${inner.output.v}"}}
    fork = {"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN", "forkTasks": [
        [watched(sink, "hold", type="HUMAN")], [echo("side", v=2)]]}
    switch = {"name": "switch", "taskReferenceName": "pick", "type": "SWITCH",
              "evaluatorType": "value-param", "expression": "x",
              "inputParameters": {"x": "a"},
              "decisionCases": {"a": [echo("case_a", v="a")], "b": [echo("case_b", v="b")]}}
    run = submit_workflow(wf(
        watched(sink, "pause", type="WAIT"),
        watched(sink, "sub", type="SUB_WORKFLOW", inputParameters={"v": 1},
                subWorkflowParam={"name": "ends_child", "workflowDefinition": child}),
        watched(sink, "loop", type="DO_WHILE", loopCondition="$.loop.iteration < 2",
                loopOver=[echo("each", i="${loop.output.iteration}")]),
        fork, watched(sink, "fan_join", type="JOIN", joinOn=["hold", "side"]),
        switch, watched(sink, "one", type="EXCLUSIVE_JOIN", joinOn=["case_a", "case_b"]),
    ))

    wait_for(lambda: waiting(run, "pause"), timeout=30, what="the WAIT step to wait")
    assert by_ref(sink) == {"pause": STARTED}
    run.complete_step("pause", {"by": "ops"})
    wait_for(lambda: waiting(run, "hold"), timeout=30, what="the HUMAN step to wait")
    run.complete_step("hold", {"ok": True})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    wait_for(lambda: len(entries(sink)) >= 18, timeout=30, what="18 events")
    assert by_ref(sink) == {ref: SUCCEEDED for ref in (
        "pause", "sub", "loop", "hold", "fan_join", "one")}
    outputs = {e["taskReferenceName"]: e["payload"]["output"] for e in entries(sink)
               if e["state"] == "onSuccess"}
    assert outputs["pause"] == {"by": "ops"} and outputs["hold"] == {"ok": True}
    assert outputs["sub"]["got"] == 1
    assert outputs["loop"]["iteration"] == 2
    assert outputs["fan_join"] == {"hold": {"ok": True}, "side": {"v": 2}}
    assert outputs["one"] == {"v": "a"}


def test_steps_that_fail_outside_the_runner_publish_on_failed(worker: Any) -> None:
    sink = new_sink()
    failing_child = {"name": "ends_failing_child", "version": 1, "schemaVersion": 2,
                     "tasks": [{"name": "refuse", "taskReferenceName": "inner",
                                "inputParameters": {"reason": "no"}}]}
    runs = {
        "sub": submit_workflow(wf(watched(
            sink, "sub", type="SUB_WORKFLOW",
            subWorkflowParam={"name": "ends_failing_child",
                              "workflowDefinition": failing_child}))),
        "loop": submit_workflow(wf(watched(
            sink, "loop", type="DO_WHILE", loopCondition="$.nothing.here > 1",
            loopOver=[echo("each")]))),
        "pause": submit_workflow(wf(watched(
            sink, "pause", type="WAIT",
            taskDefinition={"name": "pause", "timeoutSeconds": 1}))),
    }

    assert {name: run.wait(timeout=30) for name, run in runs.items()} == {
        "sub": RunStatus.FAILED, "loop": RunStatus.FAILED, "pause": RunStatus.TIMED_OUT}
    wait_for(lambda: len(entries(sink)) >= 9, timeout=30, what="9 events")
    assert by_ref(sink) == {
        "sub": [*STARTED, ("onFailed", "FAILED")],
        "loop": [*STARTED, ("onFailed", "FAILED")],
        "pause": [*STARTED, ("onFailed", "TIMED_OUT")]}


def test_steps_cancelled_with_their_run_publish_on_cancelled_once(worker: Any) -> None:
    sink, key = new_sink(), uuid.uuid4().hex
    fork = {"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN", "forkTasks": [
        [watched(sink, "slow", name="gate", inputParameters={"key": key})],
        [watched(sink, "hold", type="HUMAN")]]}
    cancelled = {"onCancelled": [{"type": sink, "payload": {
        "status": "${after.status}", "run": "${workflow.workflowId}"}}]}
    run = submit_workflow(wf(fork, watched(sink, "fan_join", type="JOIN",
                                           joinOn=["slow", "hold"]),
                             echo("after") | {"onStateChange": cancelled}))
    wait_for(lambda: gate_entered(key) and waiting(run, "hold"), timeout=30,
             what="both branches to start")

    run.cancel("not needed")
    open_gate(key)  # the cancelled step's work ends: it publishes nothing more
    wait_for(lambda: not get_store().client.llen(f"test:gate:{key}"), timeout=30,
             what="the cancelled step to take its gate")
    wait_for(lambda: run.steps["slow"].ended_at is not None, timeout=30,
             what="the cancelled step's record")
    found = published(sink, 7)

    assert run.status is RunStatus.TERMINATED
    # the JOIN waited on branches that had started: Conductor's would be IN_PROGRESS, and
    # is cancelled with them; the step after it never started and is not cancelled
    assert by_ref(sink) == {"slow": [*STARTED, ("onCancelled", "CANCELED")],
                            "hold": [*STARTED, ("onCancelled", "CANCELED")],
                            "fan_join": [("onCancelled", "CANCELED")]}
    assert [e["payload"] for e in found if e["taskReferenceName"] == "slow"][-1] == {
        "status": "CANCELED", "output": None}
    assert not get_store().client.exists(cancel_events_key(run.id))
    state_events.cancelled(run.id)  # drained: a second drain publishes nothing
    assert len(entries(sink)) == 7


def test_a_join_left_waiting_by_a_failed_run_publishes_on_cancelled(worker: Any) -> None:
    sink = new_sink()
    fork = {"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN", "forkTasks": [
        [{"name": "refuse", "taskReferenceName": "bad", "inputParameters": {"reason": "x"}}],
        [echo("good", v=1)]]}
    run = submit_workflow(wf(fork, watched(sink, "fan_join", type="JOIN",
                                           joinOn=["bad", "good"])))

    assert run.wait(timeout=30) is RunStatus.FAILED
    [event] = published(sink, 1)
    assert (event["state"], event["payload"]) == (
        "onCancelled", {"status": "CANCELED", "output": None})
    assert run.steps["fan_join"].status is StepStatus.CANCELED


def test_a_run_that_times_out_cancels_its_steps_with_on_cancelled(worker: Any) -> None:
    sink, key = new_sink(), uuid.uuid4().hex
    run = submit_workflow(wf(watched(sink, "slow", name="gate", inputParameters={"key": key}),
                             timeoutSeconds=1))

    assert run.wait(timeout=30) is RunStatus.TIMED_OUT
    open_gate(key)
    found = published(sink, 3)
    assert [(e["state"], e["payload"]["status"]) for e in found] == [
        *STARTED, ("onCancelled", "CANCELED")]


def test_a_step_cancelled_in_a_loop_iteration_publishes_under_its_iteration_ref(
    worker: Any,
) -> None:
    sink = new_sink()
    run = submit_workflow(wf(watched(sink, "loop", type="DO_WHILE",
                                     loopCondition="$.loop.iteration < 3",
                                     loopOver=[watched(sink, "pause", type="WAIT")])))
    wait_for(lambda: waiting(run, "pause__1"), timeout=30, what="the first iteration to wait")

    run.cancel("stop")
    published(sink, 6)

    assert by_ref(sink) == {"loop": [*STARTED, ("onCancelled", "CANCELED")],
                            "pause__1": [*STARTED, ("onCancelled", "CANCELED")]}
