"""A task definition's timeouts on real workers, with Conductor's statuses and reasons.

Celery enforces time limits only in a prefork pool, so these tests start `celery worker`
processes (as the Procfile does) rather than the in-process threads worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import RunStatus, StepStatus, submit_workflow
from app.runtime.state import get_store
from app.runtime.timeouts import ALERT_FIELD
from tests.support import CeleryWorker, RedisServer, scaled, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def prefork(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[CeleryWorker]:
    log = tmp_path_factory.mktemp("timeouts") / "worker.log"
    worker = CeleryWorker(log, ["baton", "echo", "faulty"], concurrency=2, prefix="timeouts")
    try:
        yield worker.ready()
    finally:
        worker.stop()


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "timeouts", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def nap(seconds: float, **task_definition: Any) -> dict[str, Any]:
    return {"name": "nap", "taskReferenceName": "nap",
            "inputParameters": {"key": uuid.uuid4().hex, "seconds": seconds},
            "taskDefinition": {"name": "nap", **task_definition}}


def reason(run: Any) -> str:
    return str(run.record()["reasonForIncompletion"])


def test_time_out_wf_ends_the_run_timed_out_at_once(prefork: CeleryWorker) -> None:
    # TIME_OUT_WF is the TaskDef default: no retry, whatever retryCount says
    run = submit_workflow(wf(nap(30, timeoutSeconds=1, retryCount=2, retryDelaySeconds=0)))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    step = run.steps["nap"]
    assert step.status is StepStatus.TIMED_OUT and step.attempts == 1
    assert reason(run) == ("Task timed out after 1 seconds. Timeout configured as 1 seconds. "
                           "Timeout policy configured to TIME_OUT_WF")


def test_a_delayed_step_keeps_its_time_limit(prefork: CeleryWorker) -> None:
    # a startDelay sends the message again once due: with its time limits
    task = {**nap(30, timeoutSeconds=1), "startDelay": 1}
    run = submit_workflow(wf(task))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert run.steps["nap"].status is StepStatus.TIMED_OUT


def test_retry_retries_a_timed_out_step_then_the_run_times_out(prefork: CeleryWorker) -> None:
    run = submit_workflow(wf(nap(30, timeoutSeconds=1, timeoutPolicy="RETRY", retryCount=1,
                                 retryDelaySeconds=0)))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    step = run.steps["nap"]
    assert step.status is StepStatus.TIMED_OUT and step.attempts == 2
    first = step.failed_attempts[0]["error"]["message"]
    assert first.endswith("Timeout policy configured to RETRY"), first


def test_alert_only_lets_the_step_run_on_and_notes_its_timeout(prefork: CeleryWorker) -> None:
    run = submit_workflow(wf(nap(2.5, timeoutSeconds=1, timeoutPolicy="ALERT_ONLY")))

    assert run.wait(timeout=scaled(20)) is RunStatus.COMPLETED
    assert run.steps["nap"].output == {"slept": 2.5}
    record = get_store().get_steps(run.id)["nap"]
    assert record[ALERT_FIELD].startswith("Task timed out after 1 seconds."), record


def test_a_response_timeout_is_retried_even_under_time_out_wf(prefork: CeleryWorker) -> None:
    run = submit_workflow(wf(nap(30, timeoutSeconds=20, responseTimeoutSeconds=1, retryCount=1,
                                 retryDelaySeconds=0)))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    step = run.steps["nap"]
    assert step.status is StepStatus.TIMED_OUT and step.attempts == 2
    assert f"responseTimeout: 1 exceeded for the taskId: {step.task_id} with Task Definition: " \
           "nap" in reason(run)


def test_the_total_timeout_bounds_all_attempts(prefork: CeleryWorker) -> None:
    # each attempt fails after 0.4s and is retried at once: only the total budget ends it
    key = uuid.uuid4().hex
    run = submit_workflow(wf({
        "name": "slow_flaky", "taskReferenceName": "s",
        "inputParameters": {"key": key, "failures": 99, "seconds": 0.4},
        "taskDefinition": {"name": "slow_flaky", "totalTimeoutSeconds": 2, "retryCount": 20,
                           "retryDelaySeconds": 0, "timeoutPolicy": "RETRY"}}))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    step = run.steps["s"]
    assert 2 <= step.attempts <= 6, step.attempts
    assert reason(run).startswith(f"Task slow_flaky/{step.task_id} exceeded total timeout of 2 "
                                  "seconds"), reason(run)


def test_a_step_that_waits_past_its_poll_timeout_times_out_or_is_retried(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # `late` runs on a queue no worker consumes until the poll timeouts have passed; a
    # control worker, if one runs, times them out first (their timers), else the late one
    seconds = max(4, round(scaled(4)))  # the retry's expiry outlasts the late worker's start
    timing_out = submit_workflow(wf({"name": "late", "taskReferenceName": "late",
                                     "taskDefinition": {"name": "late",
                                                        "pollTimeoutSeconds": 1}}))
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
        [{"name": "late", "taskReferenceName": "late", "inputParameters": {"v": 1},
          "taskDefinition": {"name": "late", "pollTimeoutSeconds": seconds, "retryCount": 1,
                             "retryDelaySeconds": 0, "timeoutPolicy": "RETRY"}}],
        [{"name": "late", "taskReferenceName": "beside", "inputParameters": {"v": 2}}]]}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN",
            "joinOn": ["late", "beside"]}
    retried = submit_workflow(wf(fork, join))
    sent = time.monotonic()
    wait_for(lambda: time.monotonic() > sent + seconds + 0.5, timeout=seconds + 10,
             what="the poll timeouts")

    worker = CeleryWorker(tmp_path / "late.log", ["baton", "late"], prefix="late")
    try:
        worker.ready()
        assert timing_out.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
        assert run_step_status(timing_out, "late") is StepStatus.TIMED_OUT
        assert reason(timing_out).startswith("Task poll timed out after "), reason(timing_out)
        assert reason(timing_out).endswith("Poll timeout configured as 1 seconds. Timeout policy "
                                           "configured to TIME_OUT_WF")
        # retried with a fresh expiry, the fork member still closes its fork
        assert retried.wait(timeout=scaled(20)) is RunStatus.COMPLETED
        step = retried.steps["late"]
        assert step.output == {"v": 1}
        assert "Task poll timed out" in step.failed_attempts[0]["error"]["message"]
    finally:
        worker.stop()


def run_step_status(run: Any, ref: str) -> StepStatus:
    return StepStatus(run.steps[ref].status)


def waiting(type_: str, ref: str, **task_definition: Any) -> dict[str, Any]:
    return {"name": ref, "taskReferenceName": ref, "type": type_,
            "taskDefinition": {"name": ref, **task_definition}}


def test_a_wait_past_its_timeout_times_the_run_out(prefork: CeleryWorker) -> None:
    run = submit_workflow(wf(waiting("WAIT", "w", timeoutSeconds=1),
                             {"name": "echo", "taskReferenceName": "after"}))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert run.steps["w"].status is StepStatus.TIMED_OUT and "after" not in run.steps
    assert reason(run).startswith("Task timed out after 1 seconds. Timeout configured as 1 "
                                  "seconds. Timeout policy configured to TIME_OUT_WF")
    # completed from outside too late: refused, the run stays TIMED_OUT
    with pytest.raises(Exception, match="not a WAIT or HUMAN step waiting|no longer waiting"):
        run.complete_step("w", {})


def test_a_human_step_under_alert_only_waits_on_and_closes_its_fork(
    prefork: CeleryWorker
) -> None:
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
        [waiting("HUMAN", "approve", timeoutSeconds=1, timeoutPolicy="ALERT_ONLY")],
        [{"name": "echo", "taskReferenceName": "beside"}]]}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN",
            "joinOn": ["approve", "beside"]}
    run = submit_workflow(wf(fork, join))

    wait_for(lambda: get_store().get_steps(run.id).get("approve", {}).get(ALERT_FIELD),
             timeout=20, what="the timeout alert")
    run.complete_step("approve", {"ok": True})
    assert run.wait(timeout=scaled(20)) is RunStatus.COMPLETED
    assert run.steps["join"].output["approve"] == {"ok": True}


def test_a_wait_completed_in_time_is_not_timed_out(prefork: CeleryWorker) -> None:
    run = submit_workflow(wf(waiting("WAIT", "w", timeoutSeconds=2),
                             {"name": "echo", "taskReferenceName": "after"}))
    wait_for(lambda: run.steps.get("w") and run.steps["w"].status is StepStatus.IN_PROGRESS,
             timeout=20, what="the step to wait")
    run.complete_step("w", {"by": "ops"})

    assert run.wait(timeout=scaled(20)) is RunStatus.COMPLETED
    # its timer, once due, finds it completed and does nothing
    done = time.monotonic()
    wait_for(lambda: time.monotonic() > done + 2.5, timeout=10, what="the timer to be due")
    assert run.status is RunStatus.COMPLETED and run.steps["w"].status is StepStatus.COMPLETED


def late_step(ref: str, **task_definition: Any) -> dict[str, Any]:
    """A step on a queue no worker consumes (`late`)."""
    return {"name": "late", "taskReferenceName": ref, "inputParameters": {"v": 1},
            "taskDefinition": {"name": "late", **task_definition}}


def test_a_step_no_worker_takes_times_out_at_its_poll_timeout(prefork: CeleryWorker) -> None:
    # only the control queue has workers: the timer sent with the message times it out
    run = submit_workflow(wf(late_step("late", pollTimeoutSeconds=1)))

    assert run.wait(timeout=scaled(20)) is RunStatus.TIMED_OUT
    assert run_step_status(run, "late") is StepStatus.TIMED_OUT
    assert reason(run).startswith("Task poll timed out after 1 seconds. Poll timeout configured "
                                  "as 1 seconds. Timeout policy configured to TIME_OUT_WF")


def test_a_poll_timeout_is_handled_once_by_the_timer_or_the_worker(
    prefork: CeleryWorker, tmp_path: Path
) -> None:
    # the timer retries the unconsumed step; the worker started then takes the expired first
    # message (dropped: its expiry was handled) and runs the second
    seconds = max(4, round(scaled(4)))
    run = submit_workflow(wf(late_step("late", pollTimeoutSeconds=seconds, retryCount=1,
                                       retryDelaySeconds=0, timeoutPolicy="RETRY")))
    wait_for(lambda: get_store().get_attempts(run.id, ["late"])["late"],
             timeout=scaled(20), what="the timer's retry")

    worker = CeleryWorker(tmp_path / "late.log", ["late"], prefix="late")
    try:
        worker.ready()
        assert run.wait(timeout=scaled(20)) is RunStatus.COMPLETED
        step = run.steps["late"]
        assert step.output == {"v": 1}
        assert len(step.failed_attempts) == 1, step.failed_attempts
        assert step.failed_attempts[0]["error"]["message"].startswith("Task poll timed out")
    finally:
        worker.stop()
