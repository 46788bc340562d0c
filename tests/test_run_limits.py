"""A workflow's rateLimitConfig: runs in flight per key, QUEUE in order or REJECT.

Real worker processes (two instances of two pool processes, as tests/test_flow_limits.py
starts them); each run's one step (`hold`) blocks on a gate the test opens, so which run
is in flight is decided by the test and observed in the steps' own log.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app import LifecycleError, RunLimitReached, RunStatus, submit_workflow
from app.cli import main
from app.runtime import doctor
from app.runtime.limits import limit_store
from app.runtime.state import get_store
from app.store.keys import run_key
from app.store.limits import limit_keys
from tests.support import scaled, wait_for
from tests.test_faults import WorkerProcess, executions
from tests.test_flow_limits import workers  # noqa: F401  (the module's worker processes)

pytestmark = pytest.mark.timeout(120)


def gated(name: str, key: str, policy: str = "QUEUE", limit: int = 1,
          rate_key: str | None = "${workflow.input.customer}") -> dict[str, Any]:
    config: dict[str, Any] = {"concurrentExecLimit": limit, "policy": policy}
    if rate_key is not None:
        config["rateLimitKey"] = rate_key
    return {"name": name, "version": 1, "rateLimitConfig": config, "tasks": [
        {"name": "hold", "taskReferenceName": "held",
         "inputParameters": {"key": key, "tag": "${workflow.input.tag}"}}]}


def tags(key: str) -> list[str]:
    return [entry.split(":")[0] for entry in executions(key)]


def open_gate(key: str, tag: str) -> None:
    get_store().client.rpush(f"test:gate:{key}:{tag}", "open")


def limit_document(limit_id: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["limits", "--json"])
    assert result.exit_code == 0, result.output
    return next(d for d in json.loads(result.output) if d["id"] == limit_id)


def test_runs_of_one_key_run_one_at_a_time_in_submission_order(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    name = f"per_customer_{key[:8]}"
    definition = gated(name, key)
    # Given three runs of customer a and one of customer b, one run per customer at once
    a_runs = [submit_workflow(definition, {"customer": "a", "tag": f"a{i}"}) for i in range(3)]
    b_run = submit_workflow(definition, {"customer": "b", "tag": "b0"})

    # Then customer b's run goes on while a's first holds a's slot; a's others wait
    wait_for(lambda: {"a0", "b0"} <= set(tags(key)), timeout=scaled(30),
             what="the first run of each customer to start")
    for run in a_runs[1:]:
        assert run.status is RunStatus.RUNNING
        assert get_store().get_run_fields(run.id, "waitingOn")["waitingOn"] == (
            f"limit workflow:{name}|a (workflow '{name}': 1 run(s) at once for key 'a')")
        assert not get_store().get_steps(run.id)  # nothing of it was sent
    shown = limit_document(f"workflow:{name}|a")
    assert (shown["inUse"], shown["capacity"], shown["waiting"]) == (1, 1, 2)
    status = CliRunner().invoke(main, ["status", a_runs[1].id])
    assert f"RUNNING (waiting on limit workflow:{name}|a" in status.output, status.output
    # its start is kept with the limit: `baton doctor` does not count it as stuck
    assert a_runs[1].id not in {stuck.run_id for stuck in doctor.find_stuck(0)}

    # When each run of a ends, the next in submission order starts, one at a time
    for index in range(3):
        wait_for(lambda i=index: f"a{i}" in tags(key), timeout=scaled(30),  # type: ignore[misc]
                 what=f"run a{index} to start")
        assert [t for t in tags(key) if t.startswith("a")] == [f"a{i}" for i in range(index + 1)]
        open_gate(key, f"a{index}")
        assert a_runs[index].wait(timeout=scaled(30)) is RunStatus.COMPLETED
    open_gate(key, "b0")
    assert b_run.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert "waitingOn" not in get_store().get_run_fields(a_runs[2].id, "waitingOn")
    wait_for(lambda: limit_document(f"workflow:{name}|a")["inUse"] == 0, timeout=10,
             what="a's slot to be free")


def test_reject_refuses_a_run_over_the_limit_with_an_error_naming_key_and_limit(
    workers: list[WorkerProcess], tmp_path: Path,  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    name = f"rejecting_{key[:8]}"
    definition = gated(name, key, policy="REJECT")
    first = submit_workflow(definition, {"customer": "acme", "tag": "first"})
    wait_for(lambda: tags(key) == ["first"], timeout=scaled(30), what="the first run to start")
    runs_before = get_store().client.zcard("baton:runs")

    # When another run of the same key is submitted, it is refused, and nothing is kept
    with pytest.raises(RunLimitReached) as refused:
        submit_workflow(definition, {"customer": "acme", "tag": "second"})
    assert str(refused.value) == (
        f"rateLimitConfig: workflow '{name}': 1 run(s) at once for key 'acme' is full "
        "(1 of 1 in flight, policy REJECT): run not started")
    assert get_store().client.zcard("baton:runs") == runs_before
    # ... from the command line too, as one line starting with `baton:`
    (tmp_path / "flow.json").write_text(json.dumps(definition))
    shown = CliRunner().invoke(main, ["submit", str(tmp_path / "flow.json"),
                                      "-i", "customer=acme", "-i", "tag=x"])
    assert shown.exit_code != 0
    assert "baton: rateLimitConfig:" in shown.output and "Traceback" not in shown.output

    # ... while another key is not limited by it
    other = submit_workflow(definition, {"customer": "other", "tag": "other"})
    open_gate(key, "other")
    assert other.wait(timeout=scaled(30)) is RunStatus.COMPLETED

    # Then once the first run ends, a run of that key is accepted again
    open_gate(key, "first")
    assert first.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    again = submit_workflow(definition, {"customer": "acme", "tag": "again"})
    open_gate(key, "again")
    assert again.wait(timeout=scaled(30)) is RunStatus.COMPLETED


def test_a_cancelled_run_leaves_the_line_and_a_cancelled_holder_frees_its_slot(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    name = f"cancelled_{key[:8]}"
    definition = gated(name, key, rate_key=None)
    runs = [submit_workflow(definition, {"tag": f"r{i}"}) for i in range(3)]
    wait_for(lambda: tags(key) == ["r0"], timeout=scaled(30), what="the first run to start")
    limit_id = f"workflow:{name}"
    assert limit_document(limit_id)["waiting"] == 2

    # When the second (waiting) run is cancelled, it leaves the line
    runs[1].cancel()
    assert limit_document(limit_id)["waiting"] == 1
    # ... and when the first (holding) run is cancelled, the third starts
    runs[0].cancel()
    wait_for(lambda: tags(key) == ["r0", "r2"], timeout=scaled(30), what="the third run")
    open_gate(key, "r2")
    assert runs[2].wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert runs[1].status is RunStatus.TERMINATED
    assert tags(key) == ["r0", "r2"]  # the cancelled waiting run never ran
    wait_for(lambda: limit_document(limit_id)["inUse"] == 0, timeout=10, what="a free slot")


def test_children_of_a_limited_workflow_wait_in_their_forks_place(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    child = gated(f"child_{key[:8]}", key, rate_key=None)
    branches = [[{"name": "sub", "taskReferenceName": f"sub{i}", "type": "SUB_WORKFLOW",
                  "inputParameters": {"tag": f"c{i}"},
                  "subWorkflowParam": {"name": child["name"], "workflowDefinition": child}}]
                for i in range(3)]
    parent = submit_workflow({"name": "limited_children", "version": 1, "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": branches},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN",
         "joinOn": ["sub0", "sub1", "sub2"]},
        {"name": "hold", "taskReferenceName": "after",
         "inputParameters": {"key": key, "tag": "after"}}]})

    # Then the children run one at a time, and the fork's join waits for all three
    for count in range(1, 4):
        wait_for(lambda c=count: len(tags(key)) == c, timeout=scaled(30),  # type: ignore[misc]
                 what=f"child {count} to start")
        assert "after" not in tags(key)
        open_gate(key, tags(key)[-1])
    wait_for(lambda: "after" in tags(key), timeout=scaled(30), what="the step after the join")
    open_gate(key, "after")
    assert parent.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    assert sorted(tags(key)[:3]) == ["c0", "c1", "c2"]


def test_a_slot_whose_runs_end_was_lost_comes_back_when_the_limit_is_full(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    name = f"healed_{key[:8]}"
    definition = gated(name, key, rate_key=None)
    first = submit_workflow(definition, {"tag": "first"})
    open_gate(key, "first")
    assert first.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    # Given the slot still held by a run that ended without giving it back (its process
    # was lost after the run ended) or whose record expired
    holders = limit_keys(f"workflow:{name}")[1]
    get_store().client.zadd(holders, {first.id: 2**52})
    assert limit_store().holders(f"workflow:{name}") == [first.id]
    assert not get_store().client.exists(run_key("no-such-run"))

    # Then the next run finds the slot free after all
    second = submit_workflow(definition, {"tag": "second"})
    open_gate(key, "second")
    assert second.wait(timeout=scaled(30)) is RunStatus.COMPLETED


def test_an_ended_run_takes_its_slot_again_to_start_again_or_is_refused(
    workers: list[WorkerProcess],  # noqa: F811
) -> None:
    key = uuid.uuid4().hex
    name = f"again_{key[:8]}"
    definition = gated(name, key, rate_key=None)
    first = submit_workflow(definition, {"tag": "first"})
    wait_for(lambda: tags(key) == ["first"], timeout=scaled(30), what="the first run")
    first.cancel()
    second = submit_workflow(definition, {"tag": "second"})
    wait_for(lambda: tags(key) == ["first", "second"], timeout=scaled(30), what="the second")

    # When the ended run is restarted or retried while another holds the only slot, it is
    # refused, naming the limit, and stays as it was
    for start_again, verb in ((first.restart, "restart"), (first.retry, "be retried")):
        with pytest.raises(LifecycleError) as refused:
            start_again()
        assert str(refused.value) == (
            f"run {first.id} cannot {verb}: rateLimitConfig: workflow '{name}': 1 run(s) at "
            "once is full (1 of 1 in flight); try again once one of its runs ends")
        assert first.status is RunStatus.TERMINATED
    assert limit_store().holders(f"workflow:{name}") == [second.id]

    # Then once the slot is free, the restart takes it
    open_gate(key, "second")
    assert second.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    first.restart()
    wait_for(lambda: tags(key).count("first") == 2, timeout=scaled(30), what="the restart")
    assert limit_store().holders(f"workflow:{name}") == [first.id]
    open_gate(key, "first")
    assert first.wait(timeout=scaled(30)) is RunStatus.COMPLETED
    wait_for(lambda: not limit_store().holders(f"workflow:{name}"), timeout=10,
             what="the slot to be free")
