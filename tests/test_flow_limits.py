"""Flow limits across every worker: concurrency, rate, keys, a killed holder, visibility.

Real worker processes (`celery worker`, as the Procfile starts them): two instances of
two pool processes each. The steps note themselves in Redis (tests/limit_steps.py), so
what ran at once is measured by the steps, not inferred.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import tests.limit_steps  # noqa: F401  (registers the limited transformations here too)
from app import RunStatus, StepStatus, submit_workflow
from app.cli import main
from app.dsl.model import TaskDef
from app.errors import TransformationError
from app.limits import Limit, task_limit
from app.runtime import doctor
from app.runtime.limits import limit_store
from app.runtime.state import get_store
from app.store.limits import LIMITS_INDEX, limit_key
from tests.support import RedisServer, baton_settings, scaled, wait_for
from tests.test_faults import WorkerProcess, executions, redis_of_its_own

LEASE_SECONDS = 2.0
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def workers(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[WorkerProcess]]:
    folder = tmp_path_factory.mktemp("limits")
    env = {"BATON_TRANSFORMATIONS": "tests.transformations,tests.conformance_steps,"
                                    "tests.limit_steps",
           "BATON_LIMIT_LEASE_SECONDS": str(LEASE_SECONDS)}
    started = [WorkerProcess(folder / f"worker{i}.log", f"limits{i}-{uuid.uuid4().hex[:6]}",
                             concurrency=2, extra_env=env) for i in range(2)]
    for process in started:
        process.ready()
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


def steps_of(name: str, key: str, refs: list[str], **inputs: Any) -> list[dict[str, Any]]:
    return [{"name": name, "taskReferenceName": ref,
             "inputParameters": {"key": key, **inputs}} for ref in refs]


def fork(name: str, key: str, width: int) -> dict[str, Any]:
    branches = [steps_of(name, key, [f"b{i}"]) for i in range(width)]
    return {"name": "limited_fork", "version": 1, "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": branches},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN",
         "joinOn": [f"b{i}" for i in range(width)]}]}


def chain(name: str, key: str, length: int, **inputs: Any) -> dict[str, Any]:
    return {"name": "limited_chain", "version": 1,
            "tasks": steps_of(name, key, [f"s{i}" for i in range(length)], **inputs)}


def most_at_once(key: str) -> int:
    return int(get_store().client.get(f"test:limits:{key}:max") or 0)


def starts(key: str) -> list[float]:
    entries = get_store().client.lrange(f"test:limits:{key}:starts", 0, -1)
    return sorted(float(entry.split(":")[0]) for entry in entries)


def limits_document() -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["limits", "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output))


def test_a_concurrency_limit_holds_across_every_worker(workers: list[WorkerProcess]) -> None:
    # Given 30 steps of 0.1 s (fork members, fused chains) of a transformation limited to
    # two at once, on four pool processes
    key = uuid.uuid4().hex
    began = time.monotonic()
    runs = [submit_workflow(fork("two_at_once", key, 9)) for _ in range(2)]
    runs += [submit_workflow(chain("two_at_once", key, 3)) for _ in range(4)]

    # Then every run completes, never more than two of its steps ran at once, and the
    # waiting cost no attempt and no delivery
    for run in runs:
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    assert most_at_once(key) == 2
    assert len(starts(key)) == 30
    assert time.monotonic() - began >= 30 * 0.1 / 2
    for run in runs:
        for step in run.steps.values():
            assert step.attempts <= 1, (step.ref, step.attempts)
    # (a run's last step gives its slot back right after the call that ends the run)
    document = wait_for(lambda: next((
        d for d in limits_document() if d["id"] == "two_at_once" and d["inUse"] == 0), None),
        timeout=10, what="the slots to be free")
    assert document["capacity"] == 2 and document["waiting"] == 0


def test_a_task_definition_sets_conductors_concurrency_limit(
    workers: list[WorkerProcess],
) -> None:
    key = uuid.uuid4().hex
    definition = chain("noted", key, 1)
    definition["tasks"][0]["taskDefinition"] = {"name": "noted", "concurrentExecLimit": 1}
    runs = [submit_workflow(definition) for _ in range(8)]

    for run in runs:
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    assert most_at_once(key) == 1
    assert len(starts(key)) == 8


def test_a_rate_limit_spaces_starts_across_every_worker(workers: list[WorkerProcess]) -> None:
    # Given 15 steps offered at once to a transformation allowed 5 starts a second
    key = uuid.uuid4().hex
    runs = [submit_workflow(chain("five_a_second", key, 1)) for _ in range(15)]

    for run in runs:
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    times = starts(key)
    assert len(times) == 15
    # Then no second holds more than five starts (less 0.1 s: the steps note their start
    # a little after the limit gave it), and the starts come at five a second, no faster
    for index, first in enumerate(times):
        assert sum(1 for t in times[index:] if t < first + 0.9) <= 5, times
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 3.5 <= rate <= 5.3, rate


def test_a_keyed_limit_holds_each_key_apart(workers: list[WorkerProcess]) -> None:
    # Given a backlog of one customer's steps, one at a time per customer
    key = uuid.uuid4().hex
    busy = [submit_workflow(chain("one_per_customer", f"{key}-a", 1, seconds=0.4),
                            {"customer": "a"}) for _ in range(6)]
    wait_for(lambda: starts(f"{key}-a"), timeout=30, what="the first step of customer a")
    other = submit_workflow(chain("one_per_customer", f"{key}-b", 1), {"customer": "b"})

    # Then the other customer's step starts without waiting for that backlog
    assert other.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert len(starts(f"{key}-a")) < 6
    for run in busy:
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
    assert most_at_once(f"{key}-a") == 1
    ids = {d["id"] for d in limits_document()}
    assert {"one_per_customer|a", "one_per_customer|b"} <= ids


def held(key: str, tag: str) -> dict[str, Any]:
    return {"name": "held_slot", "version": 1, "tasks": [
        {"name": "hold", "taskReferenceName": "held",
         "inputParameters": {"key": key, "tag": tag},
         "taskDefinition": {"name": "hold", "concurrentExecLimit": 1}}]}


def holding_and_waiting(key: str) -> tuple[Any, Any, list[str]]:
    """A run whose step holds the only slot of `hold`, one whose step waits for it, and
    what the holder noted when it started (its tag and pid)."""
    first = submit_workflow(held(key, "first"))
    running = wait_for(lambda: executions(key), timeout=30, what="the first step to start")
    second = submit_workflow(held(key, "second"))
    wait_for(lambda: getattr(second.steps.get("held"), "waiting_on", None), timeout=30,
             what="the second step to wait on the limit")
    return first, second, running


def hold_limit() -> dict[str, Any]:
    return next(d for d in limits_document() if d["id"] == "hold")


def test_a_killed_holder_gives_its_slot_back_within_the_lease(
    workers: list[WorkerProcess],
) -> None:
    client = get_store().client
    key = uuid.uuid4().hex
    # Given one step holding the only slot, and another waiting for it
    first, second, running = holding_and_waiting(key)
    record = get_store().get_steps(second.id)["held"]
    assert record["status"] == StepStatus.SCHEDULED
    assert record["waitingOn"] == "limit hold (1 at once)"
    assert record.get("attempts") in (None, "0") and record.get("deliveries") in (None, "0")
    document = hold_limit()
    assert (document["inUse"], document["capacity"], document["waiting"]) == (1, 1, 1)
    shown = CliRunner().invoke(main, ["status", second.id])
    assert "SCHEDULED (waiting on limit hold (1 at once))" in shown.output, shown.output
    assert second.steps["held"].waiting_on == "limit hold (1 at once)"
    # its message is in Redis, not the broker: `baton doctor` does not count it as stuck
    assert second.id not in {stuck.run_id for stuck in doctor.find_stuck(0)}

    # When the pool process holding the slot is killed
    os.kill(int(running[0].split(":")[1]), signal.SIGKILL)
    killed = time.monotonic()

    # Then the waiting step gets the slot within the lease (and the killed step, delivered
    # again, waits behind it: the limit is never exceeded)
    wait_for(lambda: [e for e in executions(key) if e.startswith("second:")], timeout=30,
             what="the second step to start")
    assert time.monotonic() - killed <= scaled(LEASE_SECONDS + 3)
    assert [e.split(":")[0] for e in executions(key)] == ["first", "second"]
    client.rpush(f"test:gate:{key}:second", "open")
    assert second.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    wait_for(lambda: len(executions(key)) == 3, timeout=30,
             what="the killed step to run again")
    client.rpush(f"test:gate:{key}:first", "open")
    assert first.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert first.steps["held"].attempts == 2
    assert "waitingOn" not in get_store().get_steps(first.id)["held"]



def test_cancelling_a_run_gives_its_slot_to_the_next_in_line(
    workers: list[WorkerProcess],
) -> None:
    client = get_store().client
    key = uuid.uuid4().hex
    # Given a run whose step holds the only slot, and another run waiting for it
    first, second, _ = holding_and_waiting(key)

    # When the first run is cancelled (its step's process is killed)
    first.cancel()

    # Then the waiting step takes the slot, and the cancelled step does not run again
    wait_for(lambda: len(executions(key)) == 2, timeout=30, what="the second step to start")
    client.rpush(f"test:gate:{key}:second", "open")
    assert second.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert first.status is RunStatus.TERMINATED
    assert [e.split(":")[0] for e in executions(key)] == ["first", "second"]
    wait_for(lambda: hold_limit()["inUse"] == 0,
             timeout=30, what="the slots to be free")


def test_a_slot_handed_to_a_paused_run_goes_on_and_resume_asks_again(
    workers: list[WorkerProcess],
) -> None:
    client = get_store().client
    key = uuid.uuid4().hex
    # Given a run waiting for the slot another run holds, then paused
    first, second, _ = holding_and_waiting(key)
    second.pause()

    # When the holder ends, the slot is handed to the paused run's step, which gives it
    # back and waits with its run
    client.rpush(f"test:gate:{key}:first", "open")
    assert first.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    wait_for(lambda: hold_limit()["waiting"] == 0
             and not second.steps["held"].waiting_on, timeout=30,
             what="the paused run's step to give its slot back")
    assert hold_limit()["inUse"] == 0
    assert [e.split(":")[0] for e in executions(key)] == ["first"]

    # Then resuming the run asks the limit again, and its step runs
    second.resume()
    wait_for(lambda: len(executions(key)) == 2, timeout=30, what="the second step to start")
    client.rpush(f"test:gate:{key}:second", "open")
    assert second.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert second.steps["held"].attempts == 1


def test_a_retried_step_gives_its_slot_back_and_asks_again(
    workers: list[WorkerProcess],
) -> None:
    # Given steps that fail once each, one at a time
    keys = [uuid.uuid4().hex for _ in range(4)]
    runs = [submit_workflow({"name": "limited_retries", "version": 1, "tasks": [
        {"name": "flaky", "taskReferenceName": "flaky",
         "inputParameters": {"key": key, "failures": 1},
         "taskDefinition": {"name": "flaky", "concurrentExecLimit": 1}}]}) for key in keys]

    # Then each is retried once, and no slot is lost on the way
    for run in runs:
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
        assert run.steps["flaky"].attempts == 2
    wait_for(lambda: next(d for d in limits_document() if d["id"] == "flaky")["inUse"] == 0,
             timeout=10, what="every slot to be free")

def test_a_limit_not_reached_costs_its_step_no_call_of_its_own(
    workers: list[WorkerProcess], redis_server: RedisServer,
) -> None:
    # Given a step under a limit of three at once, which nothing else holds
    key = uuid.uuid4().hex
    definition = chain("noted", key, 1, seconds=0)
    definition["tasks"][0]["taskDefinition"] = {"name": "noted", "concurrentExecLimit": 3}
    warm = submit_workflow(definition)  # the limit is set up by its first ask
    assert warm.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    shas = {script.sha for script in limit_store()._scripts.values()}
    seen: list[str] = []
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    marker = f"limit-cost-end-{key}"
    with client.monitor() as monitor:
        def listen() -> None:
            for entry in monitor.listen():
                if marker in str(entry["command"]):
                    return
                seen.append(str(entry["command"]))

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        run = submit_workflow(definition)
        assert run.wait(timeout=scaled(30)) is RunStatus.COMPLETED
        # (a slot given back the long way would be, after the run's end, before this)
        wait_for(lambda: not limit_store().holders("noted"), timeout=10, what="a free slot")
        client.get(marker)
        reader.join(10)

    # Then it took its slot in its claim and gave it back with its output: none of the
    # limit's own scripts ran, and the slot is free again at once
    asked = [c for c in seen if c.startswith("EVALSHA") and c.split()[1] in shas]
    assert not asked, asked
    assert any(":limit:{noted}" in c for c in seen)  # the claim asked


# -- the Limit object and Conductor's fields (no workers) ------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"concurrency": -1}, "limit concurrency cannot be negative"),
    ({"rate": 2.5}, "limit rate must be a whole number, not 2.5"),
    ({"rate": 1, "per_seconds": 0}, "limit per_seconds must be more than 0"),
    ({"concurrency": 1, "key": "customer"}, "limit key 'customer' holds no ${...} expression"),
    ({"concurrency": 1, "key": "${workflow.input"}, "limit key '${workflow.input'"),
])
def test_a_limit_is_checked_when_declared(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformationError, match=re.escape(message)):
        Limit(**fields)


def test_a_task_definition_sets_the_counts_of_a_limit() -> None:
    default = Limit(concurrency=3, key="${workflow.input.c}")
    definition = TaskDef(name="t", concurrentExecLimit=2, rateLimitPerFrequency=10)
    assert task_limit(default, definition) == Limit(
        concurrency=2, rate=10, per_seconds=1, key="${workflow.input.c}")
    assert task_limit(None, TaskDef(name="t", rateLimitPerFrequency=6,
                                    rateLimitFrequencyInSeconds=60)) == Limit(
        rate=6, per_seconds=60)
    assert task_limit(None, TaskDef(name="t", concurrentExecLimit=0)) is None
    assert task_limit(default, None) is default
    assert Limit(rate=6, per_seconds=60).interval_ms == 10_000



# -- the limit's scripts on their own (Redis, no workers) --------------------------------------


def test_a_handed_message_its_sender_never_sent_is_parked_again_when_its_lease_ends(
    redis_server: RedisServer,
) -> None:
    store = limit_store()
    limit_id = f"unsent-{uuid.uuid4().hex}"

    def ask(holder: str, message: str) -> Any:
        return store.acquire(limit_id, holder, message, lease_ms=300, concurrency=1,
                             interval_ms=0, name="unsent", key="", ticket=False)

    # Given one holder and a message waiting for its slot
    assert ask("a", "{}").verdict == "run"
    assert ask("b", '{"m": "b"}').verdict == "parked"
    # When the holder's end hands the slot to the waiting message (twice: idempotent), and
    # the process that should send it dies before it does
    assert store.release(limit_id, "a", lease_ms=300).send == ['{"m": "b"}']
    assert store.release(limit_id, "a", lease_ms=300).send == []
    # Then the message is parked again once that lease ends, first in line, and handed on
    assert ask("c", "{}").verdict == "parked"

    def handed_again() -> list[str]:
        return store.release(limit_id, "", lease_ms=300).send

    assert wait_for(handed_again, timeout=5, what="the unsent message to be handed again") \
        == ['{"m": "b"}']
    state = next(s for s in store.states() if s.id == limit_id)
    assert (state.in_use, state.waiting) == (1, 1)  # b holds the slot, c waits


def test_a_rate_limit_says_when_its_next_start_is_due(redis_server: RedisServer) -> None:
    store = limit_store()
    limit_id = f"rate-{uuid.uuid4().hex}"

    def ask(holder: str) -> Any:
        return store.acquire(limit_id, holder, json.dumps({"h": holder}), lease_ms=5000,
                             concurrency=0, interval_ms=500, name="rate", key="",
                             ticket=False)

    assert ask("a").verdict == "run"
    began = time.time() * 1000
    second = ask("b")
    # the next start is due one interval after the first, and a timer is asked for then
    assert second.verdict == "parked"
    assert began + 300 <= second.timer_ms <= began + 600
    assert ask("c").timer_ms == 0  # one timer is pending already
    assert store.release(limit_id, "", lease_ms=5000).send == []  # not due yet


def test_a_keyed_limit_left_idle_is_forgotten_and_one_in_use_is_kept(
    redis_server: RedisServer,
) -> None:
    store = limit_store()
    client = get_store().client
    name = f"idle-{uuid.uuid4().hex}"
    ids = [f"{name}|{customer}" for customer in ("acme", "bolt")]

    def ask(limit_id: str, holder: str, message: str = "") -> Any:
        return store.acquire(limit_id, holder, message, lease_ms=30_000, concurrency=1,
                             interval_ms=0, name=name, key=limit_id.split("|")[1],
                             ticket=False)

    def alive(limit_id: str) -> bool:
        return bool(client.exists(limit_key(limit_id)))

    with baton_settings(limit_idle_seconds="0.3"):
        # Given two keys of one limit, each holding its slot, one with another step waiting
        assert ask(ids[0], "a1").verdict == "run"
        assert ask(ids[1], "b1").verdict == "run"
        assert ask(ids[1], "b2", '{"m": "b2"}').verdict == "parked"
        # When each gives its slot back (bolt's goes to its waiting step)
        store.release(ids[0], "a1", lease_ms=30_000)
        assert store.release(ids[1], "b1", lease_ms=30_000).send == ['{"m": "b2"}']
        # Then the idle key is forgotten once its idle time is up; the one in use is kept
        wait_for(lambda: not alive(ids[0]), timeout=scaled(10), what="the idle key to go")
        assert alive(ids[1]) and client.pttl(limit_key(ids[1])) == -1
        assert [s.id for s in store.states() if s.id.startswith(name)] == [ids[1]]
        # And an idle key asked again is a limit as before, kept while in use
        assert ask(ids[0], "a2").verdict == "run"
        assert ask(ids[0], "a3", '{"m": "a3"}').verdict == "parked"
        assert client.pttl(limit_key(ids[0])) == -1


def test_the_index_of_limits_forgets_those_gone(redis_server: RedisServer) -> None:
    store = limit_store()
    client = get_store().client
    name = f"swept-{uuid.uuid4().hex}"
    with baton_settings(limit_idle_seconds="0.2"):
        # Given many keys of a limit, each used once and left idle until it expired
        for n in range(20):
            limit_id = f"{name}|k{n}"
            store.acquire(limit_id, "h", "", lease_ms=30_000, concurrency=1, interval_ms=0,
                          name=name, key=f"k{n}", ticket=False)
            store.release(limit_id, "h", lease_ms=30_000)
        wait_for(lambda: not client.exists(limit_key(f"{name}|k19")), timeout=scaled(10),
                 what="the keys to expire")
        listed = [str(i) for i in client.zrange(LIMITS_INDEX, 0, -1)]
        assert sum(i.startswith(name) for i in listed) == 20
        # When new keys come, each looking at the few listed longest ago, as many as it
        # takes to look at each listed once
        new = [f"{name}|n{n}" for n in range(len(listed) // 3 + 1)]
        for n, limit_id in enumerate(new):
            store.acquire(limit_id, "h", "", lease_ms=30_000, concurrency=1, interval_ms=0,
                          name=name, key=f"n{n}", ticket=False)
    # Then those gone have left the index, and every limit alive is still in it
    left = [str(i) for i in client.zrange(LIMITS_INDEX, 0, -1)]
    assert sorted(i for i in left if i.startswith(name)) == sorted(new)
    assert all(i in left for i in listed if not i.startswith(name))
    assert not any(s.name is None for s in store.states())


def test_a_redis_restart_keeps_a_limits_holders_and_line(tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    base = limit_key("hold")
    # two pool processes: one holds the slot while the other parks the steps that wait
    with redis_of_its_own(tmp_path, "limits-aof", concurrency=2, extra_env={
            "BATON_LIMIT_LEASE_SECONDS": "3",
            "BATON_TRANSFORMATIONS": "tests.transformations,tests.limit_steps"}) as own:
        client = own.client

        def started() -> list[str]:
            return [e.split(":")[0] for e in client.lrange(f"test:exec:{key}", 0, -1)]

        def state() -> tuple[list[str], list[str], int]:
            return (client.zrange(f"{base}:holders", 0, -1),
                    client.zrange(f"{base}:waiting", 0, -1), client.hlen(f"{base}:parked"))

        # Given one step holding the only slot of its limit and two waiting in line
        runs = {"first": own.submit(held(key, "first"))}
        wait_for(lambda: started() == ["first"], timeout=scaled(30), what="the first step")
        runs |= {tag: own.submit(held(key, tag)) for tag in ("second", "third")}
        wait_for(lambda: len(state()[1]) == 2, timeout=scaled(30), what="two steps in line")
        before = state()
        # When Redis restarts (its AOF replayed)
        own.restart_redis()
        # Then the holder, the line and the parked messages are as they were (and the
        # worker, which held the limit's timer message, goes on consuming)
        assert state() == before and len(before[0]) == 1 and before[2] == 2
        # and every step runs, never two at once, each once it is handed the slot
        opened: set[str] = set()

        def all_completed() -> bool:
            assert len(client.zrange(f"{base}:holders", 0, -1)) <= 1
            for tag in set(started()) - opened:
                client.rpush(f"test:gate:{key}:{tag}", "open")
                opened.add(tag)
            return all(own.status(run_id) == "COMPLETED" for run_id in runs.values())

        wait_for(all_completed, timeout=scaled(60), what="every run to complete")
        assert set(started()) == {"first", "second", "third"}
        wait_for(lambda: state() == ([], [], 0), timeout=scaled(10), what="the limit free")
