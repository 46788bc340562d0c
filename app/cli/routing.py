"""`--domain TASK=DOMAIN` and `--priority N` of `baton run` and `baton submit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from app.cli.common import EXIT_INVALID, fail, option
from app.compiler.plan import Plan
from app.config import get_settings
from app.registry import transformations
from app.routing import (
    MAX_PRIORITY,
    NO_DOMAIN,
    InvalidRouting,
    check_task_to_domain,
    domains_for,
    variant_queue,
)

F = TypeVar("F", bound=Callable[..., Any])


def routing_options(command: F) -> F:
    """--domain (repeatable) and --priority, as `parse_routing` reads them."""
    command = option(
        "--priority", type=click.IntRange(0, MAX_PRIORITY), envvar="BATON_PRIORITY",
        help="The run's priority, 0-99: higher is served first (default 0).",
    )(command)
    return option(
        "--domain", "domains", multiple=True, metavar="TASK=DOMAIN",
        envvar="BATON_DOMAINS",
        help="Send task TASK (or * for every task) to its queue's DOMAIN variant "
             "(queue:DOMAIN); DOMAIN may be a list tried in order, e.g. gpu,NO_DOMAIN. "
             "Repeatable.",
    )(command)


def parse_routing(domains: tuple[str, ...], priority: int | None) -> dict[str, Any]:
    """submit_workflow's task_to_domain and priority from the options."""
    given: dict[str, str] = {}
    for item in domains:
        task, sep, domain = item.partition("=")
        if not sep or not task.strip():
            fail(f"--domain: '{item}' must be TASK=DOMAIN", EXIT_INVALID)
        given[task.strip()] = domain.strip()
    try:
        task_to_domain = check_task_to_domain(given, "--domain")
    except InvalidRouting as exc:
        fail(str(exc), EXIT_INVALID)
    return {"task_to_domain": task_to_domain or None, "priority": priority}


def local_queues(plan: Plan, task_to_domain: dict[str, str] | None) -> list[str]:
    """The queue variants a run of `plan` may use, for `baton run`'s in-process worker:
    each transformation's queue in each of its domains, and the variants of the steps'
    task definitions (isolationGroupId, executionNameSpace)."""
    found: list[str] = []
    for transformation in transformations().values():
        for domain in domains_for(transformation.name, task_to_domain or {}):
            if domain != NO_DOMAIN:
                found.append(variant_queue(transformation.queue, domain))
    for spec in plan.steps.values():
        definition = spec.task.task_definition
        if definition is None or not (definition.isolation_group_id
                                      or definition.execution_name_space):
            continue
        named = transformations().get(spec.name)
        queue = named.queue if named is not None else get_settings().io_queue
        for domain in domains_for(spec.name, task_to_domain or {}) or [NO_DOMAIN]:
            found.append(variant_queue(queue, None if domain == NO_DOMAIN else domain,
                                       definition.execution_name_space,
                                       definition.isolation_group_id))
    return list(dict.fromkeys(found))
