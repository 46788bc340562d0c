"""Static checks of the routing fields a definition sets (app.routing says what they do).

A taskDefinition's isolationGroupId and executionNameSpace name a queue variant, so they
act only on a step that is sent to a worker's queue: a transformation (SIMPLE, DYNAMIC)
or an I/O task (HTTP, EVENT); Baton's other operators run on its control queue, and the
fields are refused there. subWorkflowParam's taskToDomain and priority are checked where
they are plain values; a `${...}` expression is checked when the step resolves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from app.dsl.model import SubWorkflowParams, TaskDef
from app.routing import InvalidRouting, check_name_part, check_priority, check_task_to_domain

QUEUED_TYPES: Final = frozenset({"SIMPLE", "DYNAMIC", "HTTP", "EVENT"})


def queue_parts(task_type: str, definition: TaskDef) -> Iterator[tuple[str, str]]:
    """(field, message) for each isolationGroupId / executionNameSpace that cannot act."""
    for field, value in (("isolationGroupId", definition.isolation_group_id),
                         ("executionNameSpace", definition.execution_name_space)):
        if not value:
            continue
        if task_type not in QUEUED_TYPES:
            yield (field, f"not supported for a {task_type} task (it runs on Baton's control "
                          "queue); only SIMPLE, DYNAMIC, HTTP and EVENT tasks run on queue "
                          "variants: remove it")
            continue
        problem = check_name_part(value, field)
        if problem is not None:
            yield (field, problem.split(": ", 1)[1])


def sub_workflow_routing(params: SubWorkflowParams) -> Iterator[tuple[str, str]]:
    """(field, message) for a plain taskToDomain or priority a run cannot be given."""
    given = params.task_to_domain
    if given is not None and not any(_expression(value) for value in given.values()):
        try:
            check_task_to_domain(given, "taskToDomain")
        except InvalidRouting as exc:
            path, message = str(exc).split(": ", 1)
            yield (path, message)
    if isinstance(params.priority, str) and not _expression(params.priority):
        yield ("priority", "must be a whole number from 0 to 99 or a ${...} expression")
    if isinstance(params.priority, int):
        try:
            check_priority(params.priority, "priority")
        except InvalidRouting as exc:
            yield ("priority", str(exc).split(": ", 1)[1])


def _expression(value: str) -> bool:
    return "${" in value
