"""What the run store spends on a step: the Redis commands of its claim and its record.

Every command a script runs counts (Redis's command statistics count them, as the
benchmark's figures do), so the scripts read each record once and write it once. These
tests watch one run's commands through MONITOR and check the records are what they were
field by field, in the same order, while the commands stay within the budget.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from app.runtime.state import get_store
from app.store import RunStore, StepStatus
from app.store.keys import run_key, step_key
from app.store.metric_fields import METRICS_PREFIX
from tests.support import RedisServer, wait_for

CLAIM_BUDGET = 5
"""EVALSHA, the run's and the step's HMGET, one HSET, the SADD of its ref."""
RECORD_BUDGET = 9
"""EVALSHA, the run's and the step's HMGET, the run's byte count, one HSET; and the metrics
(app.store.metric_fields): a bucket and a sum of the step-duration and of the queue-wait
histograms, four HINCRBY inside the same script (no round trip)."""
STEP_FIELDS = ["deliveries", "status", "referenceTaskName", "startTime", "workerId", "taskId",
               "taskType", "taskDefName", "attempts", "scheduledTime", "input", "output",
               "endTime", "bytes"]
"""A completed step's record, in the order its fields were first written."""
DEFINITION = {"name": "cost", "version": 1, "schemaVersion": 2,
              "tasks": [{"name": "echo", "taskReferenceName": "last"}]}


@pytest.fixture
def store(redis_server: RedisServer) -> RunStore:
    return get_store()


def new_run(store: RunStore) -> str:
    run_id = str(uuid.uuid4())
    fields = {"workflowId": run_id, "workflowType": "cost", "version": "1",
              "status": "RUNNING", "input": "{}", "plan": "cost-digest"}
    store.create_run(run_id, digest="cost-digest", definition_json=json.dumps(DEFINITION),
                     fields=fields, variables={}, idempotency=None)
    return run_id


@contextmanager
def commands_on(server: RedisServer, run_id: str) -> Iterator[list[str]]:
    """The commands Redis runs on the run's keys and on the metrics' (scripts' own commands
    included) while the block runs, by name, as MONITOR reports them."""
    seen: list[str] = []
    client = redis.Redis.from_url(server.url, decode_responses=True)
    marker = f"cost-end-{run_id}"
    with client.monitor() as monitor:
        ready = threading.Event()

        def listen() -> None:
            ready.set()
            for entry in monitor.listen():
                command = str(entry["command"])
                if marker in command:
                    return
                if f"{{{run_id}}}" in command or METRICS_PREFIX in command:
                    seen.append(command.split(" ", 1)[0].upper())

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        ready.wait(5)
        yield seen
        client.get(marker)  # ends the listener once every earlier command was seen
        reader.join(10)
    assert not reader.is_alive(), "MONITOR did not report the end marker"


def claim(store: RunStore, run_id: str, ref: str) -> Any:
    return store.claim_step(run_id, ref, dependencies=[], worker="w", task_id="t",
                            task_type="SIMPLE", name="step", max_deliveries=3,
                            reads_run=False)


def test_a_claim_and_its_record_stay_within_budget(
    store: RunStore, redis_server: RedisServer
) -> None:
    # Given a running run, and scripts Redis has loaded (a first call loads its script)
    scratch = new_run(store)
    claim(store, scratch, "s1")
    store.complete_step(scratch, "s1", input={}, output={})
    run_id = new_run(store)
    # When a step is claimed and recorded
    with commands_on(redis_server, run_id) as claimed:
        assert claim(store, run_id, "s1").attempts == 1
    with commands_on(redis_server, run_id) as recorded:
        assert store.complete_step(run_id, "s1", input={}, output={"ok": True}) is False
    # Then each is one script of a few commands, and the record is what it always was
    assert len(claimed) <= CLAIM_BUDGET, claimed
    assert len(recorded) <= RECORD_BUDGET, recorded
    record = store.client.hgetall(step_key(run_id, "s1"))
    assert list(record) == STEP_FIELDS
    assert record["deliveries"] == "1" and record["attempts"] == "1"
    assert record["status"] == StepStatus.COMPLETED
    assert record["bytes"] == str(len('{"ok":true}'))
    assert store.client.hget(run_key(run_id), "bytes") == str(len("{}") + len('{"ok":true}'))


def test_a_claim_again_counts_on_and_clears_what_the_last_attempt_left(
    store: RunStore
) -> None:
    # Given a step whose attempt failed and is to be tried again
    run_id = new_run(store)
    claim(store, run_id, "s1")
    store.retry_step(run_id, "s1", error={"type": "Boom", "message": "no"}, input={})
    key = step_key(run_id, "s1")
    store.client.hset(key, "endTime", "1")
    # When it is claimed again
    assert claim(store, run_id, "s1").attempts == 2
    # Then the counters went on, and the end of the earlier attempt is gone
    record = store.client.hgetall(key)
    assert record["attempts"] == "2" and "endTime" not in record
    # and its record, once completed, keeps no error of the failed attempt
    store.complete_step(run_id, "s1", input={}, output={})
    record = store.client.hgetall(key)
    assert record["status"] == StepStatus.COMPLETED
    assert not {"error", "reasonForIncompletion", "cached"} & set(record)


def test_a_claim_past_the_delivery_limit_is_exhausted(store: RunStore) -> None:
    # Given a step delivered as often as it may be
    run_id = new_run(store)
    for _ in range(3):
        claim(store, run_id, "s1")
    # When it is delivered once more
    found = claim(store, run_id, "s1")
    # Then its claim says so, with the count
    assert (found.verdict.value, found.detail) == ("exhausted", "4")
    assert store.client.hget(step_key(run_id, "s1"), "deliveries") == "4"


def test_the_last_record_ends_the_run_with_its_output(store: RunStore) -> None:
    # Given a run whose last step is claimed
    run_id = new_run(store)
    claim(store, run_id, "last")
    # When its record ends the run
    assert store.complete_step(run_id, "last", input={}, output={"n": 1},
                               run_output={"n": 1}, final=True) is True
    # Then the run completed with the output, and its keys keep the retention
    run = store.client.hgetall(run_key(run_id))
    assert run["status"] == "COMPLETED" and run["output"] == '{"n":1}'
    assert not {"deferredStatus", "reasonForIncompletion"} & set(run)
    wait_for(lambda: store.client.ttl(step_key(run_id, "last")) > 0, timeout=5,
             what="the step's record to get the run's retention")
