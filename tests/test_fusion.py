"""Step fusion and folded joins: fewer messages, the same records, retries and lifecycle.

Consecutive steps of one transformation run in one message and a fork's JOIN runs in the
message of the step after it (app.compiler.fusion, app.runtime.fusion). What a user sees
of each step stays its own: input, output, attempts, retries, pause, redelivery.
Messages are counted as Redis receives them (tests.broker_messages).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from app import RunStatus, StepStatus, submit_workflow
from app.runtime.state import get_store
from tests.broker_messages import broker_messages
from tests.support import RedisServer, baton_settings, scaled, wait_for


def step(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": "SIMPLE", "inputParameters": inputs}


def workflow(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "fused", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **extra}


def fork(ref: str, *branches: list[dict[str, Any]], join_on: list[str],
         **join: Any) -> list[dict[str, Any]]:
    return [{"name": "fork", "taskReferenceName": ref, "type": "FORK_JOIN",
             "forkTasks": list(branches)},
            {"name": "join", "taskReferenceName": f"{ref}_join", "type": "JOIN",
             "joinOn": join_on, **join}]


def chained() -> dict[str, Any]:
    """Three echo steps, an add (same queue, another transformation), an echo."""
    return workflow(
        step("a", value="${workflow.input.x}"),
        step("b", value="${a.output.value}-b"),
        step("c", value="${b.output.value}-c"),
        step("sum", "add", a=1, b=2),
        step("d", value="${c.output.value}", total="${sum.output.sum}"),
    )


def run_counted(redis_server: RedisServer, definition: dict[str, Any],
                **input: Any) -> tuple[Any, Counter[str]]:
    """Run a definition to its end; the task messages sent meanwhile, by queue."""
    with broker_messages(redis_server.url) as sent:
        run = submit_workflow(definition, input=input)
        status = run.wait(timeout=scaled(30))
    assert status is RunStatus.COMPLETED, run.record()
    # a priority message's list is the queue's name, kombu's separator and its priority
    return run, Counter(queue.split("\x06")[0] for queue, _ in sent.sizes)


def count(key: str) -> int:
    return int(get_store().client.get(f"test:attempts:{key}") or 0)


def test_consecutive_steps_of_one_transformation_share_a_message(
    worker: Any, redis_server: RedisServer
) -> None:
    run, sent = run_counted(redis_server, chained(), x="v")

    assert sent["echo"] == 3  # a+b+c, sum, d
    assert run.result(timeout=1) == {"value": "v-b-c", "total": 3}
    steps = run.steps
    assert [steps[ref].input for ref in "abc"] == [
        {"value": "v"}, {"value": "v-b"}, {"value": "v-b-c"}]
    assert {s.status for s in steps.values()} == {StepStatus.COMPLETED}
    assert all(s.attempts == 1 for s in steps.values())
    ordered = [steps[ref] for ref in ("a", "b", "c", "sum", "d")]
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert before.started_at <= before.ended_at <= after.started_at


def test_fusion_is_turned_off_per_workflow_and_globally(
    worker: Any, redis_server: RedisServer
) -> None:
    off = {**chained(), "metadata": {"baton": {"fuseSteps": False}}}
    run, sent = run_counted(redis_server, off, x="v")
    assert sent["echo"] == 5
    assert run.result(timeout=1) == {"value": "v-b-c", "total": 3}

    with baton_settings(fuse_steps="0"):
        run, sent = run_counted(redis_server, chained(), x="w")
    assert sent["echo"] == 5
    assert run.result(timeout=1) == {"value": "w-b-c", "total": 3}


def test_a_join_runs_in_the_message_of_the_step_after_it(
    worker: Any, redis_server: RedisServer
) -> None:
    definition = workflow(
        step("first", value="${workflow.input.x}"),
        *fork("fan", [step("left", v="${first.output.value}-l")],
              [step("right", v="${first.output.value}-r")], join_on=["left", "right"]),
        step("last", both="${fan_join.output}"),
    )
    run, sent = run_counted(redis_server, definition, x="v")

    assert sum(sent.values()) == 4 and sent["baton"] == 0  # no join task of its own
    assert run.result(timeout=1) == {"both": {"left": {"v": "v-l"}, "right": {"v": "v-r"}}}
    steps = run.steps
    join = steps["fan_join"]
    assert join.status is StepStatus.COMPLETED and join.type == "JOIN"
    assert join.output == {"left": {"v": "v-l"}, "right": {"v": "v-r"}}
    assert steps["fan"].status is StepStatus.COMPLETED
    assert max(steps["left"].ended_at, steps["right"].ended_at) <= join.started_at
    assert join.ended_at <= steps["last"].started_at


def test_a_join_with_a_timeout_keeps_its_own_task(
    worker: Any, redis_server: RedisServer
) -> None:
    definition = workflow(
        *fork("fan", [step("left")], [step("right")], join_on=["left", "right"],
              taskDefinition={"name": "join", "timeoutSeconds": 600}),
        step("last"),
    )
    run, sent = run_counted(redis_server, definition)

    assert sent["baton"] >= 1  # the join (and its watch) on the control queue
    assert run.steps["fan_join"].status is StepStatus.COMPLETED


def test_a_step_with_a_time_limit_of_its_own_runs_in_a_message_of_its_own(
    worker: Any, redis_server: RedisServer
) -> None:
    # `stubborn`'s transformation sets a timeout: a time limit bounds a message
    definition = workflow(step("one", "stubborn", seconds=0), step("two", "stubborn", seconds=0))
    run, sent = run_counted(redis_server, definition)

    assert sent["faulty"] == 2
    assert {s.status for s in run.steps.values()} == {StepStatus.COMPLETED}


def test_fused_steps_are_retried_each_on_its_own_count(
    worker: Any, redis_server: RedisServer
) -> None:
    key = uuid.uuid4().hex
    # flaky retries twice: the third step fails twice after the others' retries, which the
    # message it runs in has counted
    definition = workflow(step("one", "flaky", key=f"{key}1", failures=1),
                          step("two", "flaky", key=f"{key}2", failures=1),
                          step("three", "flaky", key=f"{key}3", failures=2))
    run = submit_workflow(definition)

    assert run.wait(timeout=scaled(30)) is RunStatus.COMPLETED, run.record()
    steps = run.steps
    assert [steps[ref].attempts for ref in ("one", "two", "three")] == [2, 2, 3]
    assert [count(f"{key}{n}") for n in (1, 2, 3)] == [2, 2, 3]  # nothing done ran again
    assert [len(steps[ref].failed_attempts) for ref in ("one", "two", "three")] == [1, 1, 2]


def test_a_run_paused_between_fused_steps_holds_the_rest_back(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(workflow(step("a", "gate", key=f"{key}a"),
                                   step("b", "gate", key=f"{key}b"),
                                   step("c", "gate", key=f"{key}c")))
    wait_for(lambda: count(f"gate:{key}a") == 1, timeout=scaled(20), what="step a to start")
    run.pause()
    get_store().client.rpush(f"test:gate:{key}a", "open")
    wait_for(lambda: run.steps["a"].status is StepStatus.COMPLETED, timeout=scaled(20),
             what="step a to complete")

    # b's claim finds the run paused: the message from b on is held back, nothing runs
    parked = wait_for(lambda: get_store().client.lrange(f"baton:run:{{{run.id}}}:parked", 0, -1),
                      timeout=scaled(20), what="the rest of the message to be held back")
    held = json.loads(parked[0])
    assert (held["args"][1], held["kwargs"]["fused"]) == ("b", ["c"])
    assert count(f"gate:{key}b") == 0 and "b" not in _started(run)
    run.resume()
    wait_for(lambda: count(f"gate:{key}b") == 1, timeout=scaled(20), what="step b to start")
    get_store().client.rpush(f"test:gate:{key}b", "open")
    get_store().client.rpush(f"test:gate:{key}c", "open")

    assert run.wait(timeout=scaled(30)) is RunStatus.COMPLETED, run.record()
    assert [count(f"gate:{key}{ref}") for ref in "abc"] == [1, 1, 1]


def _started(run: Any) -> set[str]:
    return {ref for ref, s in run.steps.items() if s.status is not StepStatus.SCHEDULED}
