"""The engine end to end: definitions run on a real worker over a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import app
from app import RunStatus, StepStatus, WorkflowFailed, submit_workflow

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "workflows" / "encode_and_deploy.json"


def simple(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": "SIMPLE", "inputParameters": inputs}


def workflow(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "test_wf", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **extra}


def test_seed_workflow_runs_and_records_every_step(worker: Any) -> None:
    run = submit_workflow(str(SEED), input={"fileLocation": "s3://in/movie.mov"})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert run.result(timeout=1) == {
        "cdn_url": "https://cdn.example.com/94614d6d5677/movie.mp4"
    }
    steps = run.steps
    assert list(steps) == ["encode", "d1"]
    assert steps["encode"].status == "COMPLETED"
    assert steps["encode"].input == {"fileLocation": "s3://in/movie.mov"}
    assert steps["encode"].output["encodeLocation"] == "s3://encoded/movie.mp4"
    assert steps["d1"].input == {"fileLocation": "s3://encoded/movie.mp4"}
    assert steps["encode"].attempts == 1
    assert steps["encode"].started_at <= steps["encode"].ended_at <= steps["d1"].started_at
    assert app.get_run(run.id).status is RunStatus.COMPLETED


def test_fork_join_runs_branches_and_join_collects_branch_ends(worker: Any) -> None:
    definition = workflow(
        simple("first", value="${workflow.input.x}"),
        {"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN", "forkTasks": [
            [simple("a1", v="${first.output.value}"), simple("a2", v="${a1.output.v}-a")],
            [simple("b1", v="${first.output.value}-b")],
        ]},
        {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN", "joinOn": ["a2", "b1"]},
        simple("last", both=["${a2.output.v}", "${b1.output.v}"]),
    )
    run = submit_workflow(definition, input={"x": "v"})

    assert run.result(timeout=30) == {"both": ["v-a", "v-b"]}
    steps = run.steps
    assert steps["fan_join"].output == {"a2": {"v": "v-a"}, "b1": {"v": "v-b"}}
    assert steps["fan"].status is StepStatus.COMPLETED
    assert {s.status for s in steps.values()} == {StepStatus.COMPLETED}
    assert steps["last"].started_at >= steps["fan_join"].ended_at


def test_empty_output_parameters_give_the_last_tasks_output(worker: Any) -> None:
    run = submit_workflow(workflow(simple("one", n=1), simple("two", n="${one.output.n}")))
    assert run.result(timeout=30) == {"n": 1}


def test_fork_as_last_stage_ends_the_run_at_its_join(worker: Any) -> None:
    definition = workflow(
        {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN",
         "forkTasks": [[simple("x", v=1)], [simple("y", v=2)]]},
        {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["x", "y"]},
    )
    run = submit_workflow(definition)
    assert run.result(timeout=30) == {"x": {"v": 1}, "y": {"v": 2}}


def test_failed_step_fails_the_run_with_its_error_and_nothing_after_runs(worker: Any) -> None:
    run = submit_workflow(workflow(simple("ok"), simple("bad", "refuse", reason="disk full"),
                                   simple("after")))

    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)

    assert caught.value.status == "FAILED"
    assert caught.value.step_ref == "bad"
    assert caught.value.error is not None
    assert caught.value.error["type"] == "Refused"
    assert caught.value.error["message"] == "disk full"
    assert "Refused: disk full" in caught.value.error["traceback"]
    steps = run.steps
    assert steps["bad"].status is StepStatus.FAILED
    assert steps["bad"].input == {"reason": "disk full"}
    assert "after" not in steps


def test_failure_in_one_fork_branch_fails_the_run_and_the_join_never_runs(worker: Any) -> None:
    definition = workflow(
        {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN",
         "forkTasks": [[simple("x", "refuse")], [simple("y")]]},
        {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["x", "y"]},
        simple("after"),
    )
    run = submit_workflow(definition)
    assert run.wait(timeout=30) is RunStatus.FAILED
    record = run.record()
    assert record["failedReferenceTaskName"] == "x"
    # as in Conductor, the waiting JOIN is cancelled with its run
    assert run.steps["j"].status is StepStatus.CANCELED and "after" not in run.steps


def test_output_that_is_not_json_fails_the_step_clearly(worker: Any) -> None:
    run = submit_workflow(workflow(simple("u", "unserialisable")))
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)
    assert caught.value.error is not None
    assert caught.value.error["type"] == "StepOutputError"
    assert "not JSON-serialisable" in caught.value.error["message"]


def test_scalar_output_is_wrapped_as_result(worker: Any) -> None:
    run = submit_workflow(workflow(simple("s", "scalar", value=[1, 2])))
    assert run.result(timeout=30) == {"result": [1, 2]}


def test_expressions_resolve_typed_embedded_and_missing_values(worker: Any) -> None:
    definition = workflow(
        simple("src", obj={"k": [1, 2, 3]}, n=5, items=[{"id": 1, "ok": True},
                                                        {"id": 2, "ok": False}]),
        simple(
            "dst",
            typed="${src.output.obj}",
            text="n=${src.output.n}, k=${src.output.obj.k}",
            missing="${src.output.nope.deeper}",
            escaped="$${workflow.input.x}",
            index="${src.output.obj.k[1]}",
            filtered="${src.output.items[?(@.ok == true)].id}",
            nested="${src.output.${workflow.input.key}}",
            wf="${workflow.input}",
            corr="${workflow.correlationId}",
            task_id="${CPEWF_TASK_ID}",
            status="${src.status}",
        ),
    )
    run = submit_workflow(definition, input={"key": "n"}, correlation_id="c-1")
    out = run.result(timeout=30)

    assert out["typed"] == {"k": [1, 2, 3]}
    assert out["text"] == "n=5, k=[1,2,3]"
    assert out["missing"] is None
    assert out["escaped"] == "${workflow.input.x}"
    assert out["index"] == 2
    assert out["filtered"] == [1]
    assert out["nested"] == 5
    assert out["wf"] == {"key": "n"}
    assert out["corr"] == "c-1"
    assert out["task_id"] == run.steps["dst"].task_id
    assert out["status"] == "COMPLETED"


def test_long_sequence_is_compiled_in_segments_and_completes(worker: Any) -> None:
    tasks = [simple("s0", n=0)]
    tasks += [simple(f"s{i}", n=f"${{s{i - 1}.output.n}}") for i in range(1, 80)]
    run = submit_workflow(workflow(*tasks))
    assert run.result(timeout=60) == {"n": 0}
    assert len(run.steps) == 80


def test_idempotency_key_returns_the_existing_run(worker: Any) -> None:
    first = submit_workflow(workflow(simple("one")), idempotency_key="order-42")
    second = submit_workflow(workflow(simple("one")), idempotency_key="order-42")
    assert second.id == first.id
    assert first.wait(timeout=30) is RunStatus.COMPLETED


def test_definition_snapshot_is_kept_with_the_run(worker: Any) -> None:
    from app.runtime.state import get_store

    definition = workflow(simple("one"))
    run = submit_workflow(definition)
    run.wait(timeout=30)
    stored = get_store().get_definition(run.record()["plan"])
    assert stored is not None
    assert json.loads(stored)["tasks"][0]["taskReferenceName"] == "one"


def test_a_redelivered_message_for_a_completed_step_does_not_run_it_again(worker: Any) -> None:
    from app.runtime.state import get_store
    from tests.support import wait_for

    key = "redelivery-" + str(id(worker))
    run = submit_workflow(workflow(simple("f", "flaky", key=key, failures=0)))
    assert run.result(timeout=30) == {"attempt": 1}
    digest = run.record()["plan"]

    again = app.celery.signature("tasks.flaky", args=(run.id, "f", digest)).apply_async()
    wait_for(again.ready, timeout=30, what="the redelivered message to be processed")

    assert again.successful()
    assert get_store().client.get(f"test:attempts:{key}") == "1"
    assert run.steps["f"].attempts == 1


def test_run_records_expire_after_the_retention(worker: Any) -> None:
    from app.config import get_settings
    from app.runtime.state import get_store
    from app.store.keys import definition_key, refs_key, run_key, step_key

    run = submit_workflow(workflow(simple("one")))
    run.wait(timeout=30)
    client = get_store().client
    retention = get_settings().retention_seconds
    keys = [run_key(run.id), refs_key(run.id), step_key(run.id, "one"),
            definition_key(run.record()["plan"])]
    for key in keys:
        assert 0 < client.ttl(key) <= retention, key
