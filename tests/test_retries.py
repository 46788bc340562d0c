"""Retries on a real worker: delays through Celery, terminal errors, per-task overrides."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app import RetryLogic, RunStatus, StepPolicy, StepStatus, WorkflowFailed, submit_workflow
from app.errors import TransformationError


def flaky_workflow(failures: int, **task_fields: Any) -> tuple[dict[str, Any], str]:
    key = uuid.uuid4().hex
    task = {"name": "flaky", "taskReferenceName": "f", "type": "SIMPLE",
            "inputParameters": {"key": key, "failures": failures}, **task_fields}
    return {"name": "retrying", "version": 1, "schemaVersion": 2, "tasks": [task]}, key


def test_a_failing_step_is_retried_until_it_succeeds(worker: Any) -> None:
    definition, _ = flaky_workflow(failures=2)

    run = submit_workflow(definition)

    assert run.result(timeout=30) == {"attempt": 3}
    step = run.steps["f"]
    assert step.status is StepStatus.COMPLETED
    assert step.attempts == 3
    assert step.error is None


def test_retries_are_bounded_and_the_last_error_fails_the_run(worker: Any) -> None:
    definition, _ = flaky_workflow(failures=5)

    run = submit_workflow(definition)

    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)
    assert caught.value.error is not None
    assert caught.value.error["message"] == "attempt 3 failed"
    assert run.steps["f"].attempts == 3


def test_the_workflow_task_overrides_the_transformations_retry_count(worker: Any) -> None:
    definition, _ = flaky_workflow(failures=1, retryCount=0)
    run = submit_workflow(definition)
    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.steps["f"].attempts == 1

    definition, _ = flaky_workflow(
        failures=3, taskDefinition={"name": "flaky", "retryCount": 3, "retryDelaySeconds": 0}
    )
    assert submit_workflow(definition).result(timeout=30) == {"attempt": 4}


def test_a_terminal_error_skips_the_remaining_retries(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow({"name": "doomed", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "doomed", "taskReferenceName": "d", "inputParameters": {"key": key}}]})

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["d"]
    assert step.status is StepStatus.FAILED_WITH_TERMINAL_ERROR
    assert step.attempts == 1
    assert step.error is not None and step.error["message"] == "the file is corrupt"


@pytest.mark.parametrize(
    ("logic", "expected"),
    [
        (RetryLogic.FIXED, [2.0, 2.0, 2.0, 2.0]),
        (RetryLogic.LINEAR_BACKOFF, [6.0, 12.0, 18.0, 20.0]),
        (RetryLogic.EXPONENTIAL_BACKOFF, [2.0, 4.0, 8.0, 16.0]),
    ],
)
def test_retry_delays_follow_conductors_formulas(logic: RetryLogic, expected: list[float]) -> None:
    policy = StepPolicy(retry_logic=logic, retry_delay_seconds=2, backoff_scale_factor=3,
                        max_retry_delay_seconds=20)
    assert [policy.delay(n) for n in range(4)] == expected


def test_jitter_adds_at_most_its_bound() -> None:
    policy = StepPolicy(retry_delay_seconds=1, jitter_seconds=0.5)
    delays = [policy.delay(0) for _ in range(50)]
    assert all(1.0 <= d <= 1.5 for d in delays)
    assert len(set(delays)) > 1


def test_a_policy_that_makes_no_sense_is_refused_in_plain_words() -> None:
    with pytest.raises(TransformationError, match="retry_count cannot be negative"):
        StepPolicy(retry_count=-1)
    with pytest.raises(TransformationError, match="backoff_scale_factor cannot be less than 1"):
        StepPolicy(backoff_scale_factor=0.5)


def test_every_failed_attempt_is_recorded_on_the_step(worker: Any) -> None:
    definition, _ = flaky_workflow(failures=2)

    run = submit_workflow(definition)

    assert run.result(timeout=30) == {"attempt": 3}
    failed = run.steps["f"].failed_attempts
    assert [a["attempt"] for a in failed] == [1, 2]
    assert [a["error"]["message"] for a in failed] == ["attempt 1 failed", "attempt 2 failed"]
    assert all(a["startTime"] <= a["endTime"] for a in failed)
    assert "ConnectionError: attempt 1 failed" in failed[0]["error"]["traceback"]
