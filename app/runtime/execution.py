"""A run as Conductor's API returns a workflow execution (`GET /workflow/{id}`).

Conductor hands this document to a failureWorkflow as `failedWorkflow`, and compensation
definitions read it (`.failedWorkflow.tasks[] | select(.status == "COMPLETED")`), so a
definition written for Conductor finds the same names here: `tasks` in the order they
started, each with `referenceTaskName`, `taskType`, `status`, `inputData`, `outputData`.
Built from the run store's records; read-only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.runtime.scope import record_document
from app.store import RunStore

_NO_TIME = 0
"""Conductor's value for a time not reached yet (its fields are longs)."""


def workflow_execution(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The run's execution document, or None when the run is not in the store."""
    record = store.get_run(run_id)
    if record is None:
        return None
    run = record_document(record)
    variables = {name: json.loads(value)
                 for name, value in store.get_variables(run_id).items()}
    tasks = [_task(run_id, run, ref, step)
             for ref, step in store.get_steps(run_id).items()]
    tasks.sort(key=lambda task: (task["startTime"] or task["endTime"] or 0,
                                 task["referenceTaskName"]))
    for seq, task in enumerate(tasks, start=1):
        task["seq"] = seq
    failed_refs = [task["referenceTaskName"] for task in tasks
                   if task["status"] in _FAILED]
    definition = store.get_definition(record.get("plan", ""))
    return {
        "workflowId": run_id,
        "workflowName": run.get("workflowType"),
        "workflowType": run.get("workflowType"),
        "workflowVersion": run.get("version"),
        "version": run.get("version"),
        "status": run.get("status"),
        "correlationId": run.get("correlationId") or None,
        "parentWorkflowId": run.get("parentWorkflowId") or None,
        "input": run.get("input") or {},
        "output": run.get("output") or {},
        "variables": variables,
        "reasonForIncompletion": run.get("reasonForIncompletion") or None,
        "failedReferenceTaskNames": failed_refs,
        "failedTaskNames": sorted({str(task["taskDefName"]) for task in tasks
                                   if task["status"] in _FAILED}),
        "createTime": run.get("createTime") or _NO_TIME,
        "startTime": run.get("startTime") or _NO_TIME,
        "endTime": run.get("endTime") or _NO_TIME,
        "tasks": tasks,
        "workflowDefinition": json.loads(definition) if definition else None,
    }


_FAILED = frozenset({"FAILED", "FAILED_WITH_TERMINAL_ERROR", "TIMED_OUT"})


def _task(run_id: str, run: Mapping[str, Any], ref: str,
          record: Mapping[str, str]) -> dict[str, Any]:
    step = record_document(record)
    attempts = int(step.get("attempts") or 0)
    error = step.get("error") or {}
    reason = step.get("reasonForIncompletion") or (
        error.get("message") if isinstance(error, Mapping) else None)
    return {
        "taskId": step.get("taskId"),
        "taskType": step.get("taskType"),
        "taskDefName": step.get("taskDefName") or step.get("taskType"),
        "referenceTaskName": step.get("referenceTaskName") or ref,
        "status": step.get("status", "SCHEDULED"),
        "inputData": step.get("input") or {},
        "outputData": step.get("output") or {},
        "reasonForIncompletion": reason or None,
        "retryCount": max(attempts - 1, 0),
        "workerId": step.get("workerId") or None,
        "workflowInstanceId": run_id,
        "workflowType": run.get("workflowType"),
        "correlationId": run.get("correlationId") or None,
        "startTime": step.get("startTime") or _NO_TIME,
        "endTime": step.get("endTime") or _NO_TIME,
    }
