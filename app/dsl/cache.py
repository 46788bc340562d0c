"""Output caching in a definition: which `cacheConfig` acts, and what its key may read.

A task's `cacheConfig` ({key, ttlInSecond}) lets a step whose templated key was seen within
the last `ttlInSecond` seconds complete with the output then recorded, without running;
a workflow's lets a run whose key was seen complete at once with that run's output. The
key is a template (`${...}`), resolved like inputParameters. Orkes Conductor builds a
task's key from the task's own input parameters (`${uri}-${method}`), so a root that names
one of them reads the step's resolved input; any other root reads the run's scope
(`${workflow.input.x}`, `${ref.output.y}`). A workflow's key can only read
`${workflow...}`: no task has run when the run starts.

Pure: parses and checks, knows nothing of Redis or Celery (app.runtime.cache does the
caching).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from app.dsl.expressions import (
    TASK_ID_ROOT,
    WORKFLOW_ROOT,
    Parameter,
    ParseFailure,
    parse_parameter,
)
from app.dsl.model import CacheConfig, WorkflowTask

CACHEABLE_TYPES: Final = frozenset({"SIMPLE", "HTTP", "INLINE", "LAMBDA", "JSON_JQ_TRANSFORM"})
"""Types whose step computes an output from its input and nothing else of the route.

Control operators (forks, joins, switches, loops, waits, TERMINATE, SET_VARIABLE) decide or
change the route, and the output of DYNAMIC, SUB_WORKFLOW, START_WORKFLOW and EVENT
stands for work done elsewhere (another task, another run, a publication): a cached output
would skip what the step is for.
"""


def caches(config: CacheConfig | None) -> bool:
    """Whether a cacheConfig turns caching on: a non-empty key and a positive TTL."""
    return config is not None and bool(config.key) and config.ttl_in_second > 0


def cache_key(config: CacheConfig | None) -> Parameter | None:
    """The parsed key of a cacheConfig that caches; None when it does not or cannot parse."""
    if not caches(config):
        return None
    assert config is not None and config.key is not None
    try:
        return parse_parameter(config.key)
    except ParseFailure:
        return None


def input_names(task: WorkflowTask) -> set[str]:
    """The names of the task's input parameters, known statically (its own and its task
    definition's inputTemplate): the roots a cache key reads from the step's input."""
    names = set((task.input_parameters or {}).keys())
    if task.task_definition is not None:
        names |= set(task.task_definition.input_template or {})
    return names


def key_reads(task: WorkflowTask) -> set[str]:
    """Roots the task's cache key reads from the run's scope (not from the step's input).

    A root built at run time (`${${name}.output}`) counts as `workflow`, as in inputParameters:
    the step then reads the run's record.
    """
    key = cache_key(task.cache_config)
    if key is None:
        return set()
    dynamic = any(e.static_root is None for e in key.expressions())
    return key.roots() - input_names(task) | ({WORKFLOW_ROOT} if dynamic else set())


def task_problems(task: WorkflowTask) -> Iterator[tuple[str, str]]:
    """(field, message) for a task's cacheConfig that cannot act as written."""
    config = task.cache_config
    yield from _config_problems(config)
    if caches(config) and task.type not in CACHEABLE_TYPES:
        allowed = ", ".join(sorted(CACHEABLE_TYPES))
        yield ("cacheConfig",
               f"not supported for a {task.type} task (only the outputs of {allowed} steps "
               "are cached: the others decide the route or stand for work done elsewhere); "
               "remove it")


def workflow_problems(config: CacheConfig | None) -> Iterator[tuple[str, str]]:
    """(field, message) for a workflow's cacheConfig that cannot act as written."""
    yield from _config_problems(config)
    key = cache_key(config)
    if key is None:
        return
    for location, expression in key.located_expressions():
        root = expression.static_root
        if root != WORKFLOW_ROOT:
            named = f"'{root}'" if root is not None else "a root built at run time"
            yield (f"cacheConfig.key{location}",
                   f"a workflow's cache key can read only ${{workflow...}} (the run's input, "
                   f"correlationId), not {named}: no task has run when the run starts")


def _config_problems(config: CacheConfig | None) -> Iterator[tuple[str, str]]:
    if config is None:
        return
    if config.ttl_in_second < 0:
        yield ("cacheConfig.ttlInSecond",
               f"must be 0 or more (0: nothing is cached), not {config.ttl_in_second}")
    if caches(config):
        assert config.key is not None
        try:
            key = parse_parameter(config.key)
        except ParseFailure as exc:
            yield (f"cacheConfig.key{exc.location}", str(exc))
            return
        if TASK_ID_ROOT in key.roots():
            yield ("cacheConfig.key",
                   f"${{{TASK_ID_ROOT}}} differs for every step, so the key would never be "
                   "found again; remove it from the key")
