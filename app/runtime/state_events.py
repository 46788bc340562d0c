"""Publishing a task's state-change events (`onStateChange`) as its step changes state.

The step runner calls `started` once a delivery has claimed its step and resolved its input
(onScheduled, then onStart: Baton records a step only when a worker claims it), and `ended`
right after the store call that ended the step or one attempt of it (onSuccess, onFailed).
A redelivered message of a step that completed is claimed DONE and never gets here, so a
transition is published once; a worker lost between the store call and the publish loses
the event (at most once). Each event goes to the Redis stream of its `type`, as an EVENT
task's input goes to its sink's, with its payload resolved against the run at that moment:
`${<own ref>.status|input|output}` read the step as it is now.

Steps that end outside the step runner (a WAIT or HUMAN step completed from outside or
timed out, a SUB_WORKFLOW step whose child ended, a loop's last decision) are published by
`step_ended`, called right after the store call that ended them. A step cancelled with its
run (terminated, timed out, or a JOIN left waiting by a run that failed) is noted by the
Lua call that cancelled it; the run's end hook then calls `cancelled`, which publishes each
noted step's onCancelled and takes the note away in one Redis call: never twice. A process
lost between the run's end and its hook leaves the notes with the run (they expire with
it) and the events unpublished: at most once, like every other state event.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from app.compiler.plan import Plan, StepSpec
from app.config import get_settings
from app.dsl.expressions import TASK_ID_ROOT, WORKFLOW_ROOT, parse_parameter
from app.dsl.state_changes import (
    CANCELLED,
    FAILED,
    SCHEDULED,
    STARTED,
    SUCCEEDED,
    events_for,
)
from app.errors import BatonError
from app.payloads import InvalidPayload, check_payload
from app.runtime.scope import build_scope, record_document
from app.runtime.state import get_store, plans
from app.store import StepStatus

_STATE_OF: dict[str, str] = {
    StepStatus.COMPLETED: SUCCEEDED,
    StepStatus.FAILED: FAILED,
    StepStatus.FAILED_WITH_TERMINAL_ERROR: FAILED,
    StepStatus.TIMED_OUT: FAILED,
    # an optional step whose work failed: the run goes on, but the task did fail
    StepStatus.COMPLETED_WITH_ERRORS: FAILED,
}
"""The state a step reaches with each status its end records. CANCELED is not here: only
the note of the call that cancelled a step publishes onCancelled (see `cancelled`), so a
step's own end, found cancelled, publishes nothing."""

_ITERATION: Final = re.compile(r"(.+)__\d+")
log = logging.getLogger(__name__)


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


def step_ended(run_id: str, recorded_as: str, plan: Plan | None = None) -> None:
    """Publish the end of a step that ended outside the step runner (onSuccess, onFailed),
    as its record now says; `plan` is its run's, read from the run when not given."""
    spec = _spec_of(run_id, recorded_as, plan)
    if spec is not None:
        ended(run_id, spec, recorded_as)


def cancelled(run_id: str) -> None:
    """Publish onCancelled of each step the run's end cancelled, once (see the module)."""
    store = get_store()
    refs = store.cancelled_steps(run_id)
    if not refs:
        return
    try:
        plan = plans.get(store.get_run_fields(run_id, "plan").get("plan", ""))
    except BatonError as exc:  # the definition expired: nothing says what to publish
        log.warning("run %s: onCancelled of %s not published: %s", run_id, sorted(refs), exc)
        return
    for ref in sorted(refs):
        spec = _spec_of(run_id, ref, plan)
        entries = _entries(run_id, spec, ref, (CANCELLED,), {}) \
            if spec is not None and events_for(spec.task, CANCELLED) else []
        store.publish_cancelled(run_id, ref, entries)


def _spec_of(run_id: str, recorded_as: str, plan: Plan | None) -> StepSpec | None:
    """The spec of the step recorded as `recorded_as` (`<ref>__<n>` in loop iteration n),
    a branch a dynamic fork defined included; None if the run has no such step."""
    if plan is None:
        try:
            plan = plans.get(get_store().get_run_fields(run_id, "plan").get("plan", ""))
        except BatonError:  # the run, or its definition, is gone
            return None
    iteration = _ITERATION.fullmatch(recorded_as)
    refs = [recorded_as, iteration.group(1)] if iteration else [recorded_as]
    for ref in refs:
        if ref in plan.steps:
            return plan.steps[ref]
    from app.runtime.step import _dynamic_spec  # the step runner publishes through here

    for ref in refs:
        try:
            return _dynamic_spec(run_id, ref)
        except KeyError:
            continue
    return None


def _publish(
    run_id: str, spec: StepSpec, recorded_as: str, states: Sequence[str] | None,
    overlay: Mapping[str, Any],
) -> None:
    store = get_store()
    for sink, fields in _entries(run_id, spec, recorded_as, states, overlay):
        store.publish_event(sink, fields)


def _entries(
    run_id: str, spec: StepSpec, recorded_as: str, states: Sequence[str] | None,
    overlay: Mapping[str, Any],
) -> list[tuple[str, dict[str, str]]]:
    """(sink, fields) of each event the step publishes on reaching `states`, or the state
    its record's status says it reached (a cancelled step: onCancelled while it is still
    CANCELED)."""
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
    elif CANCELLED in states and own.get("status") != StepStatus.CANCELED:
        states = ()  # its run was reopened since: the step is no longer cancelled
    scope = build_scope(run, records, None, variables)
    scope[spec.ref] = own
    found = []
    for state in states:
        for event in events_for(spec.task, state):
            fields = {"workflowId": run_id, "taskReferenceName": recorded_as,
                      "workflowType": run.get("workflowType", ""), "state": state,
                      "status": str(own.get("status") or "")}
            fields.update(_payload(templates[id(event)].resolve(scope)))
            found.append((event.type, fields))
    return found


def _payload(value: Any) -> dict[str, str]:
    """The entry's `payload` (JSON text), or its `error` when the payload cannot be sent."""
    settings = get_settings()
    try:
        return {"payload": check_payload(value, "payload", max_depth=settings.max_json_depth,
                                         max_bytes=settings.max_input_bytes)}
    except InvalidPayload as exc:
        return {"error": json.dumps({"type": type(exc).__name__, "message": str(exc)})}
