"""Bounded messages and nesting: long sequences compile in segments, whatever their length."""

from __future__ import annotations

import json
from typing import Any

from app.compiler.canvas import compile_route
from app.compiler.plan import build_plan
from app.dsl.validate import parse_definition


def chain_of(steps: int) -> dict[str, Any]:
    tasks = [{"name": "echo", "taskReferenceName": f"s{i}", "inputParameters": {"i": i}}
             for i in range(steps)]
    return {"name": "long", "version": 1, "schemaVersion": 2, "tasks": tasks}


def forks_of(stages: int) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    for i in range(stages):
        tasks.append({"name": "fork", "taskReferenceName": f"f{i}", "type": "FORK_JOIN",
                      "forkTasks": [[{"name": "echo", "taskReferenceName": f"a{i}"}],
                                    [{"name": "echo", "taskReferenceName": f"b{i}"}]]})
        tasks.append({"name": "join", "taskReferenceName": f"j{i}", "type": "JOIN",
                      "joinOn": [f"a{i}", f"b{i}"]})
    return {"name": "forks", "version": 1, "schemaVersion": 2, "tasks": tasks}


def first_message_bytes(definition: dict[str, Any]) -> int:
    plan = build_plan(parse_definition(definition))
    route = compile_route(plan, "00000000-0000-0000-0000-000000000000", segment_size=32)
    return len(json.dumps(route))


def test_the_first_message_does_not_grow_with_the_workflow() -> None:
    small = first_message_bytes(chain_of(40))
    huge = first_message_bytes(chain_of(10_000))

    assert huge == small
    assert huge < 16_000


def test_chained_fork_join_stages_stay_shallow() -> None:
    assert first_message_bytes(forks_of(1_000)) == first_message_bytes(forks_of(40))


def test_210_chained_fork_join_stages_complete(worker: Any) -> None:
    from app import RunStatus, submit_workflow

    run = submit_workflow(forks_of(210))

    assert run.wait(timeout=120) is RunStatus.COMPLETED
    assert len(run.steps) == 210 * 4
