"""State-change events on real workers: a task's `onStateChange`, the workflow status listener.

Each test reads the Redis streams the events go to, as another system would (XRANGE).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

import app
from app import RunStatus, StepStatus, submit_workflow
from app.dsl.validate import check_definition, parse_definition
from app.errors import DefinitionError
from app.runtime.state import get_store
from app.store.keys import event_stream
from tests.support import wait_for


def wf(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "events", "version": 3, "schemaVersion": 2, "tasks": list(tasks), **fields}


def task(ref: str, name: str = "echo", **fields: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, **fields}


def entries(sink: str) -> list[dict[str, Any]]:
    """Every entry of a sink's stream, oldest first, with its payload parsed."""
    found = []
    for _, fields in get_store().client.xrange(event_stream(sink)):
        entry = dict(fields)
        if "payload" in entry:
            entry["payload"] = json.loads(entry["payload"])
        found.append(entry)
    return found


def published(sink: str, count: int) -> list[dict[str, Any]]:
    """The sink's entries once it has `count`: a step's end is published right after the
    store call that ended it, which may have ended the run first."""
    wait_for(lambda: len(entries(sink)) >= count, timeout=30, what=f"{count} events")
    return entries(sink)


def new_sink() -> str:
    return f"test:{uuid.uuid4().hex}"


def gate_entered(key: str) -> bool:
    return bool(get_store().client.get(f"test:attempts:gate:{key}"))


def open_gate(key: str) -> None:
    get_store().client.rpush(f"test:gate:{key}", "open")


# --- onStateChange ---------------------------------------------------------------------------

def test_a_step_publishes_its_templated_payloads_in_order(worker: Any) -> None:
    sink = new_sink()
    run = submit_workflow(wf(task("a", inputParameters={"x": "${workflow.input.x}"},
                                  onStateChange={
        "onScheduled,onStart": [{"type": sink, "payload": {
            "run": "${workflow.workflowId}", "status": "${a.status}", "x": "${a.input.x}"}}],
        "onSuccess": [{"type": sink, "payload": {
            "status": "${a.status}", "out": "${a.output.x}", "note": "done ${a.output.x}"}}],
    })), input={"x": 7})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    found = published(sink, 3)
    assert [(e["state"], e["status"]) for e in found] == [
        ("onScheduled", "IN_PROGRESS"), ("onStart", "IN_PROGRESS"), ("onSuccess", "COMPLETED")]
    assert found[0]["payload"] == found[1]["payload"] == {
        "run": run.id, "status": "IN_PROGRESS", "x": 7}
    assert found[2]["payload"] == {"status": "COMPLETED", "out": 7, "note": "done 7"}
    assert {(e["workflowId"], e["taskReferenceName"], e["workflowType"]) for e in found} == {
        (run.id, "a", "events")}


def test_a_failing_step_publishes_on_failed(worker: Any) -> None:
    sink = new_sink()
    events = {"onSuccess,onFailed": [{"type": sink, "payload": {
        "status": "${r.status}", "reason": "${r.reasonForIncompletion}"}}]}
    run = submit_workflow(wf(task("r", "refuse", inputParameters={"reason": "closed"},
                                  onStateChange=events)))

    assert run.wait(timeout=30) is RunStatus.FAILED
    [failed] = published(sink, 1)
    assert failed["state"] == "onFailed"
    assert failed["status"] == failed["payload"]["status"] == StepStatus.FAILED.value
    assert failed["payload"]["reason"] == "Refused: closed"


def test_each_failed_attempt_publishes_on_failed_and_its_retry_starts_again(
    worker: Any,
) -> None:
    sink = new_sink()
    events = {state: [{"type": sink, "payload": {"status": "${f.status}"}}]
              for state in ("onStart", "onSuccess", "onFailed")}
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("f", "flaky", inputParameters={"key": key, "failures": 1},
                                  onStateChange=events)))

    assert run.result(timeout=30) == {"attempt": 2}
    assert [(e["state"], e["payload"]["status"]) for e in published(sink, 4)] == [
        ("onStart", "IN_PROGRESS"), ("onFailed", "FAILED"),
        ("onStart", "IN_PROGRESS"), ("onSuccess", "COMPLETED")]


