"""A plan in pieces: its outline in one text, its steps' tasks in groups of a few dozen.

A worker that builds the whole plan of a definition of 100,000 tasks holds some 350 MiB for
it, and more while it builds; a plan that heavy does not fit a worker's plan cache, so it
was built again for every step. In pieces, a worker reads the outline (the sequences of
stages and the workflow's own fields: a few hundred bytes a task) and then only the tasks
its steps run, one group each, keeping the specs it built most recently. A step's group
follows from its ref alone (a CRC of it), so the outline needs no index of the steps.

What a plan in pieces gives differs from the built plan in two ways the runtime never sees:
`definition.tasks` holds the first task only (the runtime reads the workflow's own fields),
and a step's `task` has no nested task lists (forkTasks, decisionCases, defaultCase,
loopOver: the stages hold what they are for). Pure: no Redis; `read` fetches pieces.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from app.compiler.plan import (
    MAIN,
    DynamicForkStage,
    ForkStage,
    LazySteps,
    LoopStage,
    Plan,
    Stage,
    StepSpec,
    StepStage,
    SwitchStage,
    parameter_reads,
    step_spec,
)
from app.dsl.expressions import parse_parameter
from app.dsl.model import WorkflowDef, WorkflowTask
from app.gc_pause import without_gc

NESTED: Final = ("forkTasks", "decisionCases", "defaultCase", "loopOver")
"""A task's nested task lists, left out of its piece (each nested task is a piece too)."""

SPECS_KEPT: Final = 1024
"""Step specs a plan in pieces keeps built (least recently used first out): a step reads its
own, a segment being compiled reads up to segment_size of them."""

PER_GROUP: Final = 64
"""Steps' tasks a group holds on average: a few KB to read for one step, and a few thousand
groups to write for 100,000 steps rather than a hundred thousand pieces."""

Read = Callable[[Sequence[str]], list[str]]
"""The named groups, in order (raises if one is missing)."""


def group_of(ref: str, groups: int) -> str:
    """The group that holds a step's task."""
    return str(zlib.crc32(ref.encode()) % groups)


