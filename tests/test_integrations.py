"""HTTP against a local server and EVENT into a Redis stream, on a real worker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app import RunStatus, WorkflowFailed, submit_workflow
from app.runtime.state import get_store
from tests.support import send_json


class _Service(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length) or b"null")
        status = 200 if self.path == "/ok" else 503
        send_json(self, status, {"echo": sent, "auth": self.headers.get("X-Token")})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def http_workflow(uri: str) -> dict[str, Any]:
    return {"name": "http", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "call", "taskReferenceName": "call", "type": "HTTP", "inputParameters": {
            "http_request": {"uri": uri, "method": "POST", "headers": {"X-Token": "t"},
                             "body": {"order": "${workflow.input.order}"}}}}],
        "outputParameters": {"answer": "${call.output.response.body}",
                             "code": "${call.output.response.statusCode}"}}


def test_http_sends_the_request_and_records_the_response(worker: Any, service: str) -> None:
    run = submit_workflow(http_workflow(f"{service}/ok"), input={"order": 7})
    assert run.result(timeout=30) == {"answer": {"echo": {"order": 7}, "auth": "t"},
                                      "code": 200}


def test_http_fails_the_step_on_an_answer_outside_2xx(worker: Any, service: str) -> None:
    run = submit_workflow(http_workflow(f"{service}/down"), input={"order": 7})
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)
    assert caught.value.error is not None
    assert caught.value.error["type"] == "HttpStatusError"
    assert "answered 503" in caught.value.error["message"]


def test_event_publishes_the_input_to_the_sinks_stream(worker: Any) -> None:
    run = submit_workflow({"name": "events", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "emit", "taskReferenceName": "emit", "type": "EVENT", "sink": "sqs:orders",
         "inputParameters": {"order": "${workflow.input.order}"}}]}, input={"order": 9})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    produced = run.steps["emit"].output
    entries = get_store().client.xrange(produced["event_produced"], produced["eventId"],
                                        produced["eventId"])
    assert produced["event_produced"] == "baton:events:sqs:orders"
    assert json.loads(entries[0][1]["payload"]) == {"order": 9}
    assert entries[0][1]["workflowId"] == run.id