def test_a_redelivered_message_publishes_nothing_twice(worker: Any) -> None:
    sink, status_sink = new_sink(), new_sink()
    events = {"onStart,onSuccess": [{"type": sink, "payload": {"s": "${f.status}"}}]}
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("f", "flaky", inputParameters={"key": key, "failures": 0},
                                  onStateChange=events),
                             workflowStatusListenerEnabled=True,
                             workflowStatusListenerSink=status_sink))
    assert run.result(timeout=30) == {"attempt": 1}
    published(sink, 2)

    again = app.celery.signature("tasks.flaky", args=(run.id, "f", run.record()["plan"],
                                                      True)).apply_async()
    wait_for(again.ready, timeout=30, what="the redelivered message to be processed")

    assert again.successful()
    assert [e["state"] for e in entries(sink)] == ["onStart", "onSuccess"]
    assert len(entries(status_sink)) == 1


# --- the workflow status listener --------------------------------------------------------------

SUMMARY_FIELDS = {
    "workflowType", "version", "workflowId", "correlationId", "startTime", "updateTime",
    "endTime", "status", "input", "executionTime", "failedReferenceTaskNames",
    "failedTaskNames", "priority", "parentWorkflowId",
}


def iso(ms: str) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_every_run_end_publishes_one_summary(worker: Any) -> None:
    sink = new_sink()
    listener = {"workflowStatusListenerEnabled": True, "workflowStatusListenerSink": sink}
    cancel_key, pause_key, slow_key = (uuid.uuid4().hex for _ in range(3))
    runs = {
        "COMPLETED": submit_workflow(wf(task("a", inputParameters={"v": "${workflow.input.v}"}),
                                        **listener), input={"v": 1}, correlation_id="c-1"),
        "FAILED": submit_workflow(wf(task("r", "refuse"), **listener)),
        "TERMINATE": submit_workflow(wf(task("t", "terminate", type="TERMINATE", inputParameters={
            "terminationStatus": "TERMINATED", "terminationReason": "enough"}), **listener)),
        "CANCELLED": submit_workflow(wf(task("g", "gate", inputParameters={"key": cancel_key}),
                                        **listener)),
        "TIMED_OUT": submit_workflow(wf(task("g", "gate", inputParameters={"key": slow_key}),
                                        timeoutSeconds=1, **listener)),
        "RESUMED": submit_workflow(wf(task("g", "gate", inputParameters={"key": pause_key}),
                                      **listener)),
    }
    wait_for(lambda: gate_entered(cancel_key) and gate_entered(pause_key), timeout=30,
             what="the gated steps to start")
    runs["CANCELLED"].cancel("not needed")
    runs["RESUMED"].pause()
    open_gate(pause_key)
    wait_for(lambda: runs["RESUMED"].steps["g"].status is StepStatus.COMPLETED, timeout=30,
             what="the paused run's step to complete")
    assert runs["RESUMED"].status is RunStatus.PAUSED  # its end waits for the resume
    runs["RESUMED"].resume()
    ends = {name: run.wait(timeout=30) for name, run in runs.items()}
    for key in (cancel_key, slow_key):
        open_gate(key)  # the cancelled steps finish: their runs must not end again
    wait_for(lambda: not any(get_store().client.llen(f"test:gate:{k}")
                             for k in (cancel_key, slow_key)),
             timeout=30, what="the cancelled steps to take their gates")

    assert ends == {"COMPLETED": RunStatus.COMPLETED, "FAILED": RunStatus.FAILED,
                    "TERMINATE": RunStatus.TERMINATED, "CANCELLED": RunStatus.TERMINATED,
                    "TIMED_OUT": RunStatus.TIMED_OUT, "RESUMED": RunStatus.COMPLETED}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for entry in entries(sink):
        by_run.setdefault(entry["workflowId"], []).append(entry)
    assert set(by_run) == {run.id for run in runs.values()}
    for name, run in runs.items():
        [entry] = by_run[run.id]
        summary, record = entry["payload"], run.record()
        assert SUMMARY_FIELDS <= set(summary), name
        assert entry["status"] == summary["status"] == ends[name].value, name
        assert entry["eventType"] == ("completed" if ends[name] is RunStatus.COMPLETED
                                      else "terminated"), name
        assert (summary["workflowId"], summary["workflowType"], summary["version"]) == (
            run.id, "events", 3)
        assert summary["endTime"] == summary["updateTime"] == iso(record["endTime"]), name
        assert summary["startTime"] == iso(record["createTime"]), name
        assert summary["executionTime"] == int(record["endTime"]) - int(record["startTime"])
        assert summary.get("reasonForIncompletion") == record.get("reasonForIncompletion")

    completed = by_run[runs["COMPLETED"].id][0]["payload"]
    assert json.loads(completed["input"]) == {"v": 1}
    assert json.loads(completed["output"]) == {"v": 1}
    assert completed["correlationId"] == "c-1"
    assert completed["failedTaskNames"] == [] and completed["failedReferenceTaskNames"] == ""
    failed = by_run[runs["FAILED"].id][0]["payload"]
    assert (failed["failedReferenceTaskNames"], failed["failedTaskNames"]) == ("r", ["refuse"])
    assert by_run[runs["CANCELLED"].id][0]["payload"]["reasonForIncompletion"] == "not needed"


