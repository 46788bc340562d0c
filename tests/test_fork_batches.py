"""A fork wider than BATON_FORK_SPREAD sends its one-step branches in batches: fewer
messages than branches, every branch still claimed, recorded and retried on its own, a
batch redelivered after its worker died runs no completed branch again, and the fusion
switches turn batching off.

The worker is a `celery worker` process of its own (a pool process is killed in one
test) with a spread of 4; the tests compile with the same spread.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import RunStatus, StepStatus, submit_workflow
from app.runtime.state import get_store
from tests.broker_messages import broker_messages
from tests.support import CeleryWorker, RedisServer, baton_settings, scaled, wait_for

SPREAD = 4
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def spread_worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[CeleryWorker]:
    from app.celery_app import all_queues

    log = Path(tmp_path_factory.mktemp("batches")) / "worker.log"
    process = CeleryWorker(log, all_queues(), concurrency=2, prefix="batches", env={
        "BATON_FORK_SPREAD": str(SPREAD), "BATON_VISIBILITY_TIMEOUT": "3",
        "BATON_UNACKED_RESTORE_INTERVAL": "1", "BATON_UNACKED_RESTORE_THROTTLE": "1"})
    try:
        yield process.ready()
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def spread(spread_worker: CeleryWorker) -> Iterator[None]:
    with baton_settings(fork_spread=str(SPREAD)):
        yield


def workflow(tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "batches", "version": 1, "schemaVersion": 2, "tasks": tasks, **extra}


def fork(branches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    refs = [branch["taskReferenceName"] for branch in branches]
    return [{"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN",
             "forkTasks": [[branch] for branch in branches]},
            {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN", "joinOn": refs}]


def counted(ref: str, key: str, value: int) -> dict[str, Any]:
    return {"name": "counted", "taskReferenceName": ref,
            "inputParameters": {"counter": f"{key}-{ref}", "value": value}}


def calls(key: str, ref: str) -> int:
    return int(get_store().client.get(f"test:attempts:{key}-{ref}") or 0)


def run_counting(redis_server: RedisServer, definition: dict[str, Any]) -> tuple[Any, int]:
    """Run `definition` to its end; the messages put on the `echo` queue meanwhile."""
    with broker_messages(redis_server.url) as sent:
        run = submit_workflow(definition)
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    # a queue's name in Redis ends in its priority step (kombu)
    return run, sum(1 for queue, _ in sent.sizes if queue.split("\x06")[0] == "echo")


# 12 branches fit the first message (the fork is inline); 60 go through `baton.fork`
@pytest.mark.parametrize("width", [12, 60])
def test_a_wide_fork_runs_its_branches_in_batches_each_recorded_on_its_own(
    redis_server: RedisServer, width: int
) -> None:
    key = uuid.uuid4().hex
    refs = [f"b{i}" for i in range(width)]
    run, messages = run_counting(redis_server, workflow(
        fork([counted(ref, key, i) for i, ref in enumerate(refs)])))

    assert messages == SPREAD  # width / SPREAD branches a message
    steps = run.steps
    for i, ref in enumerate(refs):
        assert steps[ref].status is StepStatus.COMPLETED
        assert steps[ref].output == {"value": i, "calls": 1}
        assert steps[ref].attempts == 1
    assert steps["fan_join"].output == {ref: {"value": i, "calls": 1}
                                        for i, ref in enumerate(refs)}
    assert [calls(key, ref) for ref in refs] == [1] * width


def test_a_wide_dynamic_fork_runs_its_branches_in_batches_under_their_own_refs(
    redis_server: RedisServer,
) -> None:
    width = 12
    definition = workflow([
        {"name": "dyn", "taskReferenceName": "dyn", "type": "FORK_JOIN_DYNAMIC",
         "inputParameters": {"forkTaskName": "echo",
                             "forkTaskInputs": [{"value": i} for i in range(width)]}},
        {"name": "join", "taskReferenceName": "dyn_join", "type": "JOIN"}])
    run, messages = run_counting(redis_server, definition)

    assert messages == SPREAD
    refs = [f"_echo_{i}" for i in range(width)]
    assert run.steps["dyn"].output == {"forkedTasks": refs}
    outputs = {ref: {"value": i, "__index": i} for i, ref in enumerate(refs)}
    for ref in refs:
        step = run.steps[ref]
        assert (step.status, step.input, step.output, step.attempts) == (
            StepStatus.COMPLETED, outputs[ref], outputs[ref], 1)
    assert run.steps["dyn_join"].output == outputs


def test_a_branch_of_a_batch_failing_once_is_retried_and_the_batch_completes() -> None:
    key = uuid.uuid4().hex
    width = 12  # batches of 3: b1 fails once, in the middle of the first
    branches = [{"name": "flaky", "taskReferenceName": f"b{i}",
                 "inputParameters": {"key": f"{key}-b{i}", "failures": int(i == 1)}}
                for i in range(width)]
    run = submit_workflow(workflow(fork(branches)))

    assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    steps = run.steps
    assert steps["b1"].attempts == 2 and steps["b1"].output == {"attempt": 2}
    for i in (0, *range(2, width)):
        assert steps[f"b{i}"].attempts == 1 and steps[f"b{i}"].output == {"attempt": 1}
    assert set(steps["fan_join"].output) == {f"b{i}" for i in range(width)}


def held_fork(key: str, width: int, closed: str) -> Any:
    """A run of a fork of `width` `hold` branches h0, h1, ..., whose gates are open but
    `closed`'s."""
    tags = [f"h{i}" for i in range(width)]
    for tag in tags:
        if tag != closed:
            get_store().client.rpush(f"test:gate:{key}:{tag}", "open")
    return submit_workflow(workflow(fork([
        {"name": "hold", "taskReferenceName": tag, "inputParameters": {"key": key, "tag": tag}}
        for tag in tags])))


