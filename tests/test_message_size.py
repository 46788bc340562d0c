"""Every broker message stays under 16 KiB whatever the workflow's shape.

Messages are measured as Redis stores them (tests.broker_messages: the LPUSH payloads
MONITOR shows), first as the route a run starts with is sent, then over whole runs on a
real worker, where continues, wide forks, switches and loops send the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.broker_messages import broker_messages
from tests.support import RedisServer

LIMIT = 16 * 1024
RUN_ID = "00000000-0000-0000-0000-000000000000"  # no such run: a worker would stop its steps


def step(ref: str) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": {"value": ref}}


def workflow(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": tasks}


def fork(ref: str, branches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"name": "fork", "taskReferenceName": ref, "type": "FORK_JOIN",
             "forkTasks": branches},
            {"name": "join", "taskReferenceName": f"{ref}_join", "type": "JOIN",
             "joinOn": [branch[-1]["taskReferenceName"] for branch in branches]}]


def forks(count: int, prefix: str = "") -> list[dict[str, Any]]:
    return [task for i in range(count)
            for task in fork(f"{prefix}f{i}", [[step(f"{prefix}a{i}")], [step(f"{prefix}b{i}")]])]


def nested(depth: int, prefix: str = "n") -> list[dict[str, Any]]:
    """Forks of two branches inside forks, `depth` deep, each level with steps after."""
    if depth == 0:
        return [step(f"{prefix}s")]
    return [*fork(f"{prefix}f", [[*nested(depth - 1, prefix + "l"), step(f"{prefix}x")],
                                nested(depth - 1, prefix + "r")]),
            step(f"{prefix}after")]


def wide(width: int, length: int) -> list[dict[str, Any]]:
    return fork("w", [[step(f"w{i}_{k}") for k in range(length)] for i in range(width)])


def loop(stages: int, iterations: int) -> list[dict[str, Any]]:
    return [{"name": "loop", "taskReferenceName": "lp", "type": "DO_WHILE",
             "loopCondition": f"if ($.lp['iteration'] < {iterations}) {{ true; }} "
                              "else { false; }",
             "inputParameters": {}, "loopOver": forks(stages, "L")}]


def switch(stages: int) -> list[dict[str, Any]]:
    return [{"name": "switch", "taskReferenceName": "sw", "type": "SWITCH",
             "evaluatorType": "value-param", "expression": "k",
             "inputParameters": {"k": "heavy"}, "decisionCases": {"heavy": forks(stages, "H")},
             "defaultCase": [step("d")]}]


SHAPES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "long chain": lambda: [step(f"s{i}") for i in range(5_000)],
    "1000 chained fork/join": lambda: forks(1_000),
    "nested forks": lambda: nested(6),
    "wide fork": lambda: wide(500, 1),
    "wide fork of long branches": lambda: wide(200, 40),
    "loop": lambda: loop(100, 2),
    "switch": lambda: switch(100),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_route_a_run_starts_with_fits_a_message(redis_server: RedisServer,
                                                    shape: str) -> None:
    from app.compiler.canvas import compile_route
    from app.compiler.plan import build_plan
    from app.config import get_settings
    from app.dsl.validate import parse_definition

    # a step first: the whole first segment then rides in that step's message
    plan = build_plan(parse_definition(workflow(shape, [step("start"), *SHAPES[shape]()])))
    route = compile_route(plan, RUN_ID, get_settings().segment_size)
    assert route is not None
    with broker_messages(redis_server.url) as sent:
        route.apply_async()

    assert sent.count >= 1
    assert sent.largest <= LIMIT
    client = redis.Redis.from_url(redis_server.url)
    client.delete(*{queue for queue, _ in sent.sizes})  # no worker ever takes them


def run_measured(redis_server: RedisServer, tasks: list[dict[str, Any]],
                 timeout: float) -> tuple[Any, int, int]:
    from app import submit_workflow

    with broker_messages(redis_server.url) as sent:
        run = submit_workflow(workflow("sized", tasks))
        status = run.wait(timeout=timeout)
    return run, status, sent.largest


def test_1000_chained_fork_join_stages_complete_in_small_messages(
    worker: Any, redis_server: RedisServer
) -> None:
    from app import RunStatus
    from tests.support import scaled

    run, status, largest = run_measured(redis_server, forks(1_000), scaled(240))

    assert status is RunStatus.COMPLETED
    assert len(run.steps) == 1_000 * 4
    assert largest <= LIMIT


@pytest.mark.parametrize("shape", ["wide fork", "wide fork of long branches", "nested forks",
                                   "loop", "switch"])
def test_heavy_shapes_complete_in_small_messages(
    worker: Any, redis_server: RedisServer, shape: str
) -> None:
    from app import RunStatus
    from tests.support import scaled

    tasks = {"wide fork": lambda: wide(200, 1), "wide fork of long branches": lambda: wide(40, 20),
             "loop": lambda: loop(30, 2), "switch": lambda: switch(30)}.get(
                 shape, SHAPES[shape])()
    run, status, largest = run_measured(redis_server, tasks, scaled(180))

    assert status is RunStatus.COMPLETED
    assert largest <= LIMIT
    if shape.startswith("wide"):
        width = len(tasks[0]["forkTasks"])
        assert all(f"w{i}_0" in run.steps for i in range(width))


def test_a_wide_fork_sent_again_runs_no_branch_twice(worker: Any) -> None:
    """The first message sent again after its wide fork sent its branches (as a worker
    that dies before acknowledging it would): the branches come again, none runs again."""
    from celery.signals import task_postrun

    from app import RunStatus, submit_workflow
    from app.compiler.canvas import compile_route
    from app.compiler.plan import build_plan
    from app.config import get_settings
    from app.dsl.validate import parse_definition
    from app.registry import TASK_PREFIX
    from app.runtime.state import get_store
    from tests.support import scaled, wait_for

    key = f"refork-{id(worker)}"
    width = 40
    branches = [[{"name": "counted", "taskReferenceName": f"c{i}",
                  "inputParameters": {"counter": f"{key}-{i}"}}] for i in range(width)]
    human = {"name": "approve", "taskReferenceName": "approve", "type": "HUMAN"}
    definition = workflow("refork", [*fork("w", branches), human])
    finished: list[str] = []

    def count(sender: Any = None, **_: Any) -> None:
        if sender is not None and sender.name == TASK_PREFIX + "counted":
            finished.append(sender.name)

    task_postrun.connect(count, weak=False)
    try:
        run = submit_workflow(definition)
        client = get_store().client
        wait_for(lambda: "approve" in run.steps, scaled(60),
                 "the fork's branches all ran and the step after the join waits")
        route = compile_route(build_plan(parse_definition(definition)), run.id,
                              get_settings().segment_size)
        assert route is not None
        assert route.tasks[0].task == "baton.fork"  # the fork is too wide for one message
        # as a redelivery: the same route, sent under the run's root (newer routes only
        # are stopped as stale)
        route.apply_async(root_id=get_store().get_run_fields(run.id, "root")["root"])
        wait_for(lambda: len(finished) >= 2 * width, scaled(60),
                 "every branch step of the second fork was delivered")
        run.complete_step("approve", {"ok": True})

        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
        counts = client.mget([f"test:attempts:{key}-{i}" for i in range(width)])
        assert counts == ["1"] * width
        assert len(run.steps) == width + 3  # the fork, its branches, the join, the HUMAN
    finally:
        task_postrun.disconnect(count)


def test_forks_that_fit_a_message_stay_inline_and_segments_hold_several() -> None:
    """A small fork the segment has no room left for starts the next segment, inline: only
    forks too wide for any message become `baton.fork` tasks."""
    import json

    from app.compiler.canvas import compile_route
    from app.compiler.plan import build_plan
    from app.config import get_settings
    from app.dsl.validate import parse_definition

    plan = build_plan(parse_definition(workflow("forks", [step("start"), *forks(100)])))
    route = json.dumps(compile_route(plan, RUN_ID, get_settings().segment_size))

    assert "baton.fork" not in route
    assert route.count("baton.join") >= 4
    assert route.count("baton.continue") == 1
