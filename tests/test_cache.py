"""Output caching (cacheConfig) end to end: on a real worker over a real Redis.

A step whose key was seen within its TTL completes with the output recorded then, without
running; a run whose workflow key was seen completes at once. The `counted`
transformation counts its executions in Redis, so a test can tell a run from a cache hit.
Every test uses keys of its own: the cache is shared by every run on the Redis.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from app import RunStatus, submit_workflow
from app.cli.monitoring import run_document, run_lines
from app.client import WorkflowRun
from app.dsl.validate import check_definition, parse_definition
from app.errors import DefinitionError, StoreUnavailable
from app.runtime.cache import WORKFLOW_KIND, CacheUnreachable, key_digest
from app.runtime.state import get_store
from app.store import RunStore
from tests.support import free_port, wait_for


def counted(ref: str, counter: str, key: str | None = "${value}", ttl: int = 60,
            **inputs: Any) -> dict[str, Any]:
    given = {"counter": counter, "value": "${workflow.input.value}", **inputs}
    task: dict[str, Any] = {"name": "counted", "taskReferenceName": ref,
                            "inputParameters": given}
    if key is not None:
        task["cacheConfig"] = {"key": key, "ttlInSecond": ttl}
    return task


def workflow(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": f"cache_{uuid.uuid4().hex[:8]}", "tasks": list(tasks), **extra}


def calls(counter: str) -> int:
    return int(get_store().client.get(f"test:attempts:{counter}") or 0)


def wait_cached(kind: str, name: str, key: Any) -> None:
    """Wait until an output is kept under `key` (it is written just after its step or run
    completed, so a run can be seen COMPLETED a moment before)."""
    digest = key_digest(key)
    assert digest is not None
    wait_for(lambda: get_store().cached_output(kind, name, digest) is not None,
             what=f"an output cached under {key!r}")


def problems(data: dict[str, Any]) -> list[str]:
    try:
        check_definition(parse_definition(data), strict=True)
    except DefinitionError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_a_second_run_with_the_same_key_takes_the_cached_output(worker: Any) -> None:
    # Given a step cached under its input `value` (the Orkes form: `${value}`), and a step
    # after it that reads its output
    counter = uuid.uuid4().hex
    definition = workflow(
        counted("c", counter),
        {"name": "echo", "taskReferenceName": "after",
         "inputParameters": {"calls": "${c.output.calls}"}})
    first = submit_workflow(definition, {"value": "v1"})
    assert first.result(timeout=30) == {"calls": 1}
    wait_cached("task:SIMPLE", "counted", "v1")

    # When the same workflow runs again with the same key
    second = submit_workflow(definition, {"value": "v1"})

    # Then the step does not run again: it completes with the output of the first run, is
    # marked as cached, and the route goes on with it
    assert second.result(timeout=30) == {"calls": 1}
    assert calls(counter) == 1
    step = second.steps["c"]
    assert (step.status, step.cached, step.output) == ("COMPLETED", True,
                                                        {"value": "v1", "calls": 1})
    assert step.input == {"counter": counter, "value": "v1"}
    assert not first.steps["c"].cached and not second.steps["after"].cached
    document = run_document(get_store().get_run(second.id) or {}, second.steps.values())
    assert [s["cached"] for s in document["steps"]] == [True, False]
    assert any(line.startswith("c ") and "COMPLETED (cached)" in line
               for line in run_lines(document, datetime.now(UTC)))

    # And a different key runs the step
    third = submit_workflow(definition, {"value": "v2"})
    assert third.result(timeout=30) == {"calls": 2}
    assert not third.steps["c"].cached


def test_two_tasks_with_the_same_key_text_keep_their_own_outputs(worker: Any) -> None:
    counter = uuid.uuid4().hex
    key = f"shared-{counter}"
    definition = workflow(
        counted("c", counter, key=key),
        {"name": "double", "taskReferenceName": "js", "type": "INLINE",
         "cacheConfig": {"key": key, "ttlInSecond": 60},
         "inputParameters": {"evaluatorType": "javascript", "expression": "$.n * 2", "n": 21}})
    assert submit_workflow(definition, {"value": 1}).result(timeout=30) == {"result": 42}
    wait_cached("task:INLINE", "double", key)

    again = submit_workflow(definition, {"value": 1})

    assert again.result(timeout=30) == {"result": 42}
    steps = again.steps
    assert (steps["c"].cached, steps["c"].output) == (True, {"value": 1, "calls": 1})
    assert (steps["js"].cached, steps["js"].output) == (True, {"result": 42})


def test_a_key_read_from_the_run_and_an_earlier_step(worker: Any) -> None:
    # the key reads the run's scope as inputParameters do, beyond the step's own input
    # (which here reads neither the run nor the earlier step)
    counter = uuid.uuid4().hex
    definition = workflow(
        {"name": "echo", "taskReferenceName": "first",
         "inputParameters": {"k": "${workflow.input.k}"}},
        {"name": "counted", "taskReferenceName": "c", "inputParameters": {"counter": counter},
         "cacheConfig": {"key": "${first.output.k}/${workflow.input.z}", "ttlInSecond": 60}})

    def calls_of(k: str, z: int) -> int:
        output = submit_workflow(definition, {"k": k, "z": z}).result(timeout=30)
        wait_cached("task:SIMPLE", "counted", f"{k}/{z}")
        return int(output["calls"])

    assert calls_of(f"{counter}a", 1) == 1
    assert calls_of(f"{counter}a", 1) == 1
    assert calls_of(f"{counter}b", 1) == 2
    assert calls_of(f"{counter}a", 2) == 3


def test_an_expired_output_is_computed_again(worker: Any) -> None:
    counter = uuid.uuid4().hex
    definition = workflow(counted("c", counter, key=f"ttl-{counter}", ttl=1))
    assert submit_workflow(definition, {"value": 1}).result(timeout=30)["calls"] == 1
    wait_cached("task:SIMPLE", "counted", f"ttl-{counter}")

    # Redis drops the output once its TTL of 1 s is over
    digest = key_digest(f"ttl-{counter}")
    assert digest is not None
    wait_for(lambda: get_store().cached_output("task:SIMPLE", "counted", digest) is None,
             timeout=5, what="the cached output to expire")
    run = submit_workflow(definition, {"value": 1})

    assert run.result(timeout=30)["calls"] == 2
    assert not run.steps["c"].cached


def test_a_failed_step_caches_nothing(worker: Any) -> None:
    key = f"failed-{uuid.uuid4().hex}"
    definition = workflow({"name": "refuse", "taskReferenceName": "r",
                           "cacheConfig": {"key": key, "ttlInSecond": 60}})
    run = submit_workflow(definition)
    assert run.wait(timeout=30) is RunStatus.FAILED
    digest = key_digest(key)
    assert digest is not None and get_store().cached_output("task:SIMPLE", "refuse",
                                                            digest) is None


def test_a_run_whose_workflow_key_was_seen_completes_at_once(worker: Any) -> None:
    # Given a workflow cached under its input, and a run of it that completed
    counter = uuid.uuid4().hex
    definition = workflow(counted("c", counter, key=None),
                          outputParameters={"calls": "${c.output.calls}"},
                          cacheConfig={"key": "${workflow.input.value}", "ttlInSecond": 60})
    first = submit_workflow(definition, {"value": counter})
    assert first.result(timeout=30) == {"calls": 1}
    wait_cached(WORKFLOW_KIND, f"{definition['name']}:1", counter)

    # When it is submitted again with the same key
    second = submit_workflow(definition, {"value": counter})

    # Then the run is recorded COMPLETED at once, with the cached output and no step
    assert second.status is RunStatus.COMPLETED
    assert second.output == {"calls": 1}
    assert second.steps == {}
    assert second.record()["cached"] == "true"
    assert calls(counter) == 1
    document = run_document(get_store().get_run(second.id) or {}, [])
    assert document["cached"] is True and document["status"] == "COMPLETED"
    # an ended run: its record has the retention of one
    assert 0 < get_store().client.ttl(f"baton:run:{{{second.id}}}")

    # And another key runs the workflow
    third = submit_workflow(definition, {"value": f"{counter}-other"})
    assert third.result(timeout=30) == {"calls": 2}
    assert "cached" not in WorkflowRun(third.id).record()


def test_a_sub_workflow_whose_key_was_seen_completes_its_parent_step(worker: Any) -> None:
    counter = uuid.uuid4().hex
    child = workflow(counted("c", counter, key=None),
                     cacheConfig={"key": "${workflow.input.value}", "ttlInSecond": 60})
    parent = workflow({"name": "child", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                       "inputParameters": {"value": "${workflow.input.value}"},
                       "subWorkflowParam": {"workflowDefinition": child}})
    assert submit_workflow(parent, {"value": counter}).result(timeout=30)["calls"] == 1
    wait_cached(WORKFLOW_KIND, f"{child['name']}:1", counter)

    again = submit_workflow(parent, {"value": counter})

    assert again.result(timeout=30)["calls"] == 1
    child_id = again.steps["sub"].output["subWorkflowId"]
    assert WorkflowRun(child_id).record()["cached"] == "true"
    assert calls(counter) == 1


@pytest.mark.parametrize(("data", "expected"), [
    (workflow(counted("c", "n", key="${value")),
     "tasks[0].cacheConfig.key: "),
    (workflow(counted("c", "n", key="k", ttl=-1)),
     "tasks[0].cacheConfig.ttlInSecond: must be 0 or more (0: nothing is cached), not -1"),
    (workflow({"name": "w", "taskReferenceName": "w", "type": "WAIT",
               "cacheConfig": {"key": "k", "ttlInSecond": 5}}),
     "tasks[0].cacheConfig: not supported for a WAIT task"),
    (workflow(counted("c", "n"), cacheConfig={"key": "${c.output.x}", "ttlInSecond": 5}),
     "cacheConfig.key: a workflow's cache key can read only ${workflow...}"),
    (workflow(counted("c", "n", key="${missing.output.x}")),
     "tasks[0].cacheConfig.key: ${missing.output.x} names unknown task reference 'missing'"),
    (workflow(counted("c", "n", key="${c.output.x}")),
     "tasks[0].cacheConfig.key: ${c.output.x} reads the task's own record"),
])
def test_a_cache_config_that_cannot_act_is_refused_with_its_path(
    data: dict[str, Any], expected: str
) -> None:
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_a_key_may_read_the_input_earlier_steps_and_the_run() -> None:
    data = workflow({"name": "echo", "taskReferenceName": "first"},
                    counted("c", "n", key="${value}-${first.output.k}-${workflow.input.z}"),
                    cacheConfig={"key": "${workflow.input.z}", "ttlInSecond": 5})
    assert problems(data) == []


def test_an_unreachable_cache_is_not_read_as_a_miss() -> None:
    # The step runner sends the message back to its queue on a StoreUnavailable, as when it
    # cannot claim a step; CacheUnreachable is one, so a cache that cannot be read never
    # lets the step run (or fail) in its place.
    store = RunStore(redis.Redis(port=free_port(), socket_connect_timeout=0.2), 60)
    with pytest.raises(StoreUnavailable):
        store.cached_output("task:SIMPLE", "counted", "0" * 64)
    assert issubclass(CacheUnreachable, StoreUnavailable)
