"""Randomized lifecycle interleavings against real worker processes (a stateful test).

Hypothesis interleaves submit, pause, resume, cancel, retry, rerun, restart,
complete_step and pool-process kills over runs whose steps take random times. After every
rule no completed step has run again in the same attempt of its run; at the end of each
example every run is driven home (resumed, its waiting step completed) and must end: no
run may be left with nothing to carry it on.

BATON_STATE_MACHINE_EXAMPLES sets the number of examples (200 by default).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from app import BatonError, RunStatus, StepStatus, WorkflowRun, submit_workflow
from app.runtime.doctor import find_stuck
from app.runtime.state import get_store
from tests.support import RedisServer, scaled, wait_for
from tests.test_faults import WorkerProcess

EXAMPLES = int(os.environ.get("BATON_STATE_MACHINE_EXAMPLES", "200"))
SETTLE_SECONDS = 30.0
ACTIONS = st.sampled_from(["pause", "resume", "cancel", "retry", "restart", "complete"])
EXEC_LOG = "test:sm:exec"


def definition() -> dict[str, Any]:
    def step(ref: str, fail: bool = False) -> dict[str, Any]:
        return {"name": "logged", "taskReferenceName": ref, "inputParameters": {
            "run": "${workflow.workflowId}", "ref": ref, "ms": f"${{workflow.input.{ref}}}",
            "fail": fail and "${workflow.input.fail}"}}

    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        [step("b", fail=True)], [{"name": "h", "taskReferenceName": "h", "type": "HUMAN"}]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["b", "h"]}
    return {"name": "interleaved", "version": 1, "schemaVersion": 2,
            "tasks": [step("a"), fork, join, step("c")]}


def executions() -> list[dict[str, Any]]:
    return [json.loads(e) for e in get_store().client.lrange(EXEC_LOG, 0, -1)]


def ran_again_after_completing(run_ids: set[str]) -> list[str]:
    """Steps recorded COMPLETED that started again later in the same attempt of the run."""
    store, found = get_store(), []
    log = [e for e in executions() if e["run"] in run_ids]
    for run_id in run_ids:
        root = store.get_run_fields(run_id, "root").get("root")
        for ref, record in store.get_steps(run_id).items():
            if record.get("status") != StepStatus.COMPLETED or not record.get("endTime"):
                continue
            ended = int(record["endTime"]) / 1000
            again = [e for e in log if e["run"] == run_id and e["ref"] == ref
                     and e["root"] == root and e["start"] > ended + 0.001]
            if again:
                found.append(f"{run_id}/{ref}")
    return found


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log = tmp_path_factory.mktemp("state-machine") / "worker.log"
    process = WorkerProcess(log, f"sm-{uuid.uuid4().hex[:6]}", concurrency=2)
    process.ready()
    yield process
    process.stop(signal.SIGKILL)


def describe_run(run_id: str) -> str:
    """A run's record, steps and executions, for a failure message."""
    run = WorkflowRun(run_id)
    lines = [f"run {run_id}: {run.record()}"]
    for ref, step in run.steps.items():
        lines.append(f"  {ref}: {step.status.value} attempts={step.attempts} "
                     f"started={step.started_at} ended={step.ended_at} task={step.task_id} "
                     f"error={(step.error or {}).get('message')}")
    lines += [f"  ran: {e}" for e in executions() if e["run"] == run_id]
    return "\n".join(lines)


class Interleavings(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.started: set[str] = set()

    @rule(target=runs, a=st.integers(0, 30), b=st.integers(0, 30), c=st.integers(0, 30),
          fail=st.booleans())
    def submit(self, a: int, b: int, c: int, fail: bool) -> str:
        run = submit_workflow(definition(), {"a": a, "b": b, "c": c, "fail": fail})
        self.started.add(run.id)
        return run.id

    @rule(run_id=runs, action=ACTIONS, settled=st.booleans())
    def lifecycle(self, run_id: str, action: str, settled: bool) -> None:
        """A lifecycle call, at once or once the run went as far as it goes alone."""
        if settled:
            self.settle(run_id)
        run = WorkflowRun(run_id)
        try:
            if action == "retry":
                get_store().client.set(f"test:sm:fixed:{run_id}", "1")
            if action == "complete":
                run.complete_step("h", {"ok": True})
            else:
                getattr(run, action)()
        except BatonError:
            pass  # not applicable to the run as it is now: refused, which is the point

    @rule(run_id=runs, ref=st.sampled_from(["a", "f", "c"]))
    def rerun(self, run_id: str, ref: str) -> None:
        self.settle(run_id)
        try:
            WorkflowRun(run_id).rerun(ref)
        except BatonError:
            pass

    @rule(pause=st.floats(0, 0.05))
    def wait_a_little(self, pause: float) -> None:
        time.sleep(pause)  # lets steps run between lifecycle calls

    @rule(run_id=runs)
    def settle(self, run_id: str) -> None:
        """Let a run go as far as it goes alone: ended, paused, or waiting on its HUMAN step."""
        run = WorkflowRun(run_id)

        def settled() -> bool:
            if run.status is not RunStatus.RUNNING:
                return True
            steps = run.steps
            return "h" in steps and steps["h"].status is StepStatus.IN_PROGRESS and (
                "b" in steps and steps["b"].status is not StepStatus.IN_PROGRESS)

        wait_for(settled, timeout=SETTLE_SECONDS, what=f"run {run_id} to settle")

    @rule()
    def kill_a_pool_process(self) -> None:
        recent = [e["pid"] for e in executions()[-5:]]
        for pid in reversed(recent):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"celery" in cmdline:
                os.kill(pid, signal.SIGKILL)
                return

    @invariant()
    def no_completed_step_ran_again(self) -> None:
        assert ran_again_after_completing(self.started) == []

    def teardown(self) -> None:
        """Drive every run home: each must end, or be stuck (the invariant broken)."""
        deadline = time.monotonic() + scaled(60)
        pending = set(self.started)
        while pending:
            for run_id in list(pending):
                run = WorkflowRun(run_id)
                status = run.status
                if status.terminal:
                    pending.discard(run_id)
                    continue
                try:
                    if status is RunStatus.PAUSED:
                        run.resume()
                    elif run.steps.get("h") and run.steps["h"].status is StepStatus.IN_PROGRESS:
                        run.complete_step("h", {})
                except BatonError:
                    pass
            if time.monotonic() > deadline:
                stuck = [s for s in find_stuck(5.0) if s.run_id in pending]
                details = "\n".join(describe_run(run_id) for run_id in sorted(pending))
                raise AssertionError(f"runs never ended: {stuck}\n{details}")
            time.sleep(0.02)
        assert ran_again_after_completing(self.started) == []


@pytest.mark.timeout(max(300, 5 * EXAMPLES))
def test_randomized_lifecycle_interleavings_leave_no_run_stuck(pool: Any) -> None:
    get_store().client.delete(EXEC_LOG)
    Interleavings.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=8, deadline=None,
        suppress_health_check=list(HealthCheck))
    Interleavings.TestCase().runTest()
