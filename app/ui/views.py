"""What the workflow view shows of a run: plain JSON-ready documents built from the run store.

A run's snapshot is its record and one document per recorded step, masked as every reader
of a run sees it (the definition's maskedFields). The page renders the snapshot, and the
live stream sends the parts of the next snapshot that differ (`changes`). Loop iterations
(`<ref>__<n>`) and dynamic fork branches (refs defined at run time) are marked as such, so
the page shows them under the task of the definition they belong to.
No web framework here: the routes call these functions in a worker thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from app.dsl.model import WorkflowDef
from app.dsl.validate import parse_definition
from app.graph import build_graph
from app.runtime.masking import masked_run_fields, run_mask
from app.runtime.scope import record_document
from app.store import RunStore
from app.ui.layout import to_svg

_ITERATION = re.compile(r"^(?P<base>.+)__(?P<n>\d+)$")
_TIMES: Final = ("scheduledTime", "startTime", "endTime", "createTime")

RUN_FIELDS: Final = (
    "workflowId", "workflowType", "version", "status", "correlationId", "createTime",
    "startTime", "endTime", "reasonForIncompletion", "failedReferenceTaskName",
    "parentWorkflowId", "parentWorkflowTaskRef", "input", "output", "cached",
)


def _number(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def run_document(fields: Mapping[str, str]) -> dict[str, Any]:
    doc = record_document(fields)
    shown = {name: doc.get(name) for name in RUN_FIELDS}
    for name in _TIMES:
        if name in shown:
            shown[name] = _number(shown[name])
    shown["version"] = _number(shown["version"])
    return shown


def step_document(ref: str, record: Mapping[str, str], failed: list[dict[str, Any]],
                  definition_refs: frozenset[str], dynamic: Mapping[str, Any] | None,
                  flower_url: str | None) -> dict[str, Any]:
    doc = record_document(record)
    match = _ITERATION.match(ref)
    base, iteration = ref, None
    if match and match["base"] in definition_refs:
        base, iteration = match["base"], int(match["n"])
    output = doc.get("output")
    child = output.get("subWorkflowId") if isinstance(output, dict) else None
    error = doc.get("error")
    task_id = doc.get("taskId")
    return {
        "ref": ref,
        "base": base,
        "iteration": iteration,
        "branchOf": (dynamic or {}).get("fork") if ref not in definition_refs else None,
        "type": doc.get("taskType"),
        "name": doc.get("taskDefName"),
        "status": doc.get("status") or "SCHEDULED",
        "attempts": _number(doc.get("attempts")) or 0,
        "worker": doc.get("workerId"),
        "taskId": task_id,
        "flower": f"{flower_url.rstrip('/')}/task/{task_id}" if flower_url and task_id else None,
        "scheduledTime": _number(doc.get("scheduledTime")),
        "startTime": _number(doc.get("startTime")),
        "endTime": _number(doc.get("endTime")),
        "input": doc.get("input"),
        "output": output,
        "error": error if isinstance(error, dict) else ({"message": error} if error else None),
        "reason": doc.get("reasonForIncompletion"),
        "failedAttempts": failed,
        "cached": doc.get("cached") == "true",
        "waitingOn": doc.get("waitingOn") if doc.get("status") == "SCHEDULED" else None,
        "child": str(child) if child else None,
    }


def load_definition(store: RunStore, digest: str | None) -> WorkflowDef | None:
    text = store.get_definition(digest) if digest else None
    if not text:
        return None
    return parse_definition(json.loads(text))


def definition_refs(definition: WorkflowDef | None) -> frozenset[str]:
    if definition is None:
        return frozenset()
    found: set[str] = set()
    pending = list(definition.tasks)
    while pending:
        task = pending.pop()
        found.add(task.task_reference_name)
        for _, tasks in task.children():
            pending.extend(tasks)
    return frozenset(found)


def snapshot(store: RunStore, run_id: str, refs: frozenset[str],
             flower_url: str | None) -> dict[str, Any] | None:
    """The run and its steps as the page shows them; None when the run is not in the store."""
    fields = store.get_run(run_id)
    if fields is None:
        return None
    records = store.get_steps(run_id)
    failed = store.get_attempts(run_id, list(records))
    mask = run_mask(store, run_id)
    steps = {}
    for ref, record in records.items():
        dynamic = store.get_dynamic_step(run_id, ref) if ref not in refs and not \
            _ITERATION.match(ref) else None
        steps[ref] = step_document(ref, mask.step_fields(record),
                                   [mask.attempt(a) for a in failed.get(ref, [])], refs,
                                   dynamic, flower_url)
    return {"run": run_document(masked_run_fields(store, fields)), "steps": steps}


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What the live stream sends: the run when any field of it changed, each step that
    changed or appeared, and None for each step that is no longer recorded (a rerun)."""
    found: dict[str, Any] = {}
    if before.get("run") != after.get("run"):
        found["run"] = after.get("run")
    old, new = before.get("steps", {}), after.get("steps", {})
    steps = {ref: step for ref, step in new.items() if old.get(ref) != step}
    steps.update({ref: None for ref in old if ref not in new})
    if steps:
        found["steps"] = steps
    return found


def graph_svg(definition: WorkflowDef | None) -> str:
    if definition is None:
        return '<p class="note">The definition of this run is no longer in the store.</p>'
    return to_svg(build_graph(definition))


def top_level_refs(definition: WorkflowDef | None) -> list[str]:
    """The refs a run can be rerun from (rerun takes a top-level step)."""
    return [task.task_reference_name for task in definition.tasks] if definition else []
