"""The well-formed part of a definition the schema refused, so the other checks still run.

A definition with schema errors is repaired on a copy: an unknown field is dropped, and a
task whose own schema failed becomes a stub with its place, reference name and (for fork
and join) type, so the tasks around it keep their paths and their checks. What the checks
find at a stub, or at the fields the schema already reported, is left out (`Repair.covers`),
as are reads of the refs of a stub's subtree (`Repair.refs`). Knows nothing of Celery or
Redis, and nothing of the checks themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from app.dsl.model import WorkflowDef

_TASK_LISTS: Final = frozenset({"tasks", "defaultCase", "loopOver"})
"""Keys whose value is a list of tasks (fork branches and SWITCH cases are one level deeper)."""
_NESTED_TASK_LISTS: Final = frozenset({"forkTasks", "decisionCases"})
_KEPT_TYPES: Final = frozenset({"FORK_JOIN", "FORK_JOIN_DYNAMIC", "JOIN"})
"""Types a stub keeps, so a JOIN after a refused fork (or a refused JOIN) is not misplaced."""
_UNION_MEMBERS: Final = {"workflowDefinition": ("str", "WorkflowDef"), "priority": ("int", "str")}
_ROUNDS: Final = 3
"""Repairs tried before giving up on the checks (a stub cannot fail; this is a backstop)."""


@dataclass
class Repair:
    """Where the schema already reported a problem, and the refs of the tasks it refused."""

    paths: set[str] = field(default_factory=set)
    refs: set[str] = field(default_factory=set)

    def covers(self, path: str) -> bool:
        """Whether a problem at `path` lies inside something the schema refused."""
        return any(path == p or path.startswith((p + ".", p + "[")) for p in self.paths)


def repair(
    data: Mapping[str, Any], errors: Sequence[Any]
) -> tuple[WorkflowDef, Repair] | None:
    """The definition without the parts the schema refused; None if no task list is left."""
    fixed: Any = copy.deepcopy(dict(data))
    done = Repair()
    for _ in range(_ROUNDS):
        for error in errors:
            if not _mend(fixed, _parts(error["loc"]), error["type"], done):
                return None
        try:
            return WorkflowDef.model_validate(fixed), done
        except ValidationError as exc:
            errors = exc.errors()
    return None


def _parts(loc: Sequence[Any]) -> list[Any]:
    """A pydantic location as keys into the raw data (its names for union members left out)."""
    parts: list[Any] = []
    for part in loc:
        if isinstance(part, str) and (
            part.startswith(("function-", "union["))
            or (parts and part in _UNION_MEMBERS.get(str(parts[-1]), ()))
        ):
            continue
        parts.append(part)
    return parts


def _task_end(parts: Sequence[Any]) -> int | None:
    """Index in `parts` of the innermost task the location lies in (None: outside any task)."""
    found = None
    for at, part in enumerate(parts):
        if not isinstance(part, int):
            continue
        if (at >= 1 and parts[at - 1] in _TASK_LISTS) or (
            at >= 2 and parts[at - 2] in _NESTED_TASK_LISTS
        ):
            found = at
    return found


def path_of(parts: Sequence[Any]) -> str:
    """Raw keys as the `path` of a problem: `tasks[1].forkTasks[0][2]`."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _mend(data: dict[str, Any], parts: list[Any], kind: str, done: Repair) -> bool:
    """Mend one schema error in `data`; False when what is left cannot be checked."""
    end = _task_end(parts)
    if end is None:
        if not parts or parts[0] == "tasks":
            return False  # no task list to check
        head = parts[0]
        data.pop(head, None)
        if head == "name":
            data["name"] = "_"
        done.paths.add(path_of(parts[:1]))
        return True
    container = _at(data, parts[:end])
    if not isinstance(container, list) or not 0 <= parts[end] < len(container):
        return True  # inside a stub already
    task = container[parts[end]]
    rest = parts[end + 1:]
    if kind == "extra_forbidden" and len(rest) == 1 and isinstance(task, dict):
        task.pop(rest[0], None)  # an unknown field: the rest of the task is still checked
        return True
    _stub(container, parts[end], parts[:end + 1], done)
    return True


def _at(data: Any, parts: Sequence[Any]) -> Any:
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _stub(tasks: list[Any], index: int, parts: list[Any], done: Repair) -> None:
    """Put a stub in place of a refused task; its subtree's refs are known but unchecked."""
    task = tasks[index]
    here = path_of(parts)
    done.paths.add(here)
    stack: list[Any] = [task]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("taskReferenceName")
            if isinstance(ref, str) and ref:
                done.refs.add(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    ref = task.get("taskReferenceName") if isinstance(task, dict) else None
    kind = task.get("type") if isinstance(task, dict) else None
    stub: dict[str, Any] = {
        "name": "_",
        "taskReferenceName": ref if isinstance(ref, str) and ref else f"\0{here}",
        "type": kind if kind in _KEPT_TYPES else "NOOP",
    }
    if stub["type"] == "FORK_JOIN":
        # its branch ends are unknown: the JOIN after it is not checked against them
        done.paths.add(f"{path_of(parts[:-1])}[{index + 1}].joinOn")
    tasks[index] = stub
