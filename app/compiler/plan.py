"""Definition -> plan: the validated, parsed form of a workflow that runs are compiled from.

A plan is a tree of stages. A sequence is a tuple of stages, named by a sequence id:
`""` for the workflow's own task list, `<ref>[<i>]` for a fork's i-th branch,
`<ref>.cases[<i>]` and `<ref>.default` for a switch, `<ref>.loop` for a loop body.
Every step's input is parsed once here, and the refs it reads are listed so the step's
claim can fetch them in the same round trip. Pure: no Celery, no Redis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from app.dsl.cache import key_reads
from app.dsl.expressions import TASK_ID_ROOT, WORKFLOW_ROOT, Parameter, parse_parameter
from app.dsl.model import WorkflowDef, WorkflowTask
from app.dsl.validate import check_definition
from app.errors import DefinitionError, Problem
from app.gc_pause import without_gc
from app.policy import task_overrides
from app.registry import Transformation

MAIN: Final = ""
"""Sequence id of the workflow's own task list."""

STEP_TYPES: Final = frozenset({
    "SIMPLE", "NOOP", "JOIN", "EXCLUSIVE_JOIN", "TERMINATE", "SET_VARIABLE", "INLINE",
    "LAMBDA", "JSON_JQ_TRANSFORM", "DYNAMIC", "SUB_WORKFLOW", "START_WORKFLOW", "WAIT",
    "HUMAN", "HTTP", "EVENT",
})
"""Task types that run as one Celery task each."""

READS_RUN: Final = frozenset({"SUB_WORKFLOW", "DO_WHILE", "START_WORKFLOW", "EVENT"})
"""Operators that read the run's record beyond their input (correlation id, items)."""

SUPPORTED_TYPES: Final = STEP_TYPES | {
    "FORK_JOIN", "FORK_JOIN_DYNAMIC", "SWITCH", "DECISION", "DO_WHILE"
}


@dataclass(frozen=True)
class StepSpec:
    """One task of the definition as a step runner needs it."""

    ref: str
    type: str
    name: str
    inputs: Parameter
    reads: tuple[str, ...]
    """Task refs whose records the input (or the operator) reads."""
    task: WorkflowTask
    join_on: tuple[str, ...] = ()
    fork_ref: str | None = None
    """For a JOIN: the fork it closes."""
    policy_overrides: Mapping[str, Any] = field(default_factory=dict)
    """Retry and timeout fields the task sets for itself (taskDefinition, retryCount)."""
    reads_run: bool = True
    """Whether the step reads the run's record or variables (`${workflow...}`)."""


# slots: a plan holds a stage a task, 100,000 of them for a big definition (without, a plan's
# outline, app.compiler.pieces, took a fifth more memory)
@dataclass(frozen=True, slots=True)
class StepStage:
    ref: str


@dataclass(frozen=True, slots=True)
class ForkStage:
    ref: str
    branches: tuple[str, ...]
    """Sequence ids of the branches."""
    join_ref: str


@dataclass(frozen=True, slots=True)
class DynamicForkStage:
    """A fork whose branches are known only at run time, closed by its JOIN."""

    ref: str
    join_ref: str


@dataclass(frozen=True, slots=True)
class SwitchStage:
    ref: str
    cases: Mapping[str, str]
    """Case value -> sequence id."""
    default: str


@dataclass(frozen=True, slots=True)
class LoopStage:
    ref: str
    body: str


Stage = StepStage | ForkStage | DynamicForkStage | SwitchStage | LoopStage


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
    """The last stage's ref in the workflow's own task list."""
    loop_of: Mapping[str, str] = field(default_factory=dict)
    """Ref of a step inside a loop body -> the loop's ref."""
    controls: Mapping[str, Stage] = field(default_factory=dict)
    """Ref of a switch, loop or fork -> its stage."""


def definition_digest(definition: WorkflowDef) -> str:
    """A content address for a definition: equal JSON, equal digest."""
    return document_digest(definition.to_json_dict())


