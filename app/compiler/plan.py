"""Definition -> plan: the validated, parsed form of a workflow that runs are compiled from.

A plan is a tree of stages. A sequence is a tuple of stages, named by a sequence id
(`""` for the workflow's own task list, `<fork ref>[<i>]` for a fork's i-th branch).
Every step's input is parsed once here, and the refs it reads are listed so the step's
claim can fetch them in the same round trip. Pure: no Celery, no Redis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from app.dsl.expressions import TASK_ID_ROOT, WORKFLOW_ROOT, Parameter, parse_parameter
from app.dsl.model import WorkflowDef, WorkflowTask
from app.dsl.validate import check_definition
from app.errors import DefinitionError, Problem
from app.policy import task_overrides
from app.registry import Transformation

MAIN: Final = ""
"""Sequence id of the workflow's own task list."""

SUPPORTED_TYPES: Final = frozenset({"SIMPLE", "FORK_JOIN", "JOIN", "NOOP"})


@dataclass(frozen=True)
class StepSpec:
    """One task of the definition as a step runner needs it."""

    ref: str
    type: str
    name: str
    inputs: Parameter
    reads: tuple[str, ...]
    """Task refs whose records the input resolves from."""
    join_on: tuple[str, ...] = ()
    fork_ref: str | None = None
    """For a JOIN: the fork it closes."""
    policy_overrides: Mapping[str, Any] = field(default_factory=dict)
    """Retry and timeout fields the task sets for itself (taskDefinition, retryCount)."""


@dataclass(frozen=True)
class StepStage:
    ref: str


@dataclass(frozen=True)
class ForkStage:
    ref: str
    branches: tuple[str, ...]
    """Sequence ids of the branches."""
    join_ref: str


Stage = StepStage | ForkStage


@dataclass(frozen=True)
class Plan:
    """Everything a run needs from its definition, keyed by the definition's digest."""

    digest: str
    definition: WorkflowDef
    steps: Mapping[str, StepSpec]
    sequences: Mapping[str, tuple[Stage, ...]]
    output: Parameter | None
    """Parsed outputParameters; None means 'the last step's output'."""
    output_reads: tuple[str, ...]
    last_ref: str
    """The step whose completion ends the run."""


def definition_digest(definition: WorkflowDef) -> str:
    """A content address for a definition: equal JSON, equal digest."""
    canonical = json.dumps(definition.to_json_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def build_plan(
    definition: WorkflowDef,
    transformations: Mapping[str, Transformation] | None = None,
) -> Plan:
    """Validate a definition and build its plan; DefinitionError lists every problem."""
    check_definition(definition, transformations)
    builder = _Builder()
    builder.sequence(MAIN, definition.tasks, "tasks")
    if builder.problems:
        raise DefinitionError(builder.problems)
    output = None
    if definition.output_parameters:
        output = parse_parameter(definition.output_parameters)
    last = builder.sequences[MAIN][-1]
    return Plan(
        digest=definition_digest(definition),
        definition=definition,
        steps=builder.steps,
        sequences=builder.sequences,
        output=output,
        output_reads=_reads(output) if output is not None else (),
        last_ref=last.join_ref if isinstance(last, ForkStage) else last.ref,
    )


class _Builder:
    def __init__(self) -> None:
        self.steps: dict[str, StepSpec] = {}
        self.sequences: dict[str, tuple[Stage, ...]] = {}
        self.problems: list[Problem] = []

    def sequence(self, sequence_id: str, tasks: list[WorkflowTask], path: str) -> None:
        stages: list[Stage] = []
        index = 0
        while index < len(tasks):
            task = tasks[index]
            here = f"{path}[{index}]"
            if task.type not in SUPPORTED_TYPES:
                self.problems.append(Problem(here, f"type {task.type} is not supported yet"))
            elif task.type == "FORK_JOIN":
                join = tasks[index + 1]  # validation guarantees the JOIN is there
                stages.append(self.fork(task, join, here))
                index += 1
            else:
                self.steps[task.task_reference_name] = _spec(task)
                stages.append(StepStage(task.task_reference_name))
            index += 1
        self.sequences[sequence_id] = tuple(stages)

    def fork(self, fork: WorkflowTask, join: WorkflowTask, path: str) -> ForkStage:
        branch_ids = []
        for index, branch in enumerate(fork.fork_tasks or []):
            branch_id = f"{fork.task_reference_name}[{index}]"
            self.sequence(branch_id, branch, f"{path}.forkTasks[{index}]")
            branch_ids.append(branch_id)
        self.steps[fork.task_reference_name] = _spec(fork)
        self.steps[join.task_reference_name] = _spec(join, fork_ref=fork.task_reference_name)
        return ForkStage(fork.task_reference_name, tuple(branch_ids), join.task_reference_name)


def _spec(task: WorkflowTask, fork_ref: str | None = None) -> StepSpec:
    inputs = parse_parameter(task.input_parameters or {})
    join_on = tuple(task.join_on or ()) if task.type == "JOIN" else ()
    reads = tuple(dict.fromkeys([*_reads(inputs), *join_on]))
    return StepSpec(
        ref=task.task_reference_name,
        type=task.type,
        name=task.name,
        inputs=inputs,
        reads=reads,
        join_on=join_on,
        fork_ref=fork_ref,
        policy_overrides=task_overrides(task.task_definition, task.retry_count),
    )


def _reads(parameter: Parameter) -> tuple[str, ...]:
    roots = parameter.roots() - {WORKFLOW_ROOT, TASK_ID_ROOT}
    return tuple(sorted(roots))
