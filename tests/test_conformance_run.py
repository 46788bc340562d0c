"""Conductor's own workflow definitions, run end to end on a real worker (level 3).

Every SIMPLE task is a stand-in that echoes its input (tests/conformance_steps.py). Each
file that Baton compiles has a scenario here: an input, the run status Conductor's
semantics give, and the step statuses and outputs to check. Files Baton cannot run yet
are listed in tests/test_conformance_static.py with the operators they need.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import pytest

from app import (
    RunStatus,
    WaitTimeout,
    WorkflowRun,
    get_run,
    register_workflow,
    submit_workflow,
)
from app.runtime.state import get_store
from tests.conformance_steps import SCRIPTED
from tests.support import baton_settings, send_json, wait_for
from tests.test_conformance_static import COMPILES, CONFORMANCE, EXPECTED

Check = Callable[[WorkflowRun], None]
Act = Callable[[WorkflowRun], None]


def statuses(run: WorkflowRun) -> dict[str, str]:
    return {ref: step.status.value for ref, step in run.steps.items()}


def check_simple_1(run: WorkflowRun) -> None:
    steps = run.steps
    assert statuses(run) == {"t1": "COMPLETED", "t2": "COMPLETED"}
    assert steps["t1"].input == {"p1": "one", "p2": "two", "p3": steps["t1"].task_id,
                                 "someNullKey": None}
    assert run.output == {"o1": "one", "o2": None, "o3": None}


def check_template(run: WorkflowRun) -> None:
    assert run.output == {"output": None, "param1": {"nested_object": {"nested_key":
                          "nested_value"}}, "param2": ["list", "of", "strings"],
                          "param3": "given"}


def check_fork_join(run: WorkflowRun) -> None:
    assert set(statuses(run).values()) == {"COMPLETED"}
    assert set(run.steps) >= {"t1", "t3", "t2", "fanouttask_join", "t4"}
    assert run.output == {"tp1": "workflow.input.param1"}


def check_switch(run: WorkflowRun, operator: str) -> None:
    steps = statuses(run)
    assert steps == {operator: "COMPLETED", "t1": "COMPLETED", "t2": "COMPLETED",
                     "t20": "COMPLETED"}
    assert run.steps[operator].output["evaluationResult"] == ["c"]


def check_switch_default(run: WorkflowRun) -> None:
    assert statuses(run) == {"switchTask": "COMPLETED", "t5": "COMPLETED", "t20": "COMPLETED"}


def check_terminate_failed(run: WorkflowRun) -> None:
    assert statuses(run) == {"t1": "COMPLETED", "switch": "COMPLETED",
                             "terminate0": "COMPLETED"}
    assert run.record()["failedReferenceTaskName"] == "terminate0"


def check_terminate_completed(run: WorkflowRun) -> None:
    assert statuses(run) == {"lambda0": "COMPLETED", "terminate0": "COMPLETED"}
    assert run.output == {"result": {"testvalue": True}}


def check_terminated_in_loop(run: WorkflowRun) -> None:
    steps = statuses(run)
    assert steps["lambda_ref__1"] == "COMPLETED" and steps["terminate_ref__1"] == "COMPLETED"
    assert "lambda_ref__2" not in steps
    assert run.record()["reasonForIncompletion"] == (
        "Workflow terminated by TERMINATE task in DO_WHILE loop")


def check_do_while(run: WorkflowRun) -> None:
    steps = statuses(run)
    for n in (1, 2):
        for ref in ("integration_task_0", "integration_task_1", "integration_task_2", "join"):
            assert steps[f"{ref}__{n}"] == "COMPLETED"
    assert "integration_task_0__3" not in steps
    loop = run.steps["loopTask"]
    assert loop.output["iteration"] == 2
    assert set(loop.output) == {"iteration", "1", "2"}


def check_set_variable_loop(run: WorkflowRun) -> None:
    assert statuses(run)["set_variable__1"] == "COMPLETED"
    assert run.record().get("output") == {"iteration": 1, "1": {"set_variable": {}}}


def check_jq(run: WorkflowRun) -> None:
    steps = run.steps
    assert steps["default_variables"].output["result"]["requestTransform"] == ".body"
    assert run.output == {"result": {"a": 1}, "resultList": [{"a": 1}]}


def check_exclusive_join(run: WorkflowRun) -> None:
    steps = statuses(run)
    assert steps["task2"] == "COMPLETED" and steps["task3"] == "COMPLETED"
    assert "task4" not in steps
    assert run.steps["exclusiveJoin"].output == {"payload": {"k": 1}}


def check_dynamic_fork(run: WorkflowRun) -> None:
    steps = statuses(run)
    assert steps["xdt1"] == "COMPLETED" and steps["xdt2"] == "COMPLETED"
    assert run.steps["xdt1"].input == {"k1": "v1"}
    assert run.steps["dynamicfanouttask_join"].output == {"xdt1": {"k1": "v1"},
                                                          "xdt2": {"k2": "v2"}}


def check_inline_dynamic_fork(run: WorkflowRun) -> None:
    steps = statuses(run)
    assert {steps[r] for r in ("simple_1", "simple_2", "simple_3")} == {"COMPLETED"}


def check_optional(run: WorkflowRun) -> None:
    assert statuses(run) == {"t1": "COMPLETED_WITH_ERRORS", "t2": "COMPLETED"}
    assert run.steps["t1"].error is not None


def check_permissive(run: WorkflowRun) -> None:
    assert statuses(run) == {"t1": "FAILED", "t2": "COMPLETED"}
    assert run.record()["failedReferenceTaskName"] == "t1"


def check_fork_permissive(run: WorkflowRun) -> None:
    steps = statuses(run)
    assert steps["t1"] == "FAILED" and steps["t2"] == "COMPLETED"
    assert "t3" not in steps


def check_sub_workflow(run: WorkflowRun) -> None:
    assert statuses(run) == {"t1": "COMPLETED", "t2": "COMPLETED"}
    child = get_run(run.steps["t2"].output["subWorkflowId"])
    assert child.status is RunStatus.COMPLETED
    assert child.record()["parentWorkflowId"] == run.id
    assert child.steps["t1"].status.value == "COMPLETED"


def check_inline_sub_workflow(run: WorkflowRun) -> None:
    assert statuses(run) == {"t1": "COMPLETED", "swt": "COMPLETED", "t2": "COMPLETED"}
    child = get_run(run.steps["swt"].output["subWorkflowId"])
    assert child.steps["t3"].input == {"p1": "jpg"}
    assert run.steps["swt"].output["op"] is None


def check_start_workflow(run: WorkflowRun) -> None:
    started = get_run(run.steps["st"].output["workflowId"])
    assert started.wait(timeout=30) is RunStatus.COMPLETED
    assert started.record()["input"] == {"x": 1}


def check_completed_only(run: WorkflowRun) -> None:
    assert set(statuses(run).values()) == {"COMPLETED"}


def complete_when_waiting(ref: str, output: dict[str, Any]) -> Act:
    def act(run: WorkflowRun) -> None:
        wait_for(lambda: ref in run.steps and run.steps[ref].status.value == "IN_PROGRESS"
                 and run.steps[ref].output is not None, timeout=30,
                 what=f"step {ref} to wait")
        run.complete_step(ref, output)

    return act


def check_human(run: WorkflowRun) -> None:
    assert statuses(run) == {"ask": "COMPLETED", "confirm": "COMPLETED"}
    assert run.steps["confirm"].output == {"result": {"status": "confirmed", "when": "3pm"}}


def check_variables_then_wait(run: WorkflowRun) -> None:
    assert statuses(run) == {"simple": "COMPLETED", "set_variable_1": "COMPLETED",
                             "wait0": "COMPLETED"}
    assert run.output == {"variables": {"var": "v"}}


def check_wait_then_task(run: WorkflowRun) -> None:
    steps = run.steps
    assert steps["wait0"].ended_at is not None and steps["t1"].started_at is not None
    assert steps["wait0"].ended_at <= steps["t1"].started_at
    assert steps["wait0"].output == {"approved": True}


def check_event(run: WorkflowRun) -> None:
    assert statuses(run) == {"wait0": "COMPLETED", "t1": "COMPLETED"}
    produced = run.steps["wait0"].output
    assert produced["event_produced"] == "baton:events:conductor"
    entries = get_store().client.xrange("baton:events:conductor", produced["eventId"],
                                        produced["eventId"])
    assert entries[0][1]["workflowId"] == run.id


def check_timed_wait(run: WorkflowRun) -> None:
    step = run.steps["wait_ref"]
    assert step.started_at is not None and step.ended_at is not None
    assert (step.ended_at - step.started_at).total_seconds() >= 29.5


def check_loop_of_inline_and_switch(run: WorkflowRun) -> None:
    steps = statuses(run)
    assert steps["GetNumberAtIndex__2"] == "COMPLETED"
    assert run.steps["GetNumberAtIndex__2"].output == {"result": {"number": -2}}
    assert run.steps["LoopTask"].output["iteration"] == 2


def check_kitchensink(run: WorkflowRun) -> None:
    steps = statuses(run)
    for ref in ("task_1", "event_0", "task_2", "oddEvenDecision", "task_10", "wf3",
                "task_11", "wf4", "join2", "get_es_1", "task_30"):
        assert steps[ref] == "COMPLETED", ref
    assert "task_4" not in steps
    assert run.steps["task_30"].input == {"statuses": ["COMPLETED", "FAILED"],
                                          "workflowIds": ["w1", "w2"]}
    assert run.output == {"statues": ["COMPLETED", "FAILED"], "workflowIds": ["w1", "w2"]}


DYNAMIC_TASKS: Final = {
    "dynamicTasks": [{"name": "integration_task_2", "taskReferenceName": "xdt1"},
                     {"name": "integration_task_3", "taskReferenceName": "xdt2"}],
    "dynamicTasksInput": {"xdt1": {"k1": "v1"}, "xdt2": {"k2": "v2"}},
}

# file -> (input, scripted outputs by task name, expected status, check[, act])
SCENARIOS: Final[dict[str, tuple[Any, ...]]] = {
    "simple_workflow_1_integration_test.json":
        ({"param1": "one", "param2": "two"}, {}, RunStatus.COMPLETED, check_simple_1),
    "simple_workflow_1_input_template_integration_test.json":
        ({"param3": "given"}, {}, RunStatus.COMPLETED, check_template),
    "simple_one_task_sub_workflow_integration_test.json":
        ({}, {}, RunStatus.COMPLETED, check_completed_only),
    "simple_workflow_with_resp_time_out_integration_test.json":
        ({"param1": "a"}, {}, RunStatus.COMPLETED, check_completed_only),
    "fork_join_integration_test.json": ({}, {}, RunStatus.COMPLETED, check_fork_join),
    "simple_switch_task_integration_test.json":
        ({"case": "c"}, {}, RunStatus.COMPLETED, lambda r: check_switch(r, "switchTask")),
    "simple_decision_task_integration_test.json":
        ({"case": "c"}, {}, RunStatus.COMPLETED, lambda r: check_switch(r, "decisionTask")),
    "switch_and_terminate_integration_test.json":
        ({"case": "two", "param1": "p"}, {}, RunStatus.FAILED, check_terminate_failed),
    "terminate_task_completed_workflow_integration_test.json":
        ({"a": 1}, {}, RunStatus.COMPLETED, check_terminate_completed),
    "terminate_task_terminated_status_in_do_while_test.json":
        ({}, {}, RunStatus.TERMINATED, check_terminated_in_loop),
    "do_while_integration_test.json": ({"loop": 2}, {}, RunStatus.COMPLETED, check_do_while),
    "do_while_set_variable_fix.json":
        ({}, {}, RunStatus.COMPLETED, check_set_variable_loop),
    "sequential_json_jq_transform_integration_test.json":
        ({"body": {"a": 1}}, {}, RunStatus.COMPLETED, check_jq),
    "exclusive_join_integration_test.json":
        ({"payload": {"k": 1}, "decision_1": "true", "decision_2": "true"}, {},
         RunStatus.COMPLETED, check_exclusive_join),
    "dynamic_fork_join_integration_test.json":
        ({}, {"integration_task_1": DYNAMIC_TASKS}, RunStatus.COMPLETED, check_dynamic_fork),
    "dyn_fork_test.json": ({}, {}, RunStatus.COMPLETED, check_inline_dynamic_fork),
    "simple_workflow_with_optional_task_integration_test.json":
        ({"param1": "x"}, {"task_optional": {"__fail__": True}}, RunStatus.COMPLETED,
         check_optional),
    "simple_workflow_with_permissive_task_integration_test.json":
        ({"param1": "x"}, {"task_permissive": {"__fail__": True}}, RunStatus.FAILED,
         check_permissive),
    "fork_join_permissive_integration_test.json":
        ({}, {"integration_task_1": {"__fail__": True}}, RunStatus.FAILED,
         check_fork_permissive),
    "workflow_with_sub_workflow_1_integration_test.json":
        ({"param1": "a", "subwf": "sub_workflow"}, {}, RunStatus.COMPLETED,
         check_sub_workflow),
    "simple_workflow_with_sub_workflow_inline_def_integration_test.json":
        ({}, {"integration_task_1": {"imageType": "jpg"}}, RunStatus.COMPLETED,
         check_inline_sub_workflow),
    "workflow_that_starts_another_workflow.json":
        ({"startWorkflow": {"name": "sub_workflow", "input": {"x": 1}}}, {},
         RunStatus.COMPLETED, check_start_workflow),
    "25-a2a-server-multi-turn.json":
        ({}, {}, RunStatus.COMPLETED, check_human,
         complete_when_waiting("ask", {"_a2a_text": "3pm"})),
    "set_variable_workflow_integration_test.json":
        ({"var": "v"}, {}, RunStatus.COMPLETED, check_variables_then_wait,
         complete_when_waiting("wait0", {})),
    "simple_wait_task_workflow_integration_test.json":
        ({}, {}, RunStatus.COMPLETED, check_wait_then_task,
         complete_when_waiting("wait0", {"approved": True})),
    "event_workflow_integration_test.json": ({}, {}, RunStatus.COMPLETED, check_event),
    "concurrency_check_wait30.json": ({}, {}, RunStatus.COMPLETED, check_timed_wait),
    "do_while_with_decision_task.json":
        ({"list": [{"number": 1}, {"number": -2}]}, {}, RunStatus.COMPLETED,
         check_loop_of_inline_and_switch),
    "kitchensink.json":
        ({"mod": 5, "oddEven": 1, "task2Name": "integration_task_3"},
         {"integration_task_3": {"oddEven": 1, "mod": 5}}, RunStatus.COMPLETED,
         check_kitchensink),
}
NOT_RUN: Final = {
    "workflow.json": "its HTTP task calls https://orkes-api-tester.orkesconductor.com, a host "
                     "on the internet this machine cannot reach; it validates and compiles",
}


RUNNABLE: Final = sorted(name for name, outcome in EXPECTED.items() if outcome == COMPILES)


def test_every_file_that_compiles_has_a_scenario_or_a_reason() -> None:
    assert sorted(set(RUNNABLE) - set(SCENARIOS) - set(NOT_RUN)) == []
    assert set(NOT_RUN) <= set(RUNNABLE)


SUB_FLOW_1: Final = {"name": "sub_flow_1", "version": 1, "schemaVersion": 2, "tasks": [
    {"name": "integration_task_1", "taskReferenceName": "x", "inputParameters": {
        "mod": "${workflow.input.mod}"}}]}


class _Search(BaseHTTPRequestHandler):
    """Stands in for the Elasticsearch that kitchensink.json's HTTP task asks."""

    def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
        send_json(self, 200, {"hits": {"hits": [
            {"_source": {"workflowId": "w1", "status": "COMPLETED"}},
            {"_source": {"workflowId": "w2", "status": "FAILED"}}]}})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def search_stand_in() -> Iterator[None]:
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 9200), _Search)
    except OSError as exc:
        pytest.fail(f"kitchensink.json needs 127.0.0.1:9200 for its search stand-in: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with baton_settings(http_allow="localhost:9200"):  # HTTP steps may not call loopback
        yield
    server.shutdown()
    server.server_close()


@pytest.fixture
def scripted_outputs() -> Iterator[Callable[[dict[str, Any]], None]]:
    client = get_store().client

    def script(outputs: dict[str, Any]) -> None:
        for name, output in outputs.items():
            client.hset(SCRIPTED, name, json.dumps(output))

    yield script
    client.delete(SCRIPTED)


@pytest.mark.parametrize("file", sorted(SCENARIOS), ids=lambda f: f.removesuffix(".json"))
def test_level_3_runs_as_conductor_would(
    file: str, worker: Any, scripted_outputs: Callable[[dict[str, Any]], None],
    search_stand_in: None,
) -> None:
    workflow_input, outputs, expected, check, *act = SCENARIOS[file]
    scripted_outputs(outputs)
    register_workflow(CONFORMANCE / "simple_one_task_sub_workflow_integration_test.json")
    register_workflow({**SUB_FLOW_1})

    run = submit_workflow(Path(CONFORMANCE / file), input=workflow_input)
    for action in act:
        action(run)

    try:
        status = run.wait(timeout=60)
    except WaitTimeout:
        status = run.status
    assert status is expected, (run.record(), statuses(run))
    check(run)


def test_switch_falls_back_to_the_default_case_only_for_a_missing_key(
    worker: Any, scripted_outputs: Callable[[dict[str, Any]], None]
) -> None:
    run = submit_workflow(Path(CONFORMANCE / "simple_switch_task_integration_test.json"),
                          input={"case": "nope"})
    assert run.wait(timeout=60) is RunStatus.COMPLETED
    check_switch_default(run)
