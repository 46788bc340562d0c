"""HTTP and EVENT: steps that talk to other systems.

HTTP calls a URL through httpx; only a 2xx answer completes the step. EVENT publishes
the step's input to a Redis stream named from its sink, so other systems (choreography)
can consume it with XREAD or a consumer group.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from app.compiler.canvas import CONTROL_TASKS
from app.policy import StepPolicy
from app.runtime.operators import OperatorError
from app.runtime.state import get_store
from app.runtime.step import StepContext, step_task


class HttpStatusError(OperatorError):
    """An HTTP step got an answer outside 2xx."""


def _http(context: StepContext) -> dict[str, Any]:
    request = (context.input or {}).get("http_request")
    if not isinstance(request, dict) or not request.get("uri"):
        raise OperatorError("HTTP needs inputParameters.http_request with a uri")
    method = str(request.get("method") or "GET").upper()
    headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
    if request.get("accept"):
        headers.setdefault("Accept", str(request["accept"]))
    body = request.get("body")
    content: bytes | None = None
    if body is not None:
        headers.setdefault("Content-Type", str(request.get("contentType") or
                                               "application/json"))
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    timeout = httpx.Timeout(
        _seconds(request.get("readTimeOut"), 30.0),
        connect=_seconds(request.get("connectionTimeOut"), 10.0),
    )
    try:
        answer = httpx.request(method, str(request["uri"]), headers=headers, content=content,
                               timeout=timeout)
    except httpx.HTTPError as exc:
        raise OperatorError(f"{method} {request['uri']}: {exc}") from None
    response = {"statusCode": answer.status_code, "reasonPhrase": answer.reason_phrase,
                "headers": dict(answer.headers), "body": _body(answer)}
    if not 200 <= answer.status_code < 300:
        raise HttpStatusError(f"{method} {request['uri']} answered {answer.status_code} "
                              f"{answer.reason_phrase}")
    return {"response": response}


def _seconds(milliseconds: Any, default: float) -> float:
    return float(milliseconds) / 1000 if isinstance(milliseconds, int | float) else default


def _body(answer: httpx.Response) -> Any:
    if "json" in answer.headers.get("content-type", ""):
        try:
            return answer.json()
        except ValueError:
            pass
    return answer.text


def _publish(context: StepContext) -> dict[str, Any]:
    """Publish the step's input to the Redis stream of its sink."""
    sink = context.spec.task.sink
    if not sink:
        raise OperatorError("EVENT needs a sink")
    fields = {"workflowId": context.run_id, "taskReferenceName": context.record_ref,
              "workflowType": context.plan.definition.name,
              "payload": json.dumps(context.input)}
    stream, event_id = get_store().publish_event(sink, fields)
    return {"event_produced": stream, "eventId": event_id, "sink": sink}


# retried as the task's taskDefinition says (an outage is often brief)
http = step_task(CONTROL_TASKS["HTTP"], _http, policy=StepPolicy(),
                 doc="Call a URL; only a 2xx answer completes the step.")
event = step_task(CONTROL_TASKS["EVENT"], _publish)
