"""No task holds its process for ever, and cancelling a run stops its work, on real workers.

Each test starts `celery worker` processes with a prefork pool of one process (the way the
Procfile starts them), so a pool process that is killed, or kept busy, shows in what the
next message has to wait for.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app import RunStatus, StepStatus, submit_workflow
from app.queue_variants import queue_length, queue_lists
from app.runtime.state import get_store
from tests.support import CeleryWorker, RedisServer, scaled, wait_for

FORK_WIDTH = int(os.environ.get("BATON_CANCEL_FORK_WIDTH", "3000"))
pytestmark = pytest.mark.timeout(120)


class Worker(CeleryWorker):
    """A prefork worker of one pool process that can say whether it is running a task."""

    def idle(self) -> bool:
        """Whether the worker runs no task now (asked over its control queue)."""
        import socket

        import app

        node = f"{self.name}@{socket.gethostname()}"
        active = app.celery.control.inspect(destination=[node], timeout=1).active()
        return active is not None and not any(active.values())


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def start(workers: list[Worker], log: Path, queues: str, **env: str) -> Worker:
    worker = Worker(log, queues.split(","), prefix="cancel", env=env)
    workers.append(worker)
    worker.ready()
    return worker


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "cancel", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def count(key: str) -> int:
    return int(get_store().client.get(f"test:attempts:{key}") or 0)


def client() -> redis.Redis:
    return get_store().client


def test_a_control_task_past_control_time_limit_is_stopped_and_its_run_fails(
    workers: list[Worker], tmp_path: Path
) -> None:
    # a jq program that never ends, under a script time limit that never stops it: only
    # the control time limit can end the step (its soft limit stops the wait, and the
    # evaluator process is killed with it)
    start(workers, tmp_path / "worker.log", "baton,echo", BATON_CONTROL_TIME_LIMIT="2",
          BATON_SCRIPT_TIME_LIMIT="600")
    spin = {"name": "spin", "taskReferenceName": "spin", "type": "JSON_JQ_TRANSFORM",
            "inputParameters": {"queryExpression": "last(range(1e15))"}}
    assert_time_limit_ends_fork_member(spin, "control_time_limit: stopped after 1.5s")


def test_a_task_that_ignores_its_soft_limit_is_killed_and_its_run_fails(
    workers: list[Worker], tmp_path: Path
) -> None:
    # a transformation that swallows the soft limit: the pool process is killed at the
    # hard one, and the worker's main process records the failure
    start(workers, tmp_path / "worker.log", "baton,echo,faulty")
    stubborn = {"name": "stubborn", "taskReferenceName": "spin",
                "inputParameters": {"seconds": 600}}
    assert_time_limit_ends_fork_member(stubborn, "timeoutSeconds: killed after 6s")


def assert_time_limit_ends_fork_member(spin: dict[str, Any], message: str) -> None:
    # a fork member: the stopped step must not be counted towards its fork either
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
        [spin], [{"name": "echo", "taskReferenceName": "beside"}]]}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN",
            "joinOn": ["spin", "beside"]}
    run = submit_workflow(wf(fork, join, {"name": "echo", "taskReferenceName": "after"}))

    assert run.wait(timeout=scaled(20)) is RunStatus.FAILED
    step = run.steps["spin"]
    assert step.status is StepStatus.TIMED_OUT
    # the JOIN never ran: it is cancelled with its run, as in Conductor
    assert run.steps["join"].status is StepStatus.CANCELED and "after" not in run.steps
    reason = run.record()["reasonForIncompletion"]
    assert message in reason, reason
    # the message was acknowledged, not delivered again, and the pool process is free
    next_run = submit_workflow(wf({"name": "echo", "taskReferenceName": "e",
                                   "inputParameters": {"v": 1}}))
    assert next_run.result(timeout=scaled(20)) == {"v": 1}
    wait_for(lambda: client().hlen("unacked") == 0, timeout=scaled(10), what="no unacked message")
    assert run.steps["spin"].attempts == 1


def test_cancelling_a_run_kills_its_running_step_and_frees_the_process_at_once(
    workers: list[Worker], tmp_path: Path
) -> None:
    start(workers, tmp_path / "worker.log", "baton,echo,faulty")
    key = uuid.uuid4().hex
    slow = submit_workflow(wf({"name": "nap", "taskReferenceName": "slow",
                               "inputParameters": {"key": key, "seconds": 60}}))
    wait_for(lambda: count(key) == 1, timeout=30, what="the 60 s step to start")
    other = submit_workflow(wf({"name": "echo", "taskReferenceName": "e",
                                "inputParameters": {"v": 2}}))

    cancelled_at = time.monotonic()
    slow.cancel("not needed")
    # one pool process: the other run's step can only start once the 60 s one is stopped
    assert other.result(timeout=scaled(10)) == {"v": 2}
    freed_after = time.monotonic() - cancelled_at

    assert slow.status is RunStatus.TERMINATED
    assert slow.steps["slow"].status is StepStatus.CANCELED
    wait_for(lambda: client().hlen("unacked") == 0, timeout=scaled(10),
             what="the killed step's message to be acknowledged")
    assert count(key) == 1  # not delivered again
    print(f"\ncancel -> pool process free for the next run's step: {freed_after:.2f}s")


def _redis_figures() -> dict[str, int]:
    info = client().info("memory")
    results = sum(1 for _ in client().scan_iter("celery-task-meta-*", count=1000))
    return {"keys": int(client().dbsize()), "used_memory": int(info["used_memory"]),
            "result_keys": results}


def test_a_cancelled_wide_fork_stops_sending_and_its_queued_branches_are_dropped(
    workers: list[Worker], tmp_path: Path
) -> None:
    # the fork's control task runs on a worker of the control queue only: the branches it
    # sends stay queued, so what was sent can be counted
    start(workers, tmp_path / "control.log", "baton")
    client().delete(*queue_lists("echo"))
    before = _redis_figures()
    fork = {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC",
            "inputParameters": {"forkTaskName": "echo",
                                "forkTaskInputs": "${workflow.input.inputs}"}}
    join = {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN"}
    run = submit_workflow(wf(fork, join), input={"inputs": [{"i": i}
                                                            for i in range(FORK_WIDTH)]})
    wait_for(lambda: queue_length(client(), "echo") > 0, timeout=30,
             what="the fork to send branches")
    run.cancel("not needed")
    control = workers[0]
    wait_for(control.idle, timeout=30, what="the fork's task to end")
    sent = queue_length(client(), "echo")

    # the branches that were sent reach a worker of their own queue and are dropped there
    drain_start = time.monotonic()
    start(workers, tmp_path / "echo.log", "echo")
    wait_for(lambda: queue_length(client(), "echo") == 0 and client().hlen("unacked") == 0,
             timeout=60, what="the queued branches to be delivered")
    drained = time.monotonic() - drain_start
    after = _redis_figures()
    parked = int(client().llen(f"baton:run:{{{run.id}}}:parked"))
    recorded = int(client().scard(f"baton:run:{{{run.id}}}:refs"))
    print(json.dumps({"fork_width": FORK_WIDTH, "branches_sent": sent, "parked": parked,
                      "steps_recorded": recorded, "drain_seconds_with_worker_start":
                      round(drained, 2), "keys_added": after["keys"] - before["keys"],
                      "result_keys_added": after["result_keys"] - before["result_keys"],
                      "memory_added_kib": (after["used_memory"] - before["used_memory"]) // 1024}))

    assert run.status is RunStatus.TERMINATED
    assert sent < FORK_WIDTH  # the fork stopped sending once the run was cancelled
    assert parked == 0  # nothing held back for a run that will never go on
    assert recorded <= 2  # the fork (and its join, if it ran): no branch was claimed
    assert after["result_keys"] - before["result_keys"] <= 2