def test_the_listener_without_a_sink_publishes_to_the_default_stream(worker: Any) -> None:
    run = submit_workflow(wf(task("a"), workflowStatusListenerEnabled=True))
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert [e["workflowId"] for e in entries("workflow_status")].count(run.id) == 1


def test_a_run_without_the_listener_publishes_nothing(worker: Any) -> None:
    sink = new_sink()
    run = submit_workflow(wf(task("a"), workflowStatusListenerSink=sink))
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert entries(sink) == []


# --- definition-time checks --------------------------------------------------------------------

def problems(data: dict[str, Any]) -> list[str]:
    try:
        check_definition(parse_definition(data), strict=False)
    except DefinitionError as exc:
        return [f"{p.path}: {p.message}" for p in exc.problems]
    return []


@pytest.mark.parametrize(("events", "expected"), [
    ({"onSucces": [{"type": "q"}]},
     "tasks[0].onStateChange.onSucces: unknown state 'onSucces' (did you mean 'onSuccess'?)"),
    ({"onStart, onDone": [{"type": "q"}]},
     "tasks[0].onStateChange.onStart, onDone: unknown state 'onDone' (expected onScheduled, "
     "onStart, onSuccess, onFailed, onCancelled)"),
    ({"onStart": [{"type": " "}]},
     "tasks[0].onStateChange.onStart[0].type: must name a sink (the stream it goes to)"),
    ({"onStart": [{"type": "q", "payload": {"a": ["${t.output"]}}]},
     "tasks[0].onStateChange.onStart[0].payload.a[0]: unterminated expression '${t.output' "
     "(missing '}')"),
])
def test_a_bad_on_state_change_is_refused_precisely(
    events: dict[str, Any], expected: str,
) -> None:
    assert problems(wf(task("t", onStateChange=events))) == [expected]


def test_payloads_are_checked_like_inputs_and_may_read_their_own_task() -> None:
    good = {"onSuccess": [{"type": "q", "payload": {
        "own": "${t.output}", "run": "${workflow.input}", "before": "${a.output}"}}]}
    assert problems(wf(task("a"), task("t", onStateChange=good))) == []
    later = {"onStart": [{"type": "q", "payload": {"x": "${b.output}"}}]}
    assert problems(wf(task("t", onStateChange=later), task("b")), ) == []  # a warning only
    with pytest.raises(DefinitionError, match=r"onStart\[0\]\.payload\.x: .*'b', which runs "
                                              "later"):
        check_definition(parse_definition(wf(task("t", onStateChange=later), task("b"))),
                         strict=True)
