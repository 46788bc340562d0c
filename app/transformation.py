"""The `@transformation` decorator: a plain function becomes a step on its own queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from celery import Task

from app import registry
from app.celery_app import declare_queues
from app.limits import Limit
from app.policy import StepPolicy
from app.registry import Transformation
from app.runtime.step import StepContext, step_task
from app.runtime.step_input import input_checker
from app.timeouts import attempt_limit, time_limit_options

F = TypeVar("F", bound=Callable[..., Any])


@overload
def transformation(func: F, /) -> F: ...


@overload
def transformation(
    func: None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    retry_count: int | None = None,
    timeout_seconds: float | None = None,
    policy: StepPolicy | None = None,
    limit: Limit | None = None,
) -> Callable[[F], F]: ...


def transformation(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    retry_count: int | None = None,
    timeout_seconds: float | None = None,
    policy: StepPolicy | None = None,
    limit: Limit | None = None,
) -> F | Callable[[F], F]:
    """Register a function as a transformation, run by the Celery task `tasks.<name>`.

    The function takes its input as keyword arguments (the task's resolved
    inputParameters) and returns a JSON object (a dict; another value becomes
    `{"result": value}`). `name` defaults to the function's name, `queue` to the name.
    `policy` sets retry and timeout defaults (`retry_count` and `timeout_seconds` are
    shorthands for its two most used fields); a workflow task may override them through
    `taskDefinition` or `retryCount`. `limit` bounds how many of its steps run at once and
    how often one starts, across every worker (app.limits.Limit); a workflow task may set
    Conductor's `concurrentExecLimit` and `rateLimitPerFrequency` instead. The function
    itself is returned unchanged, so it stays callable in tests.
    """
    chosen_policy = (policy or StepPolicy()).merged(
        {k: v for k, v in (("retry_count", retry_count), ("timeout_seconds", timeout_seconds))
         if v is not None}
    )

    def register(f: F) -> F:
        chosen = name or f.__name__
        described = registry.describe(f, chosen, queue or chosen, chosen_policy, limit)
        registry.add(described)
        register_transformation_task(described)
        declare_queues()
        return f

    return register(func) if func is not None else register


def register_transformation_task(transformation: Transformation) -> Task:
    """Make the Celery task `tasks.<name>` that runs a transformation as a step."""
    func, policy = transformation.func, transformation.policy
    check_input = input_checker(func)  # built once: a step pays only the check itself

    def work(context: StepContext) -> Any:
        given = dict(context.input)
        if context.spec.type == "DYNAMIC":  # the name it was chosen by is not its input
            given.pop(context.spec.task.dynamic_task_name_param or "", None)
        check_input(given)  # InvalidStepInput (terminal) before the function sees a null
        return func(**given)

    work.__name__ = func.__name__
    limits = time_limit_options(attempt_limit(policy))
    return step_task(transformation.task_name, work, policy=policy, doc=func.__doc__,
                     options=limits)
