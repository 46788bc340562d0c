"""Publishing a task's state-change events (`onStateChange`) as its step changes state.

The step runner calls `started` once a delivery has claimed its step and resolved its input
(onScheduled, then onStart: Baton records a step only when a worker claims it), and `ended`
right after the store call that ended the step or one attempt of it (onSuccess, onFailed).
A redelivered message of a step that completed is claimed DONE and never gets here, so a
transition is published once; a worker lost between the store call and the publish loses
the event (at most once). Each event goes to the Redis stream of its `type`, as an EVENT
task's input goes to its sink's, with its payload resolved against the run at that moment:
`${<own ref>.status|input|output}` read the step as it is now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from app.compiler.plan import StepSpec
from app.config import get_settings
from app.dsl.expressions import TASK_ID_ROOT, WORKFLOW_ROOT, parse_parameter
from app.dsl.state_changes import FAILED, SCHEDULED, STARTED, SUCCEEDED, events_for
from app.payloads import InvalidPayload, check_payload
from app.runtime.scope import build_scope, record_document
from app.runtime.state import get_store
from app.store import StepStatus

_STATE_OF: dict[str, str] = {
    StepStatus.COMPLETED: SUCCEEDED,
    StepStatus.FAILED: FAILED,
    StepStatus.FAILED_WITH_TERMINAL_ERROR: FAILED,
    StepStatus.TIMED_OUT: FAILED,
    # an optional step whose work failed: the run goes on, but the task did fail
    StepStatus.COMPLETED_WITH_ERRORS: FAILED,
}
"""The state a step reaches with each status its end records."""


def started(run_id: str, spec: StepSpec, recorded_as: str, step_input: Any) -> None:
    """Publish onScheduled and onStart of a step a delivery has just claimed."""
    if spec.task.on_state_change:
        _publish(run_id, spec, recorded_as, (SCHEDULED, STARTED),
                 {"status": StepStatus.IN_PROGRESS.value, "input": step_input})


def ended(run_id: str, spec: StepSpec, recorded_as: str, status: str | None = None) -> None:
    """Publish the state a step's end took it to: its recorded status, or `status` for an
    attempt that failed and will be retried (the record is SCHEDULED again by then)."""
    if spec.task.on_state_change:
        _publish(run_id, spec, recorded_as, None, {"status": status} if status else {})


def _publish(
    run_id: str, spec: StepSpec, recorded_as: str, states: Sequence[str] | None,
    overlay: Mapping[str, Any],
) -> None:
    store = get_store()
    templates = {id(event): parse_parameter(event.payload or {})
                 for events in spec.task.on_state_change.values() for event in events}
    roots = set().union(*(t.roots() for t in templates.values())) - {WORKFLOW_ROOT, TASK_ID_ROOT}
    reads = [recorded_as, *sorted(roots - {spec.ref, recorded_as})]
    run, variables, records = store.read_state(run_id, reads)
    own = record_document(records.pop(recorded_as, {}))
    own.update(overlay)
    if states is None:
        state = _STATE_OF.get(str(own.get("status")))
        states = (state,) if state else ()
    scope = build_scope(run, records, None, variables)
    scope[spec.ref] = own
    for state in states:
        for event in events_for(spec.task, state):
            fields = {"workflowId": run_id, "taskReferenceName": recorded_as,
                      "workflowType": run.get("workflowType", ""), "state": state,
                      "status": str(own.get("status") or "")}
            fields.update(_payload(templates[id(event)].resolve(scope)))
            store.publish_event(event.type, fields)


def _payload(value: Any) -> dict[str, str]:
    """The entry's `payload` (JSON text), or its `error` when the payload cannot be sent."""
    settings = get_settings()
    try:
        return {"payload": check_payload(value, "payload", max_depth=settings.max_json_depth,
                                         max_bytes=settings.max_input_bytes)}
    except InvalidPayload as exc:
        return {"error": json.dumps({"type": type(exc).__name__, "message": str(exc)})}
