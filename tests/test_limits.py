"""Containment limits: what a hostile definition or payload may cost, each failing by name.

Limits come from the settings (app.config), read once per process: a test sets the
environment and clears the cached settings, which the in-process worker reads too.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from app import RunStatus, StepStatus, submit_workflow, transformation
from app.compiler.plan import build_plan
from app.config import get_settings
from app.dsl.validate import parse_definition
from app.errors import DefinitionError
from app.runtime.state import get_store, plans
from app.store.keys import definition_key
from tests.support import scaled

SetLimits = Callable[..., None]


@transformation(queue="echo", retry_count=2)
def limits_nan() -> dict[str, Any]:
    return {"value": [1.0, math.nan]}


@transformation(queue="echo", retry_count=2)
def limits_set() -> dict[str, Any]:
    return {"tags": {"a", "b"}}


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[SetLimits]:
    """Set limits (`max_loop_iterations=3`) for the test and its in-process worker."""

    def set_limits(**values: Any) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"BATON_{name.upper()}", str(value))
        get_settings.cache_clear()

    yield set_limits
    monkeypatch.undo()
    get_settings.cache_clear()


def simple(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": "SIMPLE", "inputParameters": inputs}


def workflow(*tasks: dict[str, Any], name: str = "limits_wf") -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def failure(run: Any) -> tuple[str, dict[str, Any]]:
    """(failed ref, its error) of a run that ended FAILED."""
    assert run.wait(timeout=scaled(30)) is RunStatus.FAILED
    ref = run.record()["failedReferenceTaskName"]
    return ref, run.steps[ref].error


# -- unbounded work ------------------------------------------------------------------------------


def test_a_loop_that_never_ends_fails_at_the_iteration_limit(worker: Any, limits: SetLimits,
                                                             ) -> None:
    limits(max_loop_iterations=3)
    loop = {"name": "loop", "taskReferenceName": "forever", "type": "DO_WHILE",
            "loopCondition": "true",
            "loopOver": [{"name": "noop", "taskReferenceName": "tick", "type": "NOOP"}]}
    run = submit_workflow(workflow(loop))

    ref, error = failure(run)
    assert ref == "forever"
    assert "loop: ran 3 iterations" in error["message"]
    assert "BATON_MAX_LOOP_ITERATIONS" in error["message"]
    assert run.steps["forever"].status is StepStatus.FAILED
    assert "tick__4" not in run.steps


def test_a_dynamic_fork_wider_than_the_limit_fails_before_any_branch(
    worker: Any, limits: SetLimits,
) -> None:
    limits(max_fork_width=3)
    fork = {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC",
            "inputParameters": {"forkTaskName": "echo",
                                "forkTaskInputs": "${workflow.input.inputs}"}}
    join = {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN"}
    run = submit_workflow(workflow(fork, join), input={"inputs": [{"i": i} for i in range(4)]})

    ref, error = failure(run)
    assert ref == "fan"
    assert "fork: 4 branches are over the limit of 3" in error["message"]
    assert "BATON_MAX_FORK_WIDTH" in error["message"]
    assert set(run.steps) == {"fan"}  # no branch was defined or sent
    assert get_store().get_dynamic_step(run.id, "_echo_0") is None


def test_a_definition_over_the_task_limit_is_refused_before_it_is_parsed(
    limits: SetLimits,
) -> None:
    limits(max_definition_tasks=1000)
    huge = workflow(*(simple(f"t{i}", v=i) for i in range(100_000)))

    started = time.perf_counter()
    with pytest.raises(DefinitionError) as caught:
        submit_workflow(huge)
    took = time.perf_counter() - started

    assert str(caught.value) == ("tasks: 100000 tasks (nested ones included) are over the "
                                 "limit of 1000 (BATON_MAX_DEFINITION_TASKS)")
    # counting 100,000 dicts; parsing them into models takes seconds
    assert took < scaled(1.0), f"refused in {took:.2f}s"


def test_nested_tasks_count_towards_the_definition_limit(limits: SetLimits) -> None:
    limits(max_definition_tasks=10)
    fork = {"name": "f", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        [simple(f"a{i}") for i in range(3)], [simple(f"b{i}") for i in range(3)]]}
    join = {"name": "j", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["a2", "b2"]}
    switch = {"name": "s", "taskReferenceName": "s", "type": "SWITCH",
              "evaluatorType": "value-param", "expression": "x",
              "inputParameters": {"x": "a"},
              "decisionCases": {"a": [simple("c0")]}, "defaultCase": [simple("d0")]}
    definition = workflow(fork, join, switch)  # 2 + 6 + 1 + 2 = 11 tasks

    with pytest.raises(DefinitionError, match="11 tasks"):
        parse_definition(definition)
    limits(max_definition_tasks=11)
    model = parse_definition(definition)
    limits(max_definition_tasks=10)
    with pytest.raises(DefinitionError, match="11 tasks"):  # a model built in code, too
        build_plan(model)


# -- the plan cache ------------------------------------------------------------------------------


def test_the_plan_cache_holds_within_its_memory_budget(redis_server: Any,
                                                       limits: SetLimits) -> None:
    limits(plan_cache_mib=1)
    budget = 1024 * 1024
    store = get_store()
    digests = []
    for n in range(12):  # each plan of 150 tasks takes about 0.55 MiB
        definition = workflow(*(simple(f"p{n}_{i}", v="${workflow.input.x}")
                                for i in range(150)), name=f"limits_plan_{n}")
        plan = build_plan(parse_definition(definition))
        store.client.set(definition_key(plan.digest),
                         json.dumps(plan.definition.to_json_dict(), separators=(",", ":")))
        digests.append(plan.digest)
    del plan
    gc.collect()

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for digest in digests:  # as a worker meets runs of each definition in turn
            assert plans.get(digest).digest == digest
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert plans.weight <= budget
    assert held <= budget, f"the cache holds {held / budget:.2f} MiB"
    assert 1 <= len(plans) <= 2
    assert plans.get(digests[-1]).digest == digests[-1]  # the newest is kept

    # a plan heavier than the whole budget is built and used, not kept
    big = build_plan(parse_definition(workflow(*(simple(f"big{i}") for i in range(400)),
                                               name="limits_big")))
    kept = len(plans)
    plans.put(big)
    assert len(plans) == kept and plans.weight <= budget


# -- payload sizes -------------------------------------------------------------------------------


def test_a_step_output_over_the_limit_fails_the_step(worker: Any, limits: SetLimits) -> None:
    limits(max_output_bytes=2048)
    run = submit_workflow(workflow(simple("big", data="${workflow.input.data}")),
                          input={"data": "x" * 3000})

    ref, error = failure(run)
    assert ref == "big"
    assert error["type"] == "PayloadTooLarge"
    assert error["message"] == ("output: 2.9 KiB is over the limit of 2.0 KiB "
                                "(BATON_MAX_OUTPUT_BYTES)")
    assert run.steps["big"].attempts == 1


def test_a_step_input_repeating_a_large_value_fails_before_it_is_recorded(
    worker: Any, limits: SetLimits
) -> None:
    limits(max_input_bytes=1024 * 1024)
    data = "${workflow.input.data}"
    run = submit_workflow(workflow(simple("wide", a=data, b=data, c=data, d=[data, data])),
                          input={"data": "x" * 600_000})

    ref, error = failure(run)
    assert ref == "wide"
    assert error["type"] == "PayloadTooLarge"
    assert error["message"].startswith("input: at least ")
    assert error["message"].endswith("over the limit of 1.0 MiB (BATON_MAX_INPUT_BYTES)")
    assert not run.steps["wide"].input  # the oversized input was never recorded
    assert run.steps["wide"].attempts == 1


@pytest.mark.parametrize(("name", "where"), [("limits_nan", "output.value[1]: nan"),
                                             ("limits_set", "output.tags: a set")])
def test_an_output_that_is_not_json_data_fails_the_step_at_once(worker: Any, name: str,
                                                                where: str) -> None:
    run = submit_workflow(workflow(simple("bad", name)))

    ref, error = failure(run)
    assert ref == "bad"
    assert error["type"] == "StepOutputError"
    assert where in error["message"]
    assert run.steps["bad"].attempts == 1  # the same output again: not retried


def test_a_run_recording_more_than_its_limit_fails(worker: Any, limits: SetLimits) -> None:
    limits(max_run_bytes=10240)
    data = "y" * 3000
    run = submit_workflow(workflow(simple("a", data="${workflow.input.data}"),
                                   simple("b", data="${a.output.data}"),
                                   simple("c", data="${b.output.data}"),
                                   simple("d", data="${c.output.data}")),
                          input={"data": data})

    ref, error = failure(run)
    assert ref == "c"  # input, a, b: 9,033 bytes; with c's output, 12,044
    assert error["type"] == "PayloadTooLarge"
    assert "over the limit of 10240 bytes (BATON_MAX_RUN_BYTES)" in error["message"]
    steps = run.steps
    assert steps["a"].status is StepStatus.COMPLETED and steps["b"].status is StepStatus.COMPLETED
    assert steps["c"].output in ({}, None) and "d" not in steps


# -- storage amplification -----------------------------------------------------------------------


def held(client: redis.Redis, keys: set[bytes]) -> int:
    """Bytes Redis holds for the keys (MEMORY USAGE, every field and member counted).

    Not INFO's used_memory: that moves by megabytes with the buffers of the clients that
    sent or read the payload, freed in the background a second or two later.
    """
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(size or 0 for size in pipe.execute())


def test_recording_a_run_costs_at_most_one_and_a_half_times_its_payload(worker: Any) -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    definition = workflow(simple("a", data="${workflow.input.data}"),
                          simple("b", data="${a.output.data}"),
                          simple("c", data="${b.output.data}"),
                          name="limits_amplification")
    warm = submit_workflow(definition, input={"data": "w"})
    assert warm.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    payload = "z" * 2_000_000

    before = set(client.scan_iter(count=1000))
    run = submit_workflow(definition, input={"data": payload})
    assert run.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    grown = held(client, set(client.scan_iter(count=1000)) - before)

    # the run input, three step inputs, three outputs and the run output are one payload
    assert grown <= 1.5 * len(payload), f"Redis grew {grown / len(payload):.2f}x the payload"
    assert run.result(timeout=1) == {"data": payload}
    assert run.steps["b"].input == {"data": payload}
    assert run.record()["input"] == {"data": payload}


def test_a_pool_process_is_replaced_past_its_memory_budget() -> None:
    # an embedded engine that leaks on out-of-memory (QuickJS does, a little), or a heap
    # fragmented by large payloads, costs at most this much per pool process
    import app

    assert app.celery.conf.worker_max_memory_per_child == 512 * 1024
    assert get_settings().worker_max_memory_per_child == 512 * 1024
