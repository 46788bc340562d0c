"""Conductor's operators on a real worker, beyond what the conformance files exercise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app import RunStatus, StepStatus, WorkflowFailed, submit_workflow
from app.runtime.javascript import ScriptError, ScriptOverLimit, evaluate


def wf(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "ops", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **extra}


def echo(ref: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}


def test_scripts_run_sandboxed_with_a_time_and_a_memory_limit() -> None:
    assert evaluate("$.a.get(1) + $.a.size()", {"a": [5, 6]}) == 8
    with pytest.raises(ScriptError, match="past its time limit of 0.2s"):
        evaluate("while (true) {}", {}, time_limit=0.2)
    with pytest.raises(ScriptError, match="past its memory limit of 8 MiB"):
        evaluate("var a = []; while (true) a.push(new Array(1e5).fill(1));", {},
                 memory_limit=8 * 1024 * 1024)
    with pytest.raises(ScriptError, match="ReferenceError"):
        evaluate("require('fs')", {})


@pytest.mark.parametrize("script", ["var a = []; while (true) a.push({});",
                                    "(function () { var a = []; for (;;) a.push([a.length]); })()"])
def test_running_out_of_memory_on_small_objects_is_the_memory_limit(script: str) -> None:
    # With no room left even for its error object the engine throws null; at some of
    # these limits that is what happens.
    for limit_kib in range(1024, 4096, 97):
        expected = f"past its memory limit of {limit_kib // 1024} MiB"
        with pytest.raises(ScriptOverLimit, match=expected):
            evaluate(script, {}, memory_limit=limit_kib * 1024)


def test_a_script_that_throws_null_itself_says_so() -> None:
    expected = "script failed: it threw null, or went past its memory limit of 8 MiB"
    with pytest.raises(ScriptError, match=expected) as caught:
        evaluate("throw null", {}, memory_limit=8 * 1024 * 1024)
    assert not isinstance(caught.value, ScriptOverLimit)


def test_a_script_that_never_ends_fails_its_step_and_nothing_else(worker: Any) -> None:
    spinning = submit_workflow(wf({"name": "inline", "taskReferenceName": "spin",
                                   "type": "INLINE", "inputParameters": {
                                       "evaluatorType": "javascript",
                                       "expression": "while (true) {}"}}))
    fine = submit_workflow(wf(echo("a", v=1)))

    with pytest.raises(WorkflowFailed) as caught:
        spinning.result(timeout=30)
    assert caught.value.error is not None
    assert caught.value.error["message"] == ("expression: script ran past its time limit "
                                             "of 2s")
    assert fine.result(timeout=30) == {"v": 1}


def test_switch_with_a_javascript_evaluator_picks_the_case(worker: Any) -> None:
    switch = {"name": "switch", "taskReferenceName": "sw", "type": "SWITCH",
              "evaluatorType": "javascript", "expression": "$.n > 10 ? 'big' : 'small'",
              "inputParameters": {"n": "${workflow.input.n}"},
              "decisionCases": {"big": [echo("b", size="big")],
                                "small": [echo("s", size="small")]}}
    run = submit_workflow(wf(switch), input={"n": 42})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert run.steps["sw"].output == {"evaluationResult": ["big"], "selectedCase": "big"}
    assert "s" not in run.steps
    assert run.output == {"size": "big"}


def test_a_switch_whose_evaluation_fails_fails_its_step(worker: Any) -> None:
    switch = {"name": "switch", "taskReferenceName": "sw", "type": "SWITCH",
              "evaluatorType": "javascript", "expression": "$.missing.deeper",
              "decisionCases": {"x": [echo("x")]}, "defaultCase": [echo("d")]}
    run = submit_workflow(wf(switch))
    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.steps["sw"].status is StepStatus.FAILED
    assert "d" not in run.steps


def test_do_while_over_items_exposes_item_and_index_and_keeps_last_n(worker: Any) -> None:
    loop = {"name": "loop", "taskReferenceName": "lp", "type": "DO_WHILE",
            "inputParameters": {"_items": "${workflow.input.files}", "keepLastN": 2},
            "loopCondition": "",
            "loopOver": [echo("each", file="${lp.output.item}", at="${lp.output.index}")]}
    run = submit_workflow(wf(loop, echo("after", last="${each.output.file}")),
                          input={"files": ["a", "b", "c"]})

    assert run.result(timeout=30) == {"last": "c"}
    steps = run.steps
    assert [steps[f"each__{n}"].input for n in (1, 2, 3)] == [
        {"file": "a", "at": 0}, {"file": "b", "at": 1}, {"file": "c", "at": 2}]
    assert steps["lp"].output == {"iteration": 3, "loopItem": "c", "loopIndex": 2,
                                  "2": {"each": {"file": "b", "at": 1}},
                                  "3": {"each": {"file": "c", "at": 2}}}


def test_set_variable_is_read_through_workflow_variables(worker: Any) -> None:
    run = submit_workflow(wf(
        {"name": "set", "taskReferenceName": "set", "type": "SET_VARIABLE",
         "inputParameters": {"region": "eu", "retries": [1, 2]}},
        echo("use", region="${workflow.variables.region}"),
        outputParameters={"vars": "${workflow.variables}", "r": "${use.output.region}"},
    ))
    assert run.result(timeout=30) == {"vars": {"region": "eu", "retries": [1, 2]}, "r": "eu"}


def test_json_jq_transform_gives_result_and_result_list(worker: Any) -> None:
    run = submit_workflow(wf({"name": "jq", "taskReferenceName": "jq",
                              "type": "JSON_JQ_TRANSFORM", "inputParameters": {
                                  "items": "${workflow.input.items}",
                                  "queryExpression": ".items[] | .id"}}),
                          input={"items": [{"id": 1}, {"id": 2}]})
    assert run.result(timeout=30) == {"result": 1, "resultList": [1, 2]}


def test_dynamic_runs_the_transformation_its_input_names(worker: Any) -> None:
    dynamic = {"name": "dyn", "taskReferenceName": "d", "type": "DYNAMIC",
               "dynamicTaskNameParam": "taskToRun",
               "inputParameters": {"taskToRun": "${workflow.input.which}", "a": 2, "b": 3}}
    run = submit_workflow(wf(dynamic), input={"which": "add"})
    assert run.result(timeout=30) == {"sum": 5}


def test_a_loop_of_500_iterations_completes_with_a_route_of_constant_size(worker: Any) -> None:
    loop = {"name": "loop", "taskReferenceName": "lp", "type": "DO_WHILE",
            "inputParameters": {"keepLastN": 1},
            "loopCondition": "$.lp.iteration < 500",
            "loopOver": [{"name": "noop", "taskReferenceName": "tick", "type": "NOOP"}]}
    run = submit_workflow(wf(loop))
    assert run.wait(timeout=120) is RunStatus.COMPLETED
    assert run.steps["lp"].output["iteration"] == 500
    assert len(json.dumps(run.steps["lp"].output)) < 200


def test_a_dynamic_fork_of_1000_branches_completes(worker: Any) -> None:
    fork = {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC",
            "inputParameters": {"forkTaskName": "echo",
                                "forkTaskInputs": "${workflow.input.inputs}"}}
    join = {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN"}
    run = submit_workflow(wf(fork, join), input={"inputs": [{"i": i} for i in range(1000)]})

    assert run.wait(timeout=180) is RunStatus.COMPLETED
    joined = run.steps["fan_join"].output
    assert len(joined) == 1000 and joined["_echo_999"] == {"i": 999, "__index": 999}


def test_start_delay_and_task_definition_input_template(worker: Any) -> None:
    delayed = {**echo("late", given="${workflow.input.given}"), "startDelay": 1,
               "taskDefinition": {"name": "echo", "inputTemplate": {"region": "eu",
                                                                      "given": "default"}}}
    run = submit_workflow(wf(echo("early"), delayed), input={"given": "mine"})

    assert run.result(timeout=30) == {"region": "eu", "given": "mine"}
    steps = run.steps
    assert steps["early"].ended_at is not None and steps["late"].started_at is not None
    assert (steps["late"].started_at - steps["early"].ended_at).total_seconds() >= 0.9