@without_gc
def cut(plan: Plan, document: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """(outline, group -> its steps' tasks) of a plan built from `document` (its definition's
    JSON); a group is a JSON object, ref -> [task, fork_ref, extra_reads]."""
    steps = plan.steps
    assert isinstance(steps, LazySteps), "a plan in pieces is cut from a built plan"
    count = -(-len(steps) // PER_GROUP)
    groups: list[dict[str, Any]] = [{} for _ in range(count)]
    lists: list[Any] = [document["tasks"]]
    while lists:
        for task in lists.pop():
            own = task
            if not _NESTED_NAMES.isdisjoint(task):  # an operator: few tasks are
                own = _own(task)
                lists.extend(_nested(task))
            ref = task["taskReferenceName"]
            if ref in steps:
                fork_ref, extra_reads = steps.placement(ref)
                groups[zlib.crc32(ref.encode()) % count][ref] = [own, fork_ref, extra_reads]
    outline = {
        "definition": {k: v for k, v in document.items() if k != "tasks"},
        "first": _own(document["tasks"][0]),
        "sequences": {sid: [_code(stage) for stage in stages]
                      for sid, stages in plan.sequences.items()},
        "loopOf": dict(plan.loop_of),
        "lastRef": plan.last_ref,
        "steps": len(steps),
        "groups": count,
    }
    return _encode(outline), {str(i): _encode(group) for i, group in enumerate(groups)}


@without_gc
def assemble(digest: str, outline_text: str, read: Read) -> Plan:
    """The plan of an outline (cut's), whose step specs are built from pieces `read` gives."""
    outline = json.loads(outline_text)
    sequences = {sid: tuple(_stage(code) for code in codes)
                 for sid, codes in outline["sequences"].items()}
    controls = {stage.ref: stage for stages in sequences.values() for stage in stages
                if not isinstance(stage, StepStage)}
    definition = WorkflowDef.model_validate({**outline["definition"], "tasks": [outline["first"]]})
    output = parse_parameter(definition.output_parameters) if definition.output_parameters \
        else None
    return Plan(
        digest=digest,
        definition=definition,
        steps=PieceSteps(sequences, outline["steps"], outline["groups"], read),
        sequences=sequences,
        output=output,
        output_reads=parameter_reads(output) if output is not None else (),
        last_ref=outline["lastRef"],
        loop_of=outline["loopOf"],
        controls=controls,
    )


class PieceSteps(Mapping[str, StepSpec]):
    """Ref -> step spec, read and built when asked for, the last SPECS_KEPT of them kept."""

    def __init__(self, sequences: Mapping[str, tuple[Stage, ...]], count: int, groups: int,
                 read: Read) -> None:
        self._sequences = sequences
        self._count = count
        self._groups = groups
        self._read = read
        self._refs = frozenset(self._in_order())
        self._built: OrderedDict[str, StepSpec] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, ref: str) -> StepSpec:
        with self._lock:
            spec = self._built.get(ref)
            if spec is not None:
                self._built.move_to_end(ref)
                return spec
        if ref not in self._refs:
            raise KeyError(ref)
        task, fork_ref, extra_reads = json.loads(self._read([group_of(ref, self._groups)])[0])[ref]
        spec = step_spec(WorkflowTask.model_validate(task), fork_ref, tuple(extra_reads))
        with self._lock:
            self._built[ref] = spec
            if len(self._built) > SPECS_KEPT:
                self._built.popitem(last=False)
        return spec

    def __contains__(self, ref: object) -> bool:
        return ref in self._refs

    def __iter__(self) -> Iterator[str]:
        return self._in_order()

    def __len__(self) -> int:
        return self._count

    def _in_order(self) -> Iterator[str]:
        """The refs in the order the plan's builder adds them."""
        stack = [iter(self._sequences[MAIN])]
        while stack:
            stage = next(stack[-1], None)
            if stage is None:
                stack.pop()
                continue
            inner: tuple[str, ...] = ()
            if isinstance(stage, ForkStage | DynamicForkStage):
                yield stage.ref
                yield stage.join_ref
                inner = getattr(stage, "branches", ())
            elif isinstance(stage, SwitchStage):
                yield stage.ref
                inner = (*stage.cases.values(), stage.default)
            elif isinstance(stage, LoopStage):
                # the builder adds a loop after its body (the body's refs are its reads)
                stack.append(iter((StepStage(stage.ref),)))
                inner = (stage.body,)
            else:
                yield stage.ref
            stack.extend(iter(self._sequences[sid]) for sid in reversed(inner))


_NESTED_NAMES: Final = frozenset(NESTED)
# check_circular is off: the document was read from JSON, it has no cycles
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _own(task: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k not in _NESTED_NAMES}


def _nested(task: Mapping[str, Any]) -> list[Any]:
    """A task's nested task lists."""
    found: list[Any] = [*(task.get("forkTasks") or ()), *(task.get("decisionCases") or {}).values()]
    found += [task[name] for name in ("defaultCase", "loopOver") if task.get(name)]
    return found


def _code(stage: Stage) -> Any:
    if isinstance(stage, StepStage):
        return stage.ref
    if isinstance(stage, ForkStage):
        return ["F", stage.ref, stage.branches, stage.join_ref]
    if isinstance(stage, DynamicForkStage):
        return ["D", stage.ref, stage.join_ref]
    if isinstance(stage, SwitchStage):
        return ["S", stage.ref, stage.cases, stage.default]
    return ["L", stage.ref, stage.body]


def _stage(code: Any) -> Stage:
    if isinstance(code, str):
        return StepStage(code)
    kind, ref, *rest = code
    if kind == "F":
        return ForkStage(ref, tuple(rest[0]), rest[1])
    if kind == "D":
        return DynamicForkStage(ref, rest[0])
    if kind == "S":
        return SwitchStage(ref, rest[0], rest[1])
    return LoopStage(ref, rest[0])
