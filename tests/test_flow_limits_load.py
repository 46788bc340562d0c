"""Flow limits under load, on real worker processes (two instances of two pool processes):
a concurrency limit keeps its count and its pace over 200 steps, a rate limit its rate
under five times the load it allows with the workers near idle, and one key's backlog
does not hold another key's first step back.

These take about a minute together: each measures a pace, so it runs for a while.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from app import RunStatus, submit_workflow
from app.runtime.state import get_store
from app.store.limits import limit_keys
from bench.harness import process_tree_cpu
from tests.support import scaled, wait_for
from tests.test_faults import WorkerProcess
from tests.test_flow_limits import most_at_once, starts, steps_of, workers  # noqa: F401

pytestmark = pytest.mark.timeout(240)


def forked(name: str, key: str, width: int, **inputs: Any) -> dict[str, Any]:
    branches = [steps_of(name, key, [f"b{i}"], **inputs) for i in range(width)]
    return {"name": "limited_load", "version": 1, "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": branches},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN",
         "joinOn": [f"b{i}" for i in range(width)]}]}


def test_a_concurrency_limit_of_two_runs_200_steps_at_its_pace(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    # Given 200 steps of 0.2 s, limited to two at once, offered at once on four processes
    key = uuid.uuid4().hex
    runs = [submit_workflow(forked("two_at_once", key, 50, seconds=0.2)) for _ in range(4)]
    for run in runs:
        assert run.wait(timeout=scaled(120)) is RunStatus.COMPLETED

    # Then never more than two ran at once, as the steps saw it, and the 200 took within
    # 15% of 200 x 0.2 / 2 s: a slot is handed on as soon as it frees
    assert most_at_once(key) == 2
    times = starts(key)
    assert len(times) == 200
    took = times[-1] + 0.2 - times[0]
    assert 20.0 * 0.99 <= took <= 20.0 * 1.15, took


def test_a_rate_limit_holds_its_rate_under_five_times_the_load_with_idle_workers(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    # Given steps allowed ten starts a second, offered at fifty a second for 30 s
    key, tenant = uuid.uuid4().hex, uuid.uuid4().hex
    definition = {"name": "rate_load", "version": 1,
                  "tasks": steps_of("ten_a_second", key, ["s"])}
    cpu_before = sum(process_tree_cpu(w.process.pid) or 0.0 for w in workers)
    began = time.monotonic()
    runs = []
    for index in range(50 * 30):
        due = began + index / 50
        if (ahead := due - time.monotonic()) > 0:
            time.sleep(ahead)  # pacing the offered load, not waiting for a state
        runs.append(submit_workflow(definition, {"tenant": tenant}))
    offered = time.monotonic() - began
    cpu = sum(process_tree_cpu(w.process.pid) or 0.0 for w in workers) - cpu_before
    try:
        # Then the steps started at ten a second (within 10%), counted after the first
        # second, over the time the load was offered
        times = starts(key)
        window = [t for t in times if times[0] + 1 <= t <= times[0] + offered]
        rate = (len(window) - 1) / (window[-1] - window[0])
        assert 9.0 <= rate <= 11.0, rate
        # ... and the workers stayed near idle: the waiting took no worker slot (each
        # step is claimed, asked and parked once, in a few ms), under a quarter of the
        # four processes' time
        assert offered >= 29.0
        assert cpu / (offered * 4) < 0.25, cpu / offered
    finally:
        for run in runs:  # the backlog of 1,200 would run for two minutes more
            if run.status is RunStatus.RUNNING:
                run.cancel()
        get_store().client.delete(*limit_keys(f"ten_a_second|{tenant}")[:5])


def test_one_keys_backlog_of_1000_does_not_hold_back_another_keys_first_step(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    # Given a backlog of 1,000 steps of customer a, one at a time per customer
    backlog = [submit_workflow(steps_of_run("one_per_customer", f"{key}-a"), {"customer": "a"})
               for _ in range(1000)]
    waiting = limit_keys("one_per_customer|a")[3]
    # When customer b's one step is sent
    sent = time.time()
    other = submit_workflow(steps_of_run("one_per_customer", f"{key}-b"), {"customer": "b"})

    # Then it starts within 2 s: a's steps over their limit wait in Redis, parked as the
    # workers meet them (a few ms each), and take no worker slot while they wait
    wait_for(lambda: starts(f"{key}-b"), timeout=scaled(30), what="customer b's step")
    assert starts(f"{key}-b")[0] - sent <= 2.0, starts(f"{key}-b")[0] - sent
    assert other.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert len(starts(f"{key}-a")) < 500
    assert get_store().client.zcard(waiting) > 400
    for run in backlog:
        if run.status is RunStatus.RUNNING:
            run.cancel()
    get_store().client.delete(*limit_keys("one_per_customer|a")[:5])


def steps_of_run(name: str, key: str) -> dict[str, Any]:
    return {"name": "limited_one", "version": 1,
            "tasks": steps_of(name, key, ["s"], seconds=0.05)}