def document_digest(document: Mapping[str, Any]) -> str:
    """definition_digest from the definition's JSON document (`to_json_dict()`), for a
    caller that has it already: making it is most of the cost for a big definition."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@without_gc
def build_plan(
    definition: WorkflowDef,
    transformations: Mapping[str, Transformation] | None = None,
    *,
    validated: bool = False,
    digest: str | None = None,
) -> Plan:
    """Validate a definition and build its plan; DefinitionError lists every problem.

    `validated=True` skips the checks, for a definition validated when its run was
    submitted (a worker rebuilding a plan from the store). `digest` is the definition's
    digest, when the caller has it (document_digest).
    """
    if not validated:
        check_definition(definition, transformations)
    builder = _Builder()
    builder.sequence(MAIN, definition.tasks, "tasks", loop=None)
    if builder.problems:
        raise DefinitionError(builder.problems)
    output = None
    if definition.output_parameters:
        output = parse_parameter(definition.output_parameters)
    last = builder.sequences[MAIN][-1]
    return Plan(
        digest=digest or definition_digest(definition),
        definition=definition,
        steps=builder.steps,
        sequences=builder.sequences,
        output=output,
        output_reads=parameter_reads(output) if output is not None else (),
        last_ref=getattr(last, "join_ref", last.ref),
        loop_of=builder.loop_of,
        controls=builder.controls,
    )


class LazySteps(Mapping[str, StepSpec]):
    """Ref -> step spec, each spec built when it is first asked for.

    A run reads a few steps of its definition at a time; parsing every task's input when
    the plan is built took most of a big definition's planning time and memory (a worker
    builds the plan of a definition of 100,000 tasks to run its next step). The definition
    was validated first, so building a spec later cannot fail.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[WorkflowTask, str | None, tuple[str, ...]]] = {}
        self._built: dict[str, StepSpec] = {}

    def add(
        self, task: WorkflowTask, fork_ref: str | None = None, extra_reads: tuple[str, ...] = ()
    ) -> None:
        self._tasks[task.task_reference_name] = (task, fork_ref, extra_reads)

    def placement(self, ref: str) -> tuple[str | None, tuple[str, ...]]:
        """(fork_ref, extra_reads) the step's spec is built with (app.compiler.pieces)."""
        _, fork_ref, extra_reads = self._tasks[ref]
        return fork_ref, extra_reads

    def __getitem__(self, ref: str) -> StepSpec:
        spec = self._built.get(ref)
        if spec is None:
            task, fork_ref, extra_reads = self._tasks[ref]
            # two threads may build the same spec: equal values, the last one is kept
            spec = self._built[ref] = step_spec(task, fork_ref, extra_reads)
        return spec

    def __contains__(self, ref: object) -> bool:
        return ref in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


class _Builder:
    def __init__(self) -> None:
        self.steps = LazySteps()
        self.sequences: dict[str, tuple[Stage, ...]] = {}
        self.loop_of: dict[str, str] = {}
        self.controls: dict[str, Stage] = {}
        self.problems: list[Problem] = []

    def sequence(
        self, sequence_id: str, tasks: list[WorkflowTask], path: str, loop: str | None
    ) -> None:
        stages: list[Stage] = []
        index = 0
        while index < len(tasks):
            task = tasks[index]
            here = f"{path}[{index}]"
            ref = task.task_reference_name
            if loop is not None:
                self.loop_of[ref] = loop
            if task.type not in SUPPORTED_TYPES:
                self.problems.append(Problem(here, f"type {task.type} is not supported yet"))
            elif task.type in ("FORK_JOIN", "FORK_JOIN_DYNAMIC"):
                join = tasks[index + 1]  # validation guarantees the JOIN is there
                if loop is not None:
                    self.loop_of[join.task_reference_name] = loop
                stages.append(self.control(self.fork(task, join, here, loop)))
                index += 1
            elif task.type in ("SWITCH", "DECISION"):
                stages.append(self.control(self.switch(task, here, loop)))
            elif task.type == "DO_WHILE":
                if loop is not None:
                    self.problems.append(Problem(here, "a DO_WHILE inside a DO_WHILE is not "
                                                       "supported yet"))
                else:
                    stages.append(self.control(self.loop(task, here)))
            else:
                self.steps.add(task)
                stages.append(StepStage(ref))
            index += 1
        self.sequences[sequence_id] = tuple(stages)

    def control(self, stage: Stage) -> Stage:
        self.controls[stage.ref] = stage
        return stage

    def fork(
        self, fork: WorkflowTask, join: WorkflowTask, path: str, loop: str | None
    ) -> ForkStage | DynamicForkStage:
        ref = fork.task_reference_name
        self.steps.add(fork)
        self.steps.add(join, fork_ref=ref)
        if fork.type == "FORK_JOIN_DYNAMIC":
            return DynamicForkStage(ref, join.task_reference_name)
        branch_ids = []
        for index, branch in enumerate(fork.fork_tasks or []):
            branch_id = f"{ref}[{index}]"
            self.sequence(branch_id, branch, f"{path}.forkTasks[{index}]", loop)
            branch_ids.append(branch_id)
        return ForkStage(ref, tuple(branch_ids), join.task_reference_name)

    def switch(self, task: WorkflowTask, path: str, loop: str | None) -> SwitchStage:
        ref = task.task_reference_name
        self.steps.add(task)
        cases = {}
        for index, (value, tasks) in enumerate((task.decision_cases or {}).items()):
            case_id = f"{ref}.cases[{index}]"
            self.sequence(case_id, tasks, f"{path}.decisionCases.{value}", loop)
            cases[value] = case_id
        default_id = f"{ref}.default"
        self.sequence(default_id, task.default_case or [], f"{path}.defaultCase", loop)
        return SwitchStage(ref, cases, default_id)

    def loop(self, task: WorkflowTask, path: str) -> LoopStage:
        ref = task.task_reference_name
        body_id = f"{ref}.loop"
        self.sequence(body_id, task.loop_over or [], f"{path}.loopOver", loop=ref)
        inner = tuple(t.task_reference_name for t in task.loop_over or [])
        self.steps.add(task, extra_reads=inner)
        return LoopStage(ref, body_id)


