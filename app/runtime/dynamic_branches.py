"""The branches a FORK_JOIN_DYNAMIC step is given, as Conductor derives them.

Two forms (Conductor's ForkJoinDynamicTaskMapper):

- `dynamicForkTasksParam` names a list of tasks (WorkflowTask JSON: name,
  taskReferenceName, type, subWorkflowParam, ...) and `dynamicForkTasksInputParamName` a
  map of ref -> input;
- `forkTaskInputs` (a list) runs one task per item: `forkTaskWorkflow` (+
  `forkTaskWorkflowVersion`) as a SUB_WORKFLOW, else `forkTaskName` of `forkTaskType`
  (SIMPLE by default; a system type without a name is named after its type, no type and no
  name runs a transformation named after the fork's ref). Each branch's input is its item
  (an item that is not an object is given as `input`) plus `__index`, and its ref is
  `_<name>_<i>`, or `_<fork ref>_<name>_<i>` once the run has run another dynamic fork.

A branch may be of any type that is one step (SIMPLE, HTTP, INLINE, SUB_WORKFLOW, ...);
control flow (a fork, a switch, a loop) cannot be a branch. Branches of one transformation
may be sent in batches, as a wide static fork's are (app.compiler.batches, `batch_key`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from app.compiler.fusion import step_fusion_key
from app.compiler.plan import STEP_TYPES, step_spec
from app.dsl.fields import unhonoured_task_fields
from app.dsl.model import WorkflowTask
from app.runtime.operators import OperatorError

BRANCH_TYPES: Final = STEP_TYPES - {"JOIN", "EXCLUSIVE_JOIN", "DYNAMIC"}
"""Types a dynamic fork's branch may have: each runs as one step."""
TRANSFORMATION_TYPES: Final = frozenset({"SIMPLE"})


@dataclass(frozen=True)
class Branch:
    """One branch a dynamic fork defines: its ref, its task and its (resolved) input."""

    ref: str
    task: dict[str, Any]
    """The branch's WorkflowTask as JSON (name, type, subWorkflowParam, ...)."""
    input: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.task["name"])

    @property
    def type(self) -> str:
        return str(self.task.get("type") or "SIMPLE")


def batch_key(branch: Branch) -> str | None:
    """The fusion key a branch may share a message on, as the step runner will see its
    spec (app.runtime.step builds it from the task kept with the run); None if it runs
    alone."""
    if branch.type not in TRANSFORMATION_TYPES:
        return None
    return step_fusion_key(step_spec(WorkflowTask.model_validate(branch.task)))


def listed_branches(task: WorkflowTask, given: dict[str, Any]) -> list[Branch]:
    """The branches of the `dynamicForkTasksParam` form."""
    param = task.dynamic_fork_tasks_param or ""
    listed = given.get(param)
    inputs = given.get(task.dynamic_fork_tasks_input_param_name or "") or {}
    if not isinstance(listed, list) or not isinstance(inputs, dict):
        raise OperatorError(f"'{param}' must be a list of tasks and its inputs a map of ref "
                            "to input")
    branches = []
    for index, item in enumerate(listed):
        if not isinstance(item, dict) or not item.get("name"):
            raise OperatorError(f"dynamic task {index} has no name")
        ref = str(item.get("taskReferenceName") or f"{item['name']}_{index}")
        defined = {**item, "taskReferenceName": ref}
        branches.append(Branch(ref, _task_json(defined, f"dynamic task '{ref}'"),
                               dict(inputs.get(ref) or {})))
    return branches


def item_branches(
    fork_ref: str, given: dict[str, Any], another_fork_ran: Callable[[str], bool]
) -> list[Branch]:
    """The branches of the `forkTaskInputs` form (one per item)."""
    items = given.get("forkTaskInputs")
    if not isinstance(items, list):
        raise OperatorError("give dynamicForkTasksParam, or forkTaskInputs (a list) with "
                            "forkTaskName, forkTaskType or forkTaskWorkflow")
    workflow = given.get("forkTaskWorkflow")
    kind = str(given.get("forkTaskType") or "SIMPLE")
    name = given.get("forkTaskName")
    if workflow:
        name, kind = str(workflow), "SUB_WORKFLOW"
    elif not name:
        name = kind if kind not in TRANSFORMATION_TYPES else fork_ref
    prefix = f"_{fork_ref}_{name}" if items and another_fork_ran(f"_{name}_0") else f"_{name}"
    branches = []
    for index, item in enumerate(items):
        ref = f"{prefix}_{index}"
        branch_input = dict(item) if isinstance(item, dict) else {"input": item}
        branch_input["__index"] = index
        task: dict[str, Any] = {"name": name, "taskReferenceName": ref, "type": kind}
        if workflow:
            version = given.get("forkTaskWorkflowVersion")
            task["subWorkflowParam"] = {"name": name, "version": _version(version)}
        branches.append(Branch(ref, _task_json(task, f"forkTaskInputs[{index}]"),
                               branch_input))
    return branches


def _task_json(item: dict[str, Any], where: str) -> dict[str, Any]:
    """The branch's task, checked: a known one-step type and a valid WorkflowTask."""
    kind = str(item.get("type") or "SIMPLE")
    if kind not in BRANCH_TYPES:
        raise OperatorError(f"{where}: type {kind} cannot be a dynamic fork's branch (one "
                            f"of {', '.join(sorted(BRANCH_TYPES))})")
    try:
        task = WorkflowTask.model_validate({**item, "type": kind})
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"])
        raise OperatorError(f"{where}: {path}: {first['msg']}") from None
    # what validation refuses in a definition is refused in a task given at run time too
    for problem in unhonoured_task_fields(task):
        raise OperatorError(f"{where}: {problem.path}: {problem.message}")
    return task.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _version(value: Any) -> int | None:
    """forkTaskWorkflowVersion as Conductor reads it: a number, or latest."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
