"""The taskToDomain and priority of a run started by a step (SUB_WORKFLOW, START_WORKFLOW).

As Conductor: a sub-workflow runs with its subWorkflowParam.taskToDomain when that is
an object (even {}), else with its parent's; START_WORKFLOW with its request's taskToDomain
unless that is missing or empty, else with its parent's. Priority is never inherited:
the child has the priority it is given (subWorkflowParam.priority, the request's
priority), else 0, Conductor's default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.dsl.expressions import parse_parameter
from app.dsl.model import SubWorkflowParams
from app.routing import InvalidRouting, check_priority, check_task_to_domain
from app.runtime.operators import OperatorError
from app.runtime.state import get_store


def sub_workflow_routing(
    run_id: str, params: SubWorkflowParams, scope: Mapping[str, Any]
) -> dict[str, Any]:
    """create_run's task_to_domain and priority for a SUB_WORKFLOW step's child."""
    given = params.task_to_domain
    domains = (parse_parameter(given).resolve(scope) if given is not None
               else parent_domains(run_id))
    priority = parse_parameter(params.priority).resolve(scope)
    return _checked(domains, priority, "subWorkflowParam.")


def start_workflow_routing(run_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """create_run's task_to_domain and priority for a START_WORKFLOW request."""
    domains = request.get("taskToDomain") or parent_domains(run_id)
    return _checked(domains, request.get("priority"), "startWorkflow.")


def parent_domains(run_id: str) -> dict[str, str]:
    text = get_store().get_run_fields(run_id, "taskToDomain").get("taskToDomain")
    return dict(json.loads(text)) if text else {}


def _checked(domains: Any, priority: Any, prefix: str) -> dict[str, Any]:
    try:
        return {"task_to_domain": check_task_to_domain(domains, prefix + "taskToDomain"),
                "priority": check_priority(priority, prefix + "priority")}
    except InvalidRouting as exc:
        raise OperatorError(str(exc)) from exc
