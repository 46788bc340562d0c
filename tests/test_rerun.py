"""Rerun and restart: a new attempt of an ended run, on a real worker over a real Redis.

Executions are counted through Redis (`test:attempts:<key>`), so "did not run again" is
observed, not assumed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery.worker import state as worker_state
from click.testing import CliRunner

from app import (
    InvalidInput,
    LifecycleError,
    RunStatus,
    StepStatus,
    WorkflowRun,
    submit_workflow,
)
from app.cli import main
from app.runtime.state import get_store
from tests.support import wait_for


def wf(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "again", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **fields}


def task(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "inputParameters": inputs}


def counted(ref: str, key: str) -> dict[str, Any]:
    """A step that succeeds and counts its executions under `key`."""
    return task(ref, "flaky", key=key, failures=0)


def attempts(key: str) -> int:
    return int(get_store().client.get(f"test:attempts:{key}") or 0)


def keys(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def test_rerun_runs_the_step_and_those_after_it_and_keeps_those_before(worker: Any) -> None:
    ka, kb, kc = keys(3)
    run = submit_workflow(wf(counted("a", ka), counted("b", kb), counted("c", kc),
                             task("out", a="${a.output.attempt}", b="${b.output.attempt}",
                                  c="${c.output.attempt}")))
    assert run.result(timeout=30) == {"a": 1, "b": 1, "c": 1}
    first_a = run.steps["a"]

    run.rerun(from_step="b")

    assert run.result(timeout=30) == {"a": 1, "b": 2, "c": 2}
    assert (attempts(ka), attempts(kb), attempts(kc)) == (1, 2, 2)
    assert run.steps["a"] == first_a  # the record before the rerun's step is untouched
    assert run.record()["epoch"] == "1"


def test_rerun_with_input_replaces_the_runs_input(worker: Any) -> None:
    run = submit_workflow(wf(task("a", x="${workflow.input.x}"), task("b", x="${workflow.input.x}",
                                                                      a="${a.output.x}")),
                          input={"x": 1})
    assert run.result(timeout=30) == {"x": 1, "a": 1}

    run.rerun("b", input={"x": 2})

    assert run.result(timeout=30) == {"x": 2, "a": 1}
    assert run.record()["input"] == {"x": 2}


def test_rerun_of_a_failed_run_from_its_failed_step(worker: Any) -> None:
    before, broken = keys(2)
    run = submit_workflow(wf(counted("before", before),
                             task("broken", "fails_until_fixed", key=broken),
                             task("after", v="${broken.output.attempt}")))
    assert run.wait(timeout=30) is RunStatus.FAILED

    get_store().client.set(f"test:fixed:{broken}", "1")
    run.rerun("broken")

    assert run.result(timeout=30) == {"v": 2}
    assert attempts(before) == 1
    assert run.steps["broken"].attempts == 1  # a new attempt: the failed one's records went


def test_rerun_from_a_fork_runs_every_branch_again(worker: Any) -> None:
    head, left, broken = keys(3)
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [
        [counted("left", left)], [task("right", "fails_until_fixed", key=broken)]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN",
            "joinOn": ["left", "right"]}
    run = submit_workflow(wf(counted("head", head), fork, join))
    assert run.wait(timeout=30) is RunStatus.FAILED

    get_store().client.set(f"test:fixed:{broken}", "1")
    run.rerun("f")

    assert run.result(timeout=30) == {"left": {"attempt": 2}, "right": {"attempt": 2}}
    assert attempts(head) == 1


def test_rerun_after_a_loop_keeps_its_iterations(worker: Any) -> None:
    body, tail = keys(2)
    loop = {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE",
            "loopCondition": "$.loop['iteration'] < 3", "loopOver": [counted("body", body)]}
    run = submit_workflow(wf(loop, counted("tail", tail)))
    assert run.result(timeout=30) == {"attempt": 1}
    iterations = {ref for ref in run.steps if ref.startswith("body__")}

    run.rerun("tail")

    assert run.result(timeout=30) == {"attempt": 2}
    assert attempts(body) == 3
    assert {ref for ref in run.steps if ref.startswith("body__")} == iterations


def test_rerun_refuses_what_it_cannot_do_with_a_precise_reason(worker: Any) -> None:
    broken = uuid.uuid4().hex
    fork = {"name": "fork", "taskReferenceName": "f", "type": "FORK_JOIN",
            "forkTasks": [[task("inner")]]}
    join = {"name": "join", "taskReferenceName": "j", "type": "JOIN"}
    run = submit_workflow(wf(task("first", "fails_until_fixed", key=broken), fork, join,
                             task("last")))
    assert run.wait(timeout=30) is RunStatus.FAILED
    steps_before = run.steps

    for ref, message in [
        ("inner", "from_step: 'inner' is inside 'f'; a rerun starts from a task of the "
                  "workflow's own list, such as 'f'"),
        ("j", "from_step: 'j' is the JOIN of fork 'f'; rerun from 'f'"),
        ("lats", "from_step: 'lats' is not a task of workflow 'again' (did you mean 'last'?)"),
        ("last", "from_step: 'last' comes after 'first', which did not complete (FAILED); "
                 "rerun from 'first' or earlier"),
    ]:
        with pytest.raises(LifecycleError) as refused:
            run.rerun(ref)
        assert str(refused.value) == message
    with pytest.raises(InvalidInput, match=r"^input\.x: a set is not JSON data"):
        run.rerun("first", input={"x": {1, 2}})  # type: ignore[dict-item]

    assert run.status is RunStatus.FAILED  # nothing was written by a refused rerun
    assert run.steps == steps_before


def test_a_running_run_is_not_rerun(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("wait", "gate", key=key)))
    wait_for(lambda: get_store().client.get(f"test:attempts:gate:{key}"), timeout=30,
             what="the step to start")
    with pytest.raises(LifecycleError, match="is RUNNING: only an ended run can rerun"):
        run.rerun("wait")
    get_store().client.rpush(f"test:gate:{key}", "open")
    assert run.wait(timeout=30) is RunStatus.COMPLETED


def test_a_step_still_running_from_before_a_rerun_writes_nothing(worker: Any) -> None:
    old_gate, new_gate = keys(2)
    client = get_store().client
    run = submit_workflow(wf(task("only", "gate", key="${workflow.input.gate}",
                                  n="${workflow.input.n}")),
                          input={"gate": old_gate, "n": 1})
    wait_for(lambda: client.get(f"test:attempts:gate:{old_gate}"), timeout=30,
             what="the first attempt's step to start")
    old_task = run.steps["only"].task_id
    run.cancel("start again")

    run.rerun("only", input={"gate": new_gate, "n": 2})
    client.rpush(f"test:gate:{new_gate}", "open")
    assert run.result(timeout=30) == {"n": 2}

    client.rpush(f"test:gate:{old_gate}", "open")  # the first attempt's step now finishes
    # the run's last step keeps no Celery result: the in-process worker says when it is done
    wait_for(lambda: all(request.id != old_task for request in worker_state.active_requests),
             timeout=30, what="the first attempt's step to return")
    assert run.steps["only"].output == {"n": 2}  # not the first attempt's {"n": 1}
    assert run.status is RunStatus.COMPLETED


def test_restart_starts_a_new_sub_workflow(worker: Any) -> None:
    key = uuid.uuid4().hex
    child = wf(counted("inside", key)) | {"name": "child"}
    sub = {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
           "subWorkflowParam": {"name": "child", "workflowDefinition": child}}
    run = submit_workflow(wf(sub))
    assert run.result(timeout=30)["attempt"] == 1
    first_child = run.steps["sub"].output["subWorkflowId"]

    run.restart()

    assert run.result(timeout=30)["attempt"] == 2
    assert run.steps["sub"].output["subWorkflowId"] != first_child


def test_restart_begins_with_the_definitions_variables(worker: Any) -> None:
    setter = {"name": "set", "taskReferenceName": "set", "type": "SET_VARIABLE",
              "inputParameters": {"seen": 1}}
    run = submit_workflow(wf(task("read", seen="${workflow.variables.seen}"), setter,
                             task("out", seen="${workflow.variables.seen}"),
                             variables={"seen": 0}))
    assert run.result(timeout=30) == {"seen": 1}

    run.restart()

    assert run.result(timeout=30) == {"seen": 1}
    assert run.steps["read"].output == {"seen": 0}  # not the 1 the first attempt set


def test_baton_rerun_from_the_command_line(worker: Any) -> None:
    ka, kb = keys(2)
    run = submit_workflow(wf(counted("a", ka), task("b", v="${workflow.input.v}")),
                          input={"v": 1})
    assert run.result(timeout=30) == {"v": 1}

    done = CliRunner().invoke(main, ["rerun", run.id, "--from", "b", "-i", "v=2"])
    assert done.exit_code == 0, done.stderr
    assert done.stdout.strip() == f"{run.id}: rerunning from b"
    assert run.result(timeout=30) == {"v": 2}
    assert attempts(ka) == 1

    refused = CliRunner().invoke(main, ["rerun", run.id, "--from", "nope"])
    assert refused.exit_code == 1
    assert refused.stderr.strip() == "baton: from_step: 'nope' is not a task of workflow 'again'"
    assert run.record()["input"] == {"v": 2}
    assert run.steps["b"].status is StepStatus.COMPLETED


def test_a_parent_failed_by_its_sub_workflow_is_rerun_from_that_step(worker: Any) -> None:
    broken = uuid.uuid4().hex
    child = wf(task("inside", "fails_until_fixed", key=broken)) | {"name": "child"}
    sub = {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
           "subWorkflowParam": {"name": "child", "workflowDefinition": child}}
    run = submit_workflow(wf(sub))
    assert run.wait(timeout=30) is RunStatus.FAILED
    failed_child = WorkflowRun(run.steps["sub"].output["subWorkflowId"])
    assert failed_child.status is RunStatus.FAILED

    with pytest.raises(LifecycleError) as refused:
        failed_child.rerun("inside")
    assert str(refused.value) == (
        f"run {failed_child.id} is a sub-workflow of run {run.id} (step 'sub'): rerun the "
        "parent from that step instead")

    get_store().client.set(f"test:fixed:{broken}", "1")
    run.rerun("sub")

    assert run.result(timeout=30)["attempt"] == 2
    assert run.steps["sub"].output["subWorkflowId"] != failed_child.id
    assert failed_child.status is RunStatus.FAILED  # the earlier child is left as it ended


def test_a_completed_run_of_a_workflow_that_is_not_restartable_is_not_started_again(
    worker: Any,
) -> None:
    run = submit_workflow(wf(task("a", v=1), restartable=False))
    assert run.result(timeout=30) == {"v": 1}
    for again in (run.restart, lambda: run.rerun("a")):
        with pytest.raises(LifecycleError, match="is not restartable"):
            again()


def test_a_sub_workflow_of_an_earlier_attempt_ending_leaves_the_rerun_alone(
    worker: Any,
) -> None:
    old_gate, new_gate = keys(2)
    client = get_store().client
    child = wf(task("inside", "gate", key="${workflow.input.gate}", n="${workflow.input.n}"),
               name="gated_child")
    sub = {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
           "inputParameters": {"gate": "${workflow.input.gate}", "n": "${workflow.input.n}"},
           "subWorkflowParam": {"name": "gated_child", "workflowDefinition": child}}
    run = submit_workflow(wf(sub), input={"gate": old_gate, "n": 1})
    wait_for(lambda: client.get(f"test:attempts:gate:{old_gate}"), timeout=30,
             what="the first child's step to start")
    old_child = WorkflowRun(run.steps["sub"].output["subWorkflowId"])
    run.cancel("start again")
    assert old_child.status is RunStatus.TERMINATED  # a parent's end ends its children

    run.rerun("sub", input={"gate": new_gate, "n": 2})
    wait_for(lambda: client.get(f"test:attempts:gate:{new_gate}"), timeout=30,
             what="the new child's step to start")
    # the earlier child's step ends now: nothing of it reaches the new attempt
    client.rpush(f"test:gate:{old_gate}", "open")

    client.rpush(f"test:gate:{new_gate}", "open")
    try:
        assert run.result(timeout=30)["n"] == 2
        assert run.steps["sub"].status is StepStatus.COMPLETED
    finally:
        client.rpush(f"test:gate:{old_gate}", "open")
    assert old_child.status is RunStatus.TERMINATED
