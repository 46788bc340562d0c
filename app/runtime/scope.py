"""The documents `${...}` expressions resolve against, built from run and step records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.dsl.expressions import TASK_ID_ROOT, WORKFLOW_ROOT

_JSON_FIELDS = ("input", "output", "variables", "error", "maskedFields")
_NUMBER_FIELDS = ("startTime", "endTime", "createTime", "version", "attempts")


def record_document(record: Mapping[str, str]) -> dict[str, Any]:
    """A stored record as the JSON document its expressions see."""
    document: dict[str, Any] = {}
    for name, value in record.items():
        if name in _JSON_FIELDS:
            document[name] = json.loads(value) if value else None
        elif name in _NUMBER_FIELDS and value.lstrip("-").isdigit():
            document[name] = int(value)
        else:
            document[name] = value
    return document


def build_scope(
    run: Mapping[str, str],
    steps: Mapping[str, Mapping[str, str]],
    task_id: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    scope: dict[str, Any] = {ref: record_document(rec) for ref, rec in steps.items()}
    workflow = record_document(run)
    workflow["variables"] = {name: json.loads(value) for name, value in (variables or {}).items()}
    scope[WORKFLOW_ROOT] = workflow
    if task_id is not None:
        scope[TASK_ID_ROOT] = task_id
    return scope
