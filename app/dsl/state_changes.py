"""State-change events of a definition: a task's `onStateChange`, the workflow's status listener.

`onStateChange` maps state names to the events published when the task reaches that state;
a key may name several states at once, comma-separated (`"onSuccess,onFailed"`), as
Conductor's own definitions write them. Each event is a StateChangeEvent: `type` names the
sink (the stream it goes to, as an EVENT task's `sink` does) and `payload` is templated like
`inputParameters`, resolved against the run when the state is reached.

A workflow with `workflowStatusListenerEnabled` publishes a summary of each run end to
`workflowStatusListenerSink` (STATUS_SINK when none is given).

Pure: which states there are, what a task asks for, and what is wrong with it; no Redis.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, Final

from app.dsl.model import StateChangeEvent, WorkflowDef, WorkflowTask

SCHEDULED: Final = "onScheduled"
STARTED: Final = "onStart"
SUCCEEDED: Final = "onSuccess"
FAILED: Final = "onFailed"
CANCELLED: Final = "onCancelled"

STATES: Final = (SCHEDULED, STARTED, SUCCEEDED, FAILED, CANCELLED)
"""Conductor's state names, in the order a task goes through them."""

STATUS_SINK: Final = "workflow_status"
"""The sink of a workflow status listener enabled without workflowStatusListenerSink."""


def states_of(key: str) -> list[str]:
    """The state names a key of `onStateChange` stands for (`"onSuccess, onFailed"`)."""
    return [name.strip() for name in key.split(",")]


def events_for(task: WorkflowTask, state: str) -> list[StateChangeEvent]:
    """The events a task publishes on reaching `state`, in the order its keys give them."""
    return [event for key, events in task.on_state_change.items()
            if state in states_of(key) for event in events]


def status_sink(definition: WorkflowDef) -> str | None:
    """The sink a run's end is published to, or None when the status listener is off."""
    if not definition.workflow_status_listener_enabled:
        return None
    return definition.workflow_status_listener_sink or STATUS_SINK


def state_change_problems(task: WorkflowTask) -> Iterator[tuple[str, str]]:
    """(path inside the task, message) for each problem of its `onStateChange`."""
    if not any(task.on_state_change.values()):
        return  # `{}` or keys without events: nothing would be published
    for key, events in task.on_state_change.items():
        where = f"onStateChange.{key}"
        for name in states_of(key):
            if name not in STATES:
                close = difflib.get_close_matches(name, STATES, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else \
                    f" (expected {', '.join(STATES)})"
                yield (where, f"unknown state '{name}'{hint}")
        for index, event in enumerate(events):
            if not event.type.strip():
                yield (f"{where}[{index}].type", "must name a sink (the stream it goes to)")


def payloads(task: WorkflowTask) -> Iterator[tuple[str, Any]]:
    """(path inside the task, payload) of each event that has a payload."""
    for key, events in task.on_state_change.items():
        for index, event in enumerate(events):
            if event.payload:
                yield (f"onStateChange.{key}[{index}].payload", event.payload)