def step_spec(
    task: WorkflowTask, fork_ref: str | None = None, extra_reads: tuple[str, ...] = ()
) -> StepSpec:
    """The spec of one task (a fork's join names its fork; a loop reads its body too)."""
    inputs = parse_parameter(task.input_parameters or {})
    join_on = tuple(task.join_on or ()) if task.type in ("JOIN", "EXCLUSIVE_JOIN") else ()
    if task.type == "EXCLUSIVE_JOIN":
        join_on += tuple(task.default_exclusive_join_task or ())
    # a join reads its fork too: a dynamic fork's record lists the branches it sent
    forks = (fork_ref,) if fork_ref is not None else ()
    # a loop's `items` is resolved with its input: the refs it names are read as well
    looped = task.type == "DO_WHILE" and task.items
    items = parameter_reads(parse_parameter(task.items)) if looped else ()
    # a cache key is resolved with the input: the refs it names beyond the input are read too
    key_roots = key_reads(task)
    cached = sorted(key_roots - {WORKFLOW_ROOT, TASK_ID_ROOT})
    reads = tuple(dict.fromkeys([*parameter_reads(inputs), *join_on, *forks, *extra_reads, *items,
                                 *cached]))
    return StepSpec(
        ref=task.task_reference_name,
        type=task.type,
        name=task.name,
        inputs=inputs,
        reads=reads,
        task=task,
        join_on=join_on,
        fork_ref=fork_ref,
        policy_overrides=task_overrides(task.task_definition, task.retry_count),
        reads_run=task.type in READS_RUN or any(
            e.static_root in (WORKFLOW_ROOT, None) for e in inputs.expressions())
        or WORKFLOW_ROOT in key_roots,
    )


def parameter_reads(parameter: Parameter) -> tuple[str, ...]:
    roots = parameter.roots() - {WORKFLOW_ROOT, TASK_ID_ROOT}
    return tuple(sorted(roots))


def refs_within(plan: Plan, stage: Stage) -> set[str]:
    """The refs of a stage's own task and of every task nested in it (branches, cases, body)."""
    refs = {stage.ref}
    inner: tuple[str, ...] = ()
    if isinstance(stage, ForkStage):
        refs.add(stage.join_ref)
        inner = stage.branches
    elif isinstance(stage, DynamicForkStage):
        refs.add(stage.join_ref)
    elif isinstance(stage, SwitchStage):
        inner = (*stage.cases.values(), stage.default)
    elif isinstance(stage, LoopStage):
        inner = (stage.body,)
    for sequence_id in inner:
        for nested in plan.sequences[sequence_id]:
            refs |= refs_within(plan, nested)
    return refs
