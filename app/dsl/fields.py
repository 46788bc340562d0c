"""Fields Baton accepts in a definition but does not honour, refused when they would act.

The models mirror Conductor's field for field, so every definition Conductor accepts loads.
A field Baton does not carry out is refused here once it is set to a value that changes
behaviour in Conductor; its default, or any value Conductor treats as "off", stays
accepted (`rateLimitPerFrequency: 0`, `asyncComplete: false`).
docs/conductor-fields.md lists every field and what Baton does with it.

Inline sub-workflows are checked by the validator's own recursion (it calls this with
their path as `prefix`), so only the definition's own tasks are walked here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from app.dsl import cache
from app.dsl.expressions import ExpressionError, parse_parameter
from app.dsl.model import (
    SubWorkflowParams,
    TaskDef,
    WorkflowDef,
    WorkflowTask,
)
from app.dsl.routing_fields import queue_parts, sub_workflow_routing
from app.dsl.schemas import task_schema_problems, workflow_schema_problems
from app.dsl.state_changes import state_change_problems
from app.errors import Problem

# Types whose timeoutSeconds bounds a wait (app.runtime.wait_timeouts, wait_limits): a timed
# out wait ends the run TIMED_OUT, so RETRY cannot let an optional or permissive one go on.
_WAITS = frozenset({"WAIT", "HUMAN", "SUB_WORKFLOW", "JOIN", "EXCLUSIVE_JOIN", "DO_WHILE"})


def unhonoured_fields(definition: WorkflowDef, prefix: str = "") -> list[Problem]:
    """A problem for each field set to a value whose effect Baton would not carry out."""

    def path(suffix: str) -> str:
        return f"{prefix}.{suffix}" if prefix else suffix

    problems: list[Problem] = []
    for where, message in _workflow(definition):
        problems.append(Problem(path(where), message))
    for where, task in _tasks(definition.tasks, "tasks"):
        for field, message in _task(task):
            problems.append(Problem(path(f"{where}.{field}"), message))
    return problems


def unhonoured_task_fields(task: WorkflowTask) -> list[Problem]:
    """The problems of one task defined at run time (a dynamic fork's branch), with paths
    relative to the task."""
    return [Problem(field, message) for field, message in _task(task)]


def _workflow(definition: WorkflowDef) -> Iterator[tuple[str, str]]:
    yield from workflow_schema_problems(definition)
    yield from cache.workflow_problems(definition.cache_config)
    yield from _rate_limit_config(definition)


def _rate_limit_config(definition: WorkflowDef) -> Iterator[tuple[str, str]]:
    """rateLimitConfig, as Orkes Conductor reads it (app.runtime.run_limits enforces it)."""
    config = definition.rate_limit_config
    if config is None:
        return
    if config.concurrent_exec_limit < 0:
        yield ("rateLimitConfig.concurrentExecLimit", "cannot be negative")
    if config.rate_limit_key is not None:
        try:
            parse_parameter(config.rate_limit_key)
        except ExpressionError as exc:
            yield ("rateLimitConfig.rateLimitKey", str(exc))


def _task(task: WorkflowTask) -> Iterator[tuple[str, str]]:
    if task.async_complete:
        yield from _async_complete(task)
    yield from state_change_problems(task)
    yield from cache.task_problems(task)
    if task.dynamic_fork_join_tasks_param:
        yield ("dynamicForkJoinTasksParam",
               "not supported (the deprecated form of a dynamic fork); use "
               "dynamicForkTasksParam and dynamicForkTasksInputParamName")
    yield from task_schema_problems(task)
    if task.task_definition is not None:
        if task.type == "SUB_WORKFLOW" and task.task_definition.timeout_seconds > 0 \
                and task.task_definition.timeout_policy == "RETRY":
            yield ("taskDefinition.timeoutPolicy",
                   "RETRY is not supported yet on a SUB_WORKFLOW task with a timeout (a "
                   "SUB_WORKFLOW step is not retried); set TIME_OUT_WF or ALERT_ONLY")
        if (task.optional or task.permissive) and task.type in _WAITS \
                and task.task_definition.timeout_seconds > 0 \
                and task.task_definition.timeout_policy == "RETRY":
            yield ("taskDefinition.timeoutPolicy",
                   f"RETRY is not supported yet on an optional or permissive {task.type} task "
                   "with a timeout (its run would end TIMED_OUT); set TIME_OUT_WF or "
                   "ALERT_ONLY")
        if (task.optional or task.permissive) and task.task_definition.poll_timeout_seconds \
                and task.task_definition.timeout_policy == "RETRY":
            yield ("taskDefinition.pollTimeoutSeconds",
                   "not supported yet on an optional or permissive task with timeoutPolicy "
                   "RETRY (its run would end TIMED_OUT); remove it or set TIME_OUT_WF")
        for field, message in _task_definition(task.task_definition, task.type):
            yield (f"taskDefinition.{field}", message)
        for field, message in queue_parts(task.type, task.task_definition):
            yield (f"taskDefinition.{field}", message)
    if task.sub_workflow_param is not None:
        for field, message in _sub_workflow(task.sub_workflow_param):
            yield (f"subWorkflowParam.{field}", message)


# asyncComplete keeps an HTTP or EVENT task IN_PROGRESS after its work, until it is completed
# from outside; these types already wait for an outside end, so it changes nothing there
# (as in Conductor, where a SUB_WORKFLOW task is always completed asynchronously).
_ASYNC_COMPLETE: Final = frozenset({"HTTP", "EVENT"})
_WAIT_ANYWAY: Final = frozenset({"WAIT", "HUMAN", "SUB_WORKFLOW"})


def _async_complete(task: WorkflowTask) -> Iterator[tuple[str, str]]:
    if task.type in _WAIT_ANYWAY:
        return
    if task.type not in _ASYNC_COMPLETE:
        kind = ("a SIMPLE task completes when its transformation returns (in Conductor its "
                "worker decides; asyncComplete does nothing there); to wait for an outside "
                "completion, follow it with a HUMAN task"
                if task.type == "SIMPLE" else
                f"a {task.type} task completes when its work is done, in Conductor too")
        yield ("asyncComplete",
               f"not supported on a {task.type} task, where it has no effect (only HTTP and "
               f"EVENT tasks wait to be completed with it): {kind}; remove it or set false")
        return
    definition = task.task_definition
    retried = bool(task.retry_count) or bool(
        definition is not None and "retry_count" in definition.model_fields_set
        and definition.retry_count and task.retry_count is None)
    if definition is not None and definition.timeout_seconds > 0 \
            and definition.timeout_policy == "RETRY" \
            and (retried or task.optional or task.permissive):
        yield ("taskDefinition.timeoutPolicy",
               "RETRY is not supported yet on an asyncComplete task that is retried, optional "
               "or permissive (a step past its timeoutSeconds while it waits ends its run "
               "TIMED_OUT); set TIME_OUT_WF or ALERT_ONLY")


# Types whose steps run a transformation: the only ones a flow limit holds (app.limits).
LIMITED_TYPES: Final = frozenset({"SIMPLE", "DYNAMIC"})


def _task_definition(definition: TaskDef, task_type: str) -> Iterator[tuple[str, str]]:
    yield from _limits(definition, task_type)
    if definition.timeout_policy == "ALERT_ONLY":
        for field, value in (("pollTimeoutSeconds", definition.poll_timeout_seconds),
                             ("totalTimeoutSeconds", definition.total_timeout_seconds)):
            if value:
                yield (field,
                       "not supported yet with timeoutPolicy ALERT_ONLY (a step past it is "
                       "stopped); remove it or set RETRY or TIME_OUT_WF")


def _limits(definition: TaskDef, task_type: str) -> Iterator[tuple[str, str]]:
    """Conductor's flow limits of a task (app.limits): whole numbers, on transformations."""
    for field, value in (("concurrentExecLimit", definition.concurrent_exec_limit),
                         ("rateLimitPerFrequency", definition.rate_limit_per_frequency)):
        if value is not None and value < 0:
            yield (field, f"cannot be negative (got {value}); 0 or absent means no limit")
        elif value and task_type not in LIMITED_TYPES:
            yield (field, f"not supported on a {task_type} task: flow limits hold the steps "
                          "of a transformation (SIMPLE or DYNAMIC tasks); remove it or set 0")
    frequency = definition.rate_limit_frequency_in_seconds
    if definition.rate_limit_per_frequency and frequency is not None and frequency <= 0:
        yield ("rateLimitFrequencyInSeconds",
               f"must be more than 0 with rateLimitPerFrequency set (got {frequency}); "
               "absent means 1 second, as in Conductor")


def _sub_workflow(params: SubWorkflowParams) -> Iterator[tuple[str, str]]:
    yield from sub_workflow_routing(params)




def _tasks(tasks: Iterable[WorkflowTask], path: str) -> Iterator[tuple[str, WorkflowTask]]:
    """Every task with its path, nested ones included; the same paths as the validator's."""
    for index, task in enumerate(tasks):
        here = f"{path}[{index}]"
        yield here, task
        for suffix, children in task.children():
            yield from _tasks(children, f"{here}.{suffix}")
