"""Validation as Conductor users meet it: warnings for what Conductor accepts, every problem in
one pass, scripts compiled without running, and a workflow execution passed as a definition.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from app import DefinitionError, submit_workflow
from app.cli import main
from app.dsl.load import read_definition
from app.dsl.validate import check_definition, find_problems, parse_definition
from app.errors import Problem
from tests.support import baton_settings


def task(ref: str, type: str = "SIMPLE", **fields: Any) -> dict[str, Any]:
    return {"name": fields.pop("name", "echo"), "taskReferenceName": ref, "type": type,
            **fields}


def workflow(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **fields}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def write(tmp_path: Path, data: dict[str, Any], name: str = "wf.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def errors(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        check_definition(parse_definition(data, **kwargs), **kwargs)
    return [str(p) for p in caught.value.problems]


# A typo of a ref Conductor reads as null at run time (its own test definitions hold such refs).
TYPO = workflow(
    task("first", inputParameters={"v": 1}),
    task("second", inputParameters={"seen": "${frist.output.v}", "kept": "${first.output.v}"}),
)
TYPO_WARNING = ("tasks[1].inputParameters.seen: ${frist.output.v} names unknown task reference "
                "'frist' (did you mean 'first'?)")


# --- unknown references: a warning by default, an error when strict --------------------------


def test_unknown_reference_is_a_warning_with_its_hint() -> None:
    assert [str(w) for w in check_definition(parse_definition(TYPO))] == [TYPO_WARNING]


def test_strict_makes_warnings_errors_by_argument_and_by_setting() -> None:
    assert errors(TYPO, strict=True) == [TYPO_WARNING]
    with baton_settings(strict="1"):
        assert errors(TYPO) == [TYPO_WARNING]


def test_references_conductor_accepts_are_warnings_the_rest_errors() -> None:
    # Given refs to a later task and to another SWITCH case (null in Conductor and in Baton)
    # beside a task reading its own record
    cases = {"x": [task("a")], "y": [task("b", inputParameters={"v": "${a.output}"})]}
    data = workflow(
        task("s", "SWITCH", evaluatorType="value-param", expression="k",
             inputParameters={"k": "x"}, decisionCases=cases),
        task("c", inputParameters={"v": "${d.output}"}),
        task("d", inputParameters={"v": "${d.output}"}),
    )

    # Then only the own-record read is an error; strict mode reports all three in order
    assert errors(data) == ["tasks[2].inputParameters.v: ${d.output} reads the task's own record"]
    assert errors(data, strict=True) == [
        "tasks[0].decisionCases.y[0].inputParameters.v: ${a.output} names task 'a', which "
        "runs only in another case of SWITCH 's' (decisionCases.x)",
        "tasks[1].inputParameters.v: ${d.output} names task 'd', which runs later",
        "tasks[2].inputParameters.v: ${d.output} reads the task's own record",
    ]


def test_run_with_an_unknown_reference_reads_null_and_keeps_its_warning(worker: Any) -> None:
    run = submit_workflow(TYPO)

    assert run.result(timeout=30) == {"kept": 1, "seen": None}
    assert run.steps["second"].input == {"seen": None, "kept": 1}
    assert run.warnings == (Problem("tasks[1].inputParameters.seen",
                                    TYPO_WARNING.partition(": ")[2]),)


def test_submit_strict_refuses_and_a_clean_run_has_no_warnings(worker: Any) -> None:
    with pytest.raises(DefinitionError, match="names unknown task reference 'frist'"):
        submit_workflow(TYPO, strict=True)
    with baton_settings(strict="true"), pytest.raises(DefinitionError):
        submit_workflow(TYPO)
    clean = submit_workflow(workflow(task("only", inputParameters={"v": 1})))
    clean.wait(timeout=30)
    assert clean.warnings == ()


def test_cli_validate_prints_warnings_and_exits_0_unless_strict(tmp_path: Path) -> None:
    path = write(tmp_path, TYPO)

    result = invoke("validate", path)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [f"warning: {TYPO_WARNING}"]
    assert result.stdout == f"{path}: ok (1 warning)\n"

    for args, env in (((path, "--strict"), None), ((path,), {"BATON_STRICT": "1"})):
        strict = invoke("validate", *args, env=env)
        assert strict.exit_code == 2
        assert strict.stderr.splitlines() == [f"baton: {TYPO_WARNING}"]


def test_cli_submit_warns_refuses_when_strict_and_status_shows_warnings(
    worker: Any, redis_server: Any, tmp_path: Path
) -> None:
    path = write(tmp_path, TYPO)
    env: dict[str, str | None] = {"REDIS_URL": redis_server.url}

    refused = invoke("submit", path, "--strict", env=env)
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == [f"baton: {TYPO_WARNING}"]

    submitted = invoke("submit", path, "--wait", env=env)
    assert submitted.exit_code == 0, submitted.stderr
    assert submitted.stderr.splitlines()[0] == f"warning: {TYPO_WARNING}"
    run_id = submitted.stderr.splitlines()[1].split()[1]

    status = invoke("status", run_id, env=env)
    assert status.exit_code == 0, status.stderr
    assert f"warning      {TYPO_WARNING}" in status.stdout.splitlines()
    document = json.loads(invoke("status", run_id, "--json", env=env).stdout)
    assert document["warnings"] == [{"path": "tasks[1].inputParameters.seen",
                                     "message": TYPO_WARNING.partition(": ")[2]}]


# --- every problem in one pass ---------------------------------------------------------------


def test_schema_errors_and_checks_are_reported_together() -> None:
    # Given schema errors (an unknown field, a task missing its name, an unknown type) beside
    # problems only the checks find, in well-formed tasks around them
    data = workflow(
        task("a", inputParameters={"v": "${"}, retryCont=1),
        {"taskReferenceName": "broken", "inputParameters": {"v": "${nowhere.output}"}},
        task("a"),
        task("j", "JOIN"),
        task("typo", "SIMPL", inputParameters={"v": "${zz.output}"}),
        task("last", inputParameters={"b": "${broken.output}", "t": "${typo.output}"}),
        timeout=5,
    )

    # Then one error names them all; the refused tasks are not checked further, and reading
    # them is not reported again
    assert errors(data) == [
        "tasks[0].retryCont: unknown field",
        "tasks[1].name: Field required",
        "tasks[4].type: unknown task type 'SIMPL' (did you mean 'SIMPLE'?)",
        "timeout: unknown field",
        "tasks[2].taskReferenceName: duplicate taskReferenceName 'a' (first at tasks[0])",
        "tasks[0].inputParameters.v: unterminated expression '${' (missing '}')",
        "tasks[3]: JOIN 'j' must directly follow a FORK_JOIN",
    ]


def test_one_pass_checks_transformations_and_warnings_when_strict(tmp_path: Path) -> None:
    data = workflow(
        task("e", name="encod", bogus=1),
        task("d", inputParameters={"v": "${ee.output}"}),
    )

    result = invoke("validate", write(tmp_path, data), "--strict")

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "baton: tasks[0].bogus: unknown field",
        "baton: tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)",
        "baton: tasks[1].inputParameters.v: ${ee.output} names unknown task reference 'ee' "
        "(did you mean 'e'?)",
    ]


def test_a_refused_fork_does_not_misplace_its_join() -> None:
    data = workflow(
        task("f", "FORK_JOIN", forkTasks=[[task("a")]], optional="yes"),
        task("j", "JOIN", joinOn=["a"]),
        task("after", inputParameters={"v": "${a.output}"}),
    )

    assert errors(data, strict=True) == ["tasks[0].optional: Input should be a valid boolean"]


# --- scripts compiled at validation, never run -----------------------------------------------


def test_script_syntax_errors_are_located() -> None:
    data = workflow(
        task("l", "DO_WHILE", loopCondition="$.l['iteration'] < ", loopOver=[task("b")]),
        task("i", "INLINE", inputParameters={"evaluatorType": "graaljs",
                                             "expression": "function e() {\n  return $.x +;\n}"}),
        task("s", "SWITCH", evaluatorType="javascript", expression="$.k ==== 1",
             inputParameters={"k": 1}, defaultCase=[task("c")]),
        task("f", "LAMBDA", inputParameters={"scriptExpression": "return {a: 1"}),
        task("q", "JSON_JQ_TRANSFORM", inputParameters={"queryExpression": ".a | | .b"}),
        task("p", "DECISION", caseExpression="}); (function () {",
             decisionCases={"x": [task("x")]}),
        task("r", "INLINE", inputParameters={"expression": "return 1"}),
        task("g", "LAMBDA", scriptExpression="}); (function () {"),
    )

    assert errors(data) == [
        "tasks[0].loopCondition: SyntaxError at the end of the script: unexpected end of script",
        "tasks[1].inputParameters.expression: SyntaxError at line 2: unexpected token in "
        "expression: ';'",
        "tasks[2].expression: SyntaxError at line 1: unexpected token in expression: '='",
        "tasks[3].inputParameters.scriptExpression: SyntaxError at the end of the script: "
        "expecting ';'",
        "tasks[4].inputParameters.queryExpression: jq: syntax error, unexpected '|' at line 1, "
        "column 6",
        "tasks[5].caseExpression: SyntaxError at line 1: unexpected token in expression: ')'",
        "tasks[6].inputParameters.expression: SyntaxError at line 1: return not in a function",
        "tasks[7].scriptExpression: SyntaxError: a '}' or ')' closes more than the script opens",
    ]


def test_scripts_are_compiled_without_running() -> None:
    # Endless loops that would never end if run (one of them only if it escaped its wrapper),
    # a LAMBDA's `return`, scripts known only at run time (${...}), and a value-param SWITCH
    # whose expression is not JavaScript
    data = workflow(
        task("i", "INLINE", inputParameters={"evaluatorType": "javascript",
                                             "expression": "while (true) {}"}),
        task("e", "LAMBDA", inputParameters={
            "scriptExpression": "}, (() => { while (true) {} })(), function () {"}),
        task("l", "LAMBDA", inputParameters={"scriptExpression": "return $.v"}),
        task("t", "INLINE", inputParameters={"evaluatorType": "javascript",
                                             "expression": "${workflow.input.script}"}),
        task("v", "INLINE", inputParameters={"evaluatorType": "value-param",
                                             "expression": "not ) js"}),
        task("q", "JSON_JQ_TRANSFORM", inputParameters={"queryExpression": "[.[] | .a]"}),
        task("s", "SWITCH", evaluatorType="value-param", expression="k ) (",
             inputParameters={"k": 1}, defaultCase=[task("c")]),
    )

    # (had the loop run, its time limit would have interrupted it: a different message)
    assert [str(p) for p in find_problems(parse_definition(data))] == [
        "tasks[1].inputParameters.scriptExpression: SyntaxError: a '}' or ')' closes more than "
        "the script opens"
    ]


# --- a workflow execution given as a definition ----------------------------------------------


def execution(**extra: Any) -> dict[str, Any]:
    return {"workflowId": "4f1d", "status": "COMPLETED", "workflowName": "wf",
            "workflowVersion": 3, "input": {}, "createTime": 1,
            "tasks": [{"taskId": "t1", "status": "COMPLETED", "referenceTaskName": "first",
                       "taskType": "SIMPLE"}], **extra}


def test_an_execution_with_its_definition_is_read_as_that_definition(tmp_path: Path) -> None:
    loaded = read_definition(execution(workflowDefinition=TYPO))

    assert loaded.definition.name == "wf"
    assert [str(w) for w in loaded.warnings] == [
        'this is a workflow execution (workflowId 4f1d, status COMPLETED), not a definition: '
        'read the definition under "workflowDefinition" instead'
    ]
    result = invoke("validate", write(tmp_path, execution(workflowDefinition=TYPO)))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"warning: {loaded.warnings[0]}",
                                          f"warning: {TYPO_WARNING}"]


def test_an_execution_without_a_definition_is_one_line(tmp_path: Path) -> None:
    result = invoke("validate", write(tmp_path, execution()))

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        'baton: this is a workflow execution (workflowId 4f1d, status COMPLETED), not a '
        'definition, and it has no "workflowDefinition": export the definition itself '
        "(Conductor's GET /metadata/workflow/wf?version=3)"
    ]