def executions(key: str) -> list[tuple[str, int]]:
    """(tag, pid) of each execution of a `hold` step of `key`, in order."""
    entries = get_store().client.lrange(f"test:exec:{key}", 0, -1)
    return [(tag, int(pid)) for tag, pid in (entry.split(":") for entry in entries)]


def started(key: str, tag: str) -> list[int]:
    return [pid for ran, pid in executions(key) if ran == tag]


def test_a_batch_whose_worker_process_is_killed_runs_no_completed_branch_again() -> None:
    key = uuid.uuid4().hex
    width = 6  # batches of 2: [h0, h1], [h2, h3], [h4, h5]; killed while h1 runs
    tags = [f"h{i}" for i in range(width)]
    client = get_store().client
    run = held_fork(key, width, closed="h1")

    first = wait_for(lambda: started(key, "h1"), timeout=60, what="branch h1 to start")[0]
    os.kill(first, signal.SIGKILL)  # the pool process running the batch [h0, h1]
    wait_for(lambda: len(started(key, "h1")) == 2, timeout=60,
             what="the batch to be delivered again")
    client.rpush(f"test:gate:{key}:h1", "open")

    assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    ran = executions(key)
    assert ("h0", first) in ran  # h0 ran in the killed process, before h1
    assert sorted(tag for tag, _ in ran) == sorted([*tags, "h1"])  # h0 did not run again
    steps = run.steps
    assert steps["h1"].attempts == 2
    assert all(steps[tag].status is StepStatus.COMPLETED and steps[tag].output == {"tag": tag}
               for tag in tags)


def idle() -> bool:
    """Whether the tests' worker runs no task now (it answered, with nothing active)."""
    import app

    replies = app.celery.control.inspect(timeout=1).active() or {}
    return bool(replies) and not any(replies.values())


def test_a_batch_that_finds_its_run_paused_is_held_back_from_that_branch_on() -> None:
    key = uuid.uuid4().hex
    width = 12  # batches of 3: [h0, h1, h2] is paused while h1 runs
    run = held_fork(key, width, closed="h1")
    wait_for(lambda: started(key, "h1"), timeout=60, what="branch h1 to start")

    run.pause()
    get_store().client.rpush(f"test:gate:{key}:h1", "open")
    wait_for(lambda: run.steps["h1"].status is StepStatus.COMPLETED, timeout=30,
             what="the running branch to finish")
    wait_for(idle, timeout=30, what="the worker to run nothing")
    assert get_store().client.llen(f"baton:run:{{{run.id}}}:parked")  # the rest of its batch
    assert not started(key, "h2")

    run.resume()
    assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    assert sorted(tag for tag, _ in executions(key)) == sorted(f"h{i}" for i in range(width))
    assert set(run.steps["fan_join"].output) == {f"h{i}" for i in range(width)}


def test_a_batch_of_a_cancelled_run_runs_none_of_its_branches_after() -> None:
    key = uuid.uuid4().hex
    run = held_fork(key, 12, closed="h1")
    wait_for(lambda: started(key, "h1"), timeout=60, what="branch h1 to start")

    run.cancel("enough")
    get_store().client.rpush(f"test:gate:{key}:h1", "open")

    assert run.wait(timeout=scaled(30)) is RunStatus.TERMINATED
    wait_for(lambda: run.steps["h1"].status is StepStatus.CANCELED, timeout=30,
             what="the running branch to end")
    wait_for(idle, timeout=30, what="the worker to run nothing")
    assert not started(key, "h2")
    assert "h2" not in run.steps


def test_fusion_switched_off_sends_a_message_per_branch(redis_server: RedisServer) -> None:
    key = uuid.uuid4().hex
    with baton_settings(fork_spread=str(SPREAD), fuse_steps="0"):  # where the route compiles
        _, messages = run_counting(redis_server, workflow(
            fork([counted(f"b{i}", key, i) for i in range(12)])))
    assert messages == 12

    # the workflow's own switch, read by the worker that sends the branches of a wide fork
    _, messages = run_counting(redis_server, workflow(
        fork([counted(f"c{i}", key, i) for i in range(60)]),
        metadata={"baton": {"fuseSteps": False}}))
    assert messages == 60


def test_branches_that_are_not_single_fusable_steps_are_never_batched() -> None:
    from app.compiler.canvas import compile_route
    from app.compiler.plan import build_plan
    from app.dsl.validate import parse_definition

    echo = [counted(f"e{i}", "k", i) | {"name": "echo"} for i in range(6)]
    adds = [{"name": "add", "taskReferenceName": f"a{i}",
             "inputParameters": {"a": i, "b": 1}} for i in range(2)]
    branches = [[step] for step in [*echo, *adds]]
    branches.append([{"name": "echo", "taskReferenceName": "long0"},
                     {"name": "echo", "taskReferenceName": "long1"}])
    branches.append([{"name": "delayed", "taskReferenceName": "late0", "type": "WAIT"}])
    definition = workflow([
        {"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN",
         "forkTasks": branches},
        {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN",
         "joinOn": ["e0", "a0", "long1", "late0"]}])
    route = compile_route(build_plan(parse_definition(definition)), "r", 32)
    assert route is not None
    members = [(task.task, task.args[1], task.kwargs.get("fused"))
               for task in route.tasks]

    # 10 branches over a spread of 4: batches of 3 of each transformation
    assert members == [
        ("tasks.echo", "e0", ["e1", "e2"]), ("tasks.echo", "e3", ["e4", "e5"]),
        ("tasks.add", "a0", ["a1"]),
        ("tasks.echo", "long0", ["long1"]),  # fused as a sequence, never batched
        ("baton.wait", "late0", None)]
