"""asyncComplete: an HTTP or EVENT step does its work, then waits to be completed from outside.

Real workers over a real Redis; the HTTP steps call a small local server that counts calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from app import NotWaiting, RunStatus, StepStatus, WorkflowRun, submit_workflow
from app.celery_app import celery_app
from app.dsl.validate import check_definition, parse_definition
from app.errors import DefinitionError
from app.runtime.state import get_store
from app.store.keys import event_stream
from tests.support import baton_settings, serving, wait_for


class _Counting(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"accepted": true}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    with serving(_Counting) as url, baton_settings(http_allow="127.0.0.0/8"):
        yield f"{url}/jobs"


def wf(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "async_complete", "version": 1, "schemaVersion": 2, "tasks": list(tasks),
            **fields}


def event(ref: str, sink: str, **fields: Any) -> dict[str, Any]:
    return {"name": ref, "taskReferenceName": ref, "type": "EVENT", "sink": sink,
            "asyncComplete": True, "inputParameters": {"order": "${workflow.input.order}"},
            **fields}


def echo(ref: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}


def waiting(run: WorkflowRun, ref: str) -> Any:
    """The step once it has done its work and waits (its output recorded)."""
    def parked() -> Any:
        step = run.steps.get(ref)
        record = get_store().get_step_records(run.id, [ref]).get(ref, {})
        # its route is parked before its own output is recorded
        return step if step and step.status is StepStatus.IN_PROGRESS and \
            record.get("parked") and record.get("output") else None
    return wait_for(parked, timeout=30, what=f"step {ref} to wait")


def published(sink: str) -> int:
    return int(get_store().client.xlen(event_stream(sink)))


def test_an_event_step_publishes_then_waits_for_its_completion(worker: Any) -> None:
    sink = f"conductor:{uuid.uuid4().hex}"
    run = submit_workflow(wf(event("ask", sink), echo("after", answer="${ask.output.answer}",
                                                     stream="${ask.output.event_produced}")),
                          input={"order": 7})
    step = waiting(run, "ask")
    assert step.output["event_produced"] == event_stream(sink)
    assert published(sink) == 1
    assert run.status is RunStatus.RUNNING and "after" not in run.steps

    run.complete_step("ask", {"answer": 42})

    assert run.result(timeout=30) == {"answer": 42, "stream": event_stream(sink)}
    done = run.steps["ask"]
    assert done.status is StepStatus.COMPLETED
    # the output given is merged into the one the step recorded, as Conductor's update does
    assert done.output["answer"] == 42 and done.output["eventId"] == step.output["eventId"]
    assert published(sink) == 1
    with pytest.raises(NotWaiting):
        run.complete_step("ask", {"answer": 43})


def test_a_completion_as_soon_as_the_step_waits_keeps_the_steps_own_output(
        worker: Any, service: str) -> None:
    # a service that calls back at once: the completion is tried from the moment of submit
    for round_ in range(5):
        call = {"name": "call", "taskReferenceName": "call", "type": "HTTP",
                "asyncComplete": True, "inputParameters": {"http_request": {
                    "uri": service, "method": "POST", "body": {"order": round_}}}}
        run = submit_workflow(wf(call, outputParameters={
            "code": "${call.output.response.statusCode}", "job": "${call.output.job}"}))

        def completed(run: WorkflowRun = run, job: str = f"j-{round_}") -> bool:
            try:
                run.complete_step("call", {"job": job})
            except NotWaiting:
                return False  # not waiting yet: its route is not parked
            return True

        wait_for(completed, timeout=30, interval=0, what="the step to take its completion")
        assert run.result(timeout=30) == {"code": 202, "job": f"j-{round_}"}


def test_an_http_step_calls_once_and_its_completion_ends_the_run(
        worker: Any, service: str) -> None:
    before = _Counting.calls
    call = {"name": "call", "taskReferenceName": "call", "type": "HTTP", "asyncComplete": True,
            "inputParameters": {"http_request": {"uri": service, "method": "POST",
                                                 "body": {"order": 1}}}}
    run = submit_workflow(wf(call, outputParameters={
        "code": "${call.output.response.statusCode}", "job": "${call.output.job}"}))
    waiting(run, "call")
    assert _Counting.calls == before + 1 and run.status is RunStatus.RUNNING

    run.complete_step("call", {"job": "j-1"})

    assert run.result(timeout=30) == {"code": 202, "job": "j-1"}
    assert _Counting.calls == before + 1


def test_a_step_without_async_complete_is_not_completed_from_outside(worker: Any) -> None:
    sink = f"conductor:{uuid.uuid4().hex}"
    run = submit_workflow(wf(event("ask", sink) | {"asyncComplete": False}), input={"order": 1})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    with pytest.raises(NotWaiting):
        run.complete_step("ask", {})


def test_a_redelivered_message_of_a_waiting_step_does_not_publish_again(worker: Any) -> None:
    sink = f"conductor:{uuid.uuid4().hex}"
    run = submit_workflow(wf(event("ask", sink), echo("after", v=1)), input={"order": 7})
    waiting(run, "ask")
    store = get_store()
    record = store.get_step_records(run.id, ["ask"])["ask"]
    deliveries = int(record["deliveries"])

    # the same message again, as the broker redelivers it when a worker died before its ack
    fields = store.get_run_fields(run.id, "plan", "root")
    celery_app.send_task("baton.event", args=(run.id, "ask", fields["plan"]),
                         task_id=record["taskId"], root_id=fields["root"], queue="baton.io")
    wait_for(lambda: int(store.get_step_records(run.id, ["ask"])["ask"]["deliveries"])
             > deliveries, timeout=30, what="the message to be delivered again")
    waiting(run, "ask")
    assert published(sink) == 1 and "after" not in run.steps

    run.complete_step("ask", {"answer": 1})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert published(sink) == 1


def test_a_waiting_step_past_its_timeout_times_the_run_out(worker: Any) -> None:
    sink = f"conductor:{uuid.uuid4().hex}"
    limited = event("ask", sink, taskDefinition={"name": "ask", "timeoutSeconds": 1,
                                                 "timeoutPolicy": "TIME_OUT_WF"})
    run = submit_workflow(wf(limited, echo("after", v=1)), input={"order": 7})
    assert run.wait(timeout=30) is RunStatus.TIMED_OUT
    assert run.steps["ask"].status is StepStatus.TIMED_OUT
    assert published(sink) == 1 and "after" not in run.steps
    with pytest.raises(NotWaiting):
        run.complete_step("ask", {})


def problems(*tasks: dict[str, Any]) -> list[str]:
    try:
        check_definition(parse_definition(wf(*tasks)))
    except DefinitionError as exc:
        return [f"{p.path}: {p.message}" for p in exc.problems]
    return []


def test_async_complete_is_refused_where_it_would_do_nothing() -> None:
    simple = echo("t") | {"asyncComplete": True}
    inline = {"name": "i", "taskReferenceName": "i", "type": "INLINE", "asyncComplete": True,
              "inputParameters": {"evaluatorType": "javascript", "expression": "1"}}
    (refused_simple,) = problems(simple)
    assert refused_simple.startswith("tasks[0].asyncComplete: not supported on a SIMPLE task")
    assert "HUMAN" in refused_simple
    (refused_inline,) = problems(inline)
    assert refused_inline.startswith("tasks[0].asyncComplete: not supported on a INLINE task")
    human = {"name": "h", "taskReferenceName": "h", "type": "HUMAN", "asyncComplete": True}
    assert problems(event("e", "conductor"), human) == []


def test_a_retried_async_complete_task_with_a_retry_timeout_policy_is_refused() -> None:
    call = {"name": "c", "taskReferenceName": "c", "type": "HTTP", "asyncComplete": True,
            "inputParameters": {"http_request": {"uri": "http://example.com"}},
            "taskDefinition": {"name": "c", "timeoutSeconds": 5, "timeoutPolicy": "RETRY"}}
    (refused,) = problems(call | {"retryCount": 2})
    assert refused.startswith("tasks[0].taskDefinition.timeoutPolicy: RETRY is not supported")
    assert problems(call) == []
