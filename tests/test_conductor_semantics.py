"""Conductor behaviours read from its source (conductor-oss/conductor), on a real worker.

- Join.java: a JOIN waits until every joinOn task is terminal; a joinOn task that was never
  scheduled keeps it waiting; its output holds each joinOn task that ran with an output.
- DoWhile.java: a loop over `items` gives each iteration `loopItem` and `loopIndex`
  (zero-based) in its output; with a loopCondition it goes on while both hold.
- WorkflowExecutorOps.cancelNonTerminalTasks: a workflow that ends cancels its tasks that
  are not terminal, the pending JOIN among them.
"""

from __future__ import annotations

from typing import Any

from app import RunStatus, StepStatus, submit_workflow
from app.dsl.load import load_definition
from app.dsl.validate import check_definition
from app.runtime.state import get_store
from tests.support import wait_for


def wf(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "conductor_semantics", "version": 1, "schemaVersion": 2,
            "tasks": list(tasks), **extra}


def echo(ref: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}


def nested_fork_join() -> dict[str, Any]:
    """Conductor's test-harness nested_fork_join_integration_test.json, on Baton's echo:
    join2 waits on t20, which ends case 'a' of the DECISION ending fork2's second branch."""
    decision = {"name": "decision", "taskReferenceName": "d1", "type": "DECISION",
                "caseValueParam": "case", "inputParameters": {"case": "${workflow.input.case}"},
                "decisionCases": {
                    "a": [echo("t16", n=16), echo("t19", n=19), echo("t20", n=20)],
                    "b": [echo("t17", n=17), echo("t20b", n=20)]},
                "defaultCase": [echo("t18", n=18), echo("t20def", n=20)]}
    fork2 = {"name": "fork2", "taskReferenceName": "fork2", "type": "FORK_JOIN",
             "forkTasks": [[echo("t12", n=12), echo("t14", n=14)],
                           [echo("t13", n=13), decision]]}
    join2 = {"name": "join2", "taskReferenceName": "join2", "type": "JOIN",
             "joinOn": ["t14", "t20"]}
    fork1 = {"name": "fork1", "taskReferenceName": "fork1", "type": "FORK_JOIN",
             "forkTasks": [[echo("t11", n=11)], [fork2, join2]]}
    join1 = {"name": "join1", "taskReferenceName": "join1", "type": "JOIN",
             "joinOn": ["t11", "join2"]}
    return wf(fork1, join1, echo("t15", n=15))


def test_a_join_may_wait_on_a_task_ending_a_case_of_a_decision_ending_a_branch() -> None:
    check_definition(load_definition(nested_fork_join()))


def test_the_join_waits_for_that_task_when_its_case_runs(worker: Any) -> None:
    run = submit_workflow(nested_fork_join(), input={"case": "a"})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    steps = run.steps
    assert steps["join2"].status is StepStatus.COMPLETED
    assert steps["join2"].output == {"t14": {"n": 14}, "t20": {"n": 20}}
    assert steps["join1"].output == {"t11": {"n": 11}, "join2": {"t14": {"n": 14},
                                                                  "t20": {"n": 20}}}
    assert run.output == {"n": 15}


def test_the_join_waits_on_when_another_case_ran_until_the_run_is_cancelled(
        worker: Any) -> None:
    run = submit_workflow(nested_fork_join(), input={"case": "b"})

    # t20 is never scheduled: like Conductor's, the JOIN stays IN_PROGRESS, with the
    # outputs of the joined tasks that ran, and so does the JOIN that waits on it
    wait_for(lambda: "join2" in run.steps and run.steps["join2"].status is StepStatus.IN_PROGRESS,
             timeout=30, what="join2 to wait")
    assert run.steps["join2"].output == {"t14": {"n": 14}}
    assert "t20b" in run.steps
    assert run.status is RunStatus.RUNNING
    assert "join1" not in run.steps or run.steps["join1"].status is not StepStatus.COMPLETED

    run.cancel("never joined")
    assert run.wait(timeout=30) is RunStatus.TERMINATED
    steps = run.steps
    assert steps["join2"].status is StepStatus.CANCELED
    assert steps["join1"].status is StepStatus.CANCELED
    assert steps["join1"].ended_at is not None
    assert "t15" not in steps


def test_a_loop_over_items_gives_conductor_s_loop_item_and_loop_index(worker: Any) -> None:
    loop = {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE",
            "items": "${workflow.input.files}",
            "loopOver": [echo("each", file="${loop.output.loopItem}",
                              at="${loop.output.loopIndex}", alias="${loop.output.item}")]}
    run = submit_workflow(wf(loop), input={"files": ["a", "b", "c"]})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    steps = run.steps
    assert [steps[f"each__{n}"].input for n in (1, 2, 3)] == [
        {"file": "a", "at": 0, "alias": "a"}, {"file": "b", "at": 1, "alias": "b"},
        {"file": "c", "at": 2, "alias": "c"}]
    output = steps["loop"].output
    assert (output["iteration"], output["loopItem"], output["loopIndex"]) == (3, "c", 2)


def test_a_loop_over_items_with_a_condition_stops_when_either_ends_it(worker: Any) -> None:
    loop = {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE",
            "items": "${workflow.input.files}",
            "loopCondition": "$.loopItem != 'stop' && $.each.file == $.loop.loopItem",
            "loopOver": [echo("each", file="${loop.output.loopItem}")]}
    run = submit_workflow(wf(loop), input={"files": ["a", "stop", "c"]})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert run.steps["loop"].output["iteration"] == 2
    assert "each__3" not in run.steps


def test_the_join_of_a_fork_whose_branch_failed_is_cancelled_with_its_run(worker: Any) -> None:
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
            "forkTasks": [[{"name": "refuse", "taskReferenceName": "bad",
                            "inputParameters": {"reason": "broken"}}], [echo("ok", v=1)]]}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN",
            "joinOn": ["bad", "ok"]}
    run = submit_workflow(wf(fork, join, echo("after")))

    assert run.wait(timeout=30) is RunStatus.FAILED
    steps = run.steps
    assert steps["join"].status is StepStatus.CANCELED
    assert steps["join"].ended_at is not None
    assert "after" not in steps


def test_a_retried_run_waits_on_its_cancelled_join_again(worker: Any) -> None:
    key = "conductor-semantics-retry"
    fork = {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
            "forkTasks": [[{"name": "fails_until_fixed", "taskReferenceName": "bad",
                            "inputParameters": {"key": key}}], [echo("ok", v=1)]]}
    join = {"name": "join", "taskReferenceName": "join", "type": "JOIN",
            "joinOn": ["bad", "ok"]}
    run = submit_workflow(wf(fork, join, echo("after", v="${ok.output.v}")))
    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.steps["join"].status is StepStatus.CANCELED

    get_store().client.set(f"test:fixed:{key}", "1")
    run.retry()
    assert run.result(timeout=30) == {"v": 1}
    assert run.steps["join"].status is StepStatus.COMPLETED
