"""Static validation of definitions: every problem at once, each as an exact `path: message`.

Pure tests of app.dsl.validate and app.compiler.plan.build_plan (loading: test_load.py). The
transformations are described locally and passed in; the global registry is not touched.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.compiler.plan import MAIN, ForkStage, StepStage, build_plan
from app.dsl.model import WorkflowDef
from app.dsl.validate import check_definition, parse_definition
from app.errors import DefinitionError
from app.registry import Transformation, describe


def encode(fileLocation: str, preset: str = "hd") -> dict[str, Any]:
    return {}


def deploy(fileLocation: str) -> dict[str, Any]:
    return {}


def anything(**kwargs: Any) -> dict[str, Any]:
    return {}


TRANSFORMATIONS: dict[str, Transformation] = {
    t.name: t
    for t in (
        describe(encode, "encode", "media"),
        describe(deploy, "deploy", "cdn"),
        describe(anything, "anything", "misc"),
    )
}


def task(ref: str, type: str = "SIMPLE", **fields: Any) -> dict[str, Any]:
    """A task whose name (the transformation it runs) defaults to its reference."""
    return {"name": fields.pop("name", ref), "taskReferenceName": ref, "type": type, **fields}


def workflow(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **fields}


def fork(ref: str, *branches: list[dict[str, Any]]) -> dict[str, Any]:
    return task(ref, "FORK_JOIN", forkTasks=list(branches))


def join(ref: str, *on: str) -> dict[str, Any]:
    return task(ref, "JOIN", joinOn=list(on))


def problems(
    data: dict[str, Any], transformations: dict[str, Transformation] | None = None
) -> list[str]:
    """Every problem found, warnings included (strict), as `path: message` strings, in the
    order reported."""
    with pytest.raises(DefinitionError) as caught:
        check_definition(parse_definition(data, transformations, strict=True), transformations,
                         strict=True)
    return [str(p) for p in caught.value.problems]


def valid(data: dict[str, Any]) -> WorkflowDef:
    definition = parse_definition(data)
    assert check_definition(definition) == []
    return definition


# --- every problem at once -------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    # Given a definition with a typo in a transformation, a duplicate ref, a dangling JOIN
    # and an unknown reference
    data = workflow(
        task("enc", name="encod", inputParameters={"fileLocation": "${workflow.input.f}"}),
        task("enc", name="deploy", inputParameters={"fileLocation": "${encode.output.loc}"}),
        join("j", "enc"),
    )

    # Then all are reported: duplicate references first, then task by task
    assert problems(data, TRANSFORMATIONS) == [
        "tasks[1].taskReferenceName: duplicate taskReferenceName 'enc' (first at tasks[0])",
        "tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)",
        "tasks[1].inputParameters.fileLocation: ${encode.output.loc} names unknown task "
        "reference 'encode' (did you mean 'enc'?)",
        "tasks[2]: JOIN 'j' must directly follow a FORK_JOIN",
    ]


def test_duplicate_ref_inside_a_branch_names_the_first() -> None:
    data = workflow(task("a"), fork("f", [task("a")], [task("b")]), join("j", "a", "b"))

    assert problems(data) == [
        "tasks[1].forkTasks[0][0].taskReferenceName: duplicate taskReferenceName 'a' "
        "(first at tasks[0])"
    ]


# --- names Baton reserves ---------------------------------------------------------------------


def test_ref_shaped_like_a_loop_iteration_record_is_refused() -> None:
    # Given a top-level `b__1` beside a loop whose body has `b` (recorded as b__1 in iteration 1)
    loop = task("l", "DO_WHILE", loopCondition="false", loopOver=[task("b")])
    data = workflow(task("b__1"), loop, task("c", inputParameters={"x": "${zz.output}"}))

    # Then it is refused, with the other problems of the definition
    assert problems(data) == [
        "tasks[0].taskReferenceName: 'b__1' ends in '__<number>', which Baton keeps for loop "
        "iterations of 'b'; choose another name",
        "tasks[2].inputParameters.x: ${zz.output} names unknown task reference 'zz'",
    ]


def test_nested_ref_shaped_like_a_loop_iteration_record_is_refused() -> None:
    cases = {"k": [task("y_2__10")]}
    data = workflow(
        fork("f", [task("a")], [task("x__2")]),
        join("j", "a", "x__2"),
        switch("s", cases),
        task("l", "DO_WHILE", loopCondition="false", loopOver=[task("l__0")]),
    )

    assert problems(data) == [
        "tasks[0].forkTasks[1][0].taskReferenceName: 'x__2' ends in '__<number>', which Baton "
        "keeps for loop iterations of 'x'; choose another name",
        "tasks[2].decisionCases.k[0].taskReferenceName: 'y_2__10' ends in '__<number>', which "
        "Baton keeps for loop iterations of 'y_2'; choose another name",
        "tasks[3].loopOver[0].taskReferenceName: 'l__0' ends in '__<number>', which Baton "
        "keeps for loop iterations of 'l'; choose another name",
    ]


@pytest.mark.parametrize(
    ("ref", "shown"), [("workflow", "${workflow...}"), ("CPEWF_TASK_ID", "${CPEWF_TASK_ID}")]
)
def test_ref_named_like_an_expression_root_is_refused(ref: str, shown: str) -> None:
    data = workflow(task("a"), fork("f", [task(ref)], [task("b")]), join("j", ref, "b"))

    assert problems(data) == [
        f"tasks[1].forkTasks[0][0].taskReferenceName: '{ref}' is an expression root ({shown}); "
        "a task cannot take this name"
    ]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("a.b", "'a.b' contains '.', which ${...} expressions read as syntax; choose another name"),
        ("a[0]", "'a[0]' contains '[', ']', which ${...} expressions read as syntax; "
                 "choose another name"),
        ("${a}", "'${a}' contains '$', '{', '}', which ${...} expressions read as syntax; "
                 "choose another name"),
        ("a:attempts", "'a:attempts' contains ':', which separates the parts of Baton's Redis "
                       "keys (a step's failed attempts are kept under '<ref>:attempts'); "
                       "choose another name"),
        (" a", "' a' starts or ends with whitespace, which ${...} expressions strip; "
               "choose another name"),
        ("a\n", "'a\\n' starts or ends with whitespace, which ${...} expressions strip; "
                "choose another name"),
        (" ", "a taskReferenceName cannot be blank"),
    ],
)
def test_ref_holding_expression_or_key_syntax_is_refused(ref: str, message: str) -> None:
    inline = workflow(task(ref))
    data = workflow(task("s", "SUB_WORKFLOW", subWorkflowParam={"workflowDefinition": inline}))

    assert problems(data) == [
        f"tasks[0].subWorkflowParam.workflowDefinition.tasks[0].taskReferenceName: {message}"
    ]


def test_reserved_ref_problems_come_with_every_other_problem() -> None:
    data = workflow(
        task("workflow", name="encod"),
        task("a.b__3", name="anything", inputParameters={"x": "${a.b__3.output}"}),
        task("a.b__3", name="anything"),
    )

    assert problems(data, TRANSFORMATIONS) == [
        "tasks[0].taskReferenceName: 'workflow' is an expression root (${workflow...}); "
        "a task cannot take this name",
        "tasks[1].taskReferenceName: 'a.b__3' contains '.', which ${...} expressions read as "
        "syntax; choose another name",
        "tasks[1].taskReferenceName: 'a.b__3' ends in '__<number>', which Baton keeps for loop "
        "iterations of 'a.b'; choose another name",
        "tasks[2].taskReferenceName: 'a.b__3' contains '.', which ${...} expressions read as "
        "syntax; choose another name",
        "tasks[2].taskReferenceName: 'a.b__3' ends in '__<number>', which Baton keeps for loop "
        "iterations of 'a.b'; choose another name",
        "tasks[2].taskReferenceName: duplicate taskReferenceName 'a.b__3' (first at tasks[1])",
        "tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)",
        "tasks[1].inputParameters.x: ${a.b__3.output} names unknown task reference 'a'",
    ]


def test_names_close_to_reserved_ones_are_accepted() -> None:
    loop = task("l", "DO_WHILE", loopCondition="false", loopOver=[task("b")])
    refs = ["__1", "b__", "b__x", "b_1", "b__1a", "workflows", "Workflow", "a b", "é-ü_1"]
    valid(workflow(loop, *(task(ref) for ref in refs)))


# --- transformations -------------------------------------------------------------------------


def test_unknown_transformation_without_a_close_name() -> None:
    assert problems(workflow(task("x", name="zzz")), TRANSFORMATIONS) == [
        "tasks[0].name: unknown transformation 'zzz'"
    ]


def test_input_keys_are_checked_against_a_fixed_signature() -> None:
    data = workflow(
        task("e", name="encode", inputParameters={"preset": "sd", "bitrate": 5}),
        task("d", name="deploy", inputParameters={"fileLocation": "${e.output.x}"}),
    )

    assert problems(data, TRANSFORMATIONS) == [
        "tasks[0].inputParameters: transformation 'encode' needs 'fileLocation'",
        "tasks[0].inputParameters: transformation 'encode' does not take 'bitrate'",
    ]


def test_kwargs_transformation_takes_any_input_and_none_skips_name_checks() -> None:
    data = workflow(task("a", name="anything", inputParameters={"whatever": 1}))
    check_definition(parse_definition(data), TRANSFORMATIONS)

    check_definition(parse_definition(workflow(task("x", name="not-registered"))), None)


# --- what a task may read --------------------------------------------------------------------


def test_reading_a_later_task() -> None:
    data = workflow(task("a", inputParameters={"x": "${b.output.y}"}), task("b"))

    assert problems(data) == [
        "tasks[0].inputParameters.x: ${b.output.y} names task 'b', which runs later"
    ]


def test_reading_a_sibling_fork_branch() -> None:
    data = workflow(
        fork("f", [task("a")], [task("b", inputParameters={"x": ["${a.output}"]})]),
        join("j", "a", "b"),
    )

    assert problems(data) == [
        "tasks[0].forkTasks[1][0].inputParameters.x[0]: ${a.output} names task 'a', "
        "which runs in a parallel branch of fork 'f' (forkTasks[0])"
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("${encod.output}", "names unknown task reference 'encod' (did you mean 'encode'?)"),
        ("${workflw.input.x}", "names unknown task reference 'workflw' (did you mean 'workflow'?)"),
        ("${qqq.output}", "names unknown task reference 'qqq'"),
    ],
)
def test_unknown_reference_with_a_suggestion(expression: str, message: str) -> None:
    data = workflow(task("encode"), task("b", inputParameters={"k": {"deep": expression}}))

    assert problems(data) == [f"tasks[1].inputParameters.k.deep: {expression} {message}"]


def test_task_reading_its_own_record() -> None:
    data = workflow(task("a", inputParameters={"x": "${a.output.y}"}))

    assert problems(data) == [
        "tasks[0].inputParameters.x: ${a.output.y} reads the task's own record"
    ]


def test_nested_expression_names_its_known_root_only() -> None:
    data = workflow(task("a"), task("b", inputParameters={"x": "${a.output.${zz.output.k}}"}))

    assert problems(data) == [
        "tasks[1].inputParameters.x: ${zz.output.k} names unknown task reference 'zz'"
    ]


def test_special_roots_and_earlier_tasks_are_readable() -> None:
    valid(
        workflow(
            task("a", inputParameters={"id": "${CPEWF_TASK_ID}", "w": "${workflow.workflowId}"}),
            task("b", inputParameters={"x": "${a.output.y}", "s": "${a.status}", "e": "$${zz}"}),
        )
    )


def test_after_a_join_every_branch_step_is_readable() -> None:
    data = workflow(
        fork("f", [task("a1"), task("a2")], [task("b1", inputParameters={"q": "${f.input.q}"})]),
        join("j", "a2", "b1"),
        task("c", inputParameters={"x": "${a1.output}", "y": "${b1.output}", "z": "${j.output}"}),
        outputParameters={"first": "${a1.output.x}", "fork": "${f.input}"},
    )

    valid(data)


# --- fork and join shape ---------------------------------------------------------------------


def test_fork_not_followed_by_join() -> None:
    data = workflow(
        fork("f", [task("a")], [task("b")]),
        task("c", inputParameters={"x": "${a.output}"}),
        fork("g", [task("d")], [task("e")]),
    )

    # the missing JOIN is reported once, not again at every read of a branch step
    assert problems(data) == [
        "tasks[0]: FORK_JOIN 'f' must be followed by a JOIN",
        "tasks[2]: FORK_JOIN 'g' must be followed by a JOIN",
    ]


def test_join_not_after_a_fork() -> None:
    data = workflow(
        fork("f", [task("a")], [task("b")]), join("j", "a", "b"), task("c"), join("k", "c")
    )

    assert problems(data) == ["tasks[3]: JOIN 'k' must directly follow a FORK_JOIN"]


def test_join_on_must_name_branch_ends() -> None:
    data = workflow(fork("f", [task("a1"), task("a2")], [task("b")]), join("j", "a1", "b", "zz"))

    assert problems(data) == [
        "tasks[1].joinOn[0]: 'a1' ends no branch of fork 'f' (branch ends: 'a2', 'b')",
        "tasks[1].joinOn[2]: 'zz' ends no branch of fork 'f' (branch ends: 'a2', 'b')",
    ]


def test_empty_fork_and_empty_branch() -> None:
    data = workflow(fork("f"), join("j"), fork("g", [task("a")], []), join("k", "a"))

    assert problems(data) == [
        "tasks[0].forkTasks: FORK_JOIN 'f' has no branches",
        "tasks[2].forkTasks[1]: a fork branch needs at least one task",
    ]


def test_dynamic_fork_needs_a_join() -> None:
    data = workflow(task("d", "FORK_JOIN_DYNAMIC", dynamicForkTasksParam="t"), task("x"))

    assert problems(data) == ["tasks[0]: FORK_JOIN_DYNAMIC 'd' must be followed by a JOIN"]


# --- expressions and outputs -----------------------------------------------------------------


def test_malformed_expressions_are_located_inside_the_value() -> None:
    data = workflow(
        task("t", inputParameters={"a": {"b": [0, 1, "${"]}, "c": "${t.output[?(}"}),
        outputParameters={"o": ["${}"]},
    )

    assert problems(data) == [
        "tasks[0].inputParameters.a.b[2]: unterminated expression '${' (missing '}')",
        "outputParameters.o[0]: empty expression '${}'",
    ]


def test_output_parameters_may_name_only_known_refs() -> None:
    data = workflow(task("a"), outputParameters={"x": "${a.output}", "y": {"z": "${aa.output}"}})

    assert problems(data) == [
        "outputParameters.y.z: ${aa.output} names unknown task reference 'aa' (did you mean 'a'?)"
    ]


# --- schema errors use Conductor's field names -----------------------------------------------


def test_schema_errors_name_conductor_fields() -> None:
    data = workflow(
        task("a"),
        task("b", inputParameters=["x"], retryCont=1),
        fork("f", [task("c")], [task("d", optional="yes")]),
        join("j", "c", "d"),
        timeout=5,
    )

    assert problems(data) == [
        "tasks[1].inputParameters: Input should be a valid dictionary",
        "tasks[1].retryCont: unknown field",
        "tasks[2].forkTasks[1][0].optional: Input should be a valid boolean",
        "timeout: unknown field",
    ]


def test_schema_errors_inside_unions_and_named_cases() -> None:
    sub = {"name": "child", "priority": 1.5}
    inline = {"workflowDefinition": {"name": "c", "tasks": [task("x", optional=1)]}}
    cases = {"str": [task("y", optional=1)]}
    data = workflow(
        task("s", "SUB_WORKFLOW", subWorkflowParam=sub),
        task("t", "SUB_WORKFLOW", subWorkflowParam=inline),
        task("u", "SWITCH", decisionCases=cases),
    )

    assert problems(data) == [
        "tasks[0].subWorkflowParam.priority: Input should be a valid integer; "
        "Input should be a valid string",
        "tasks[1].subWorkflowParam.workflowDefinition.tasks[0].optional: "
        "Input should be a valid boolean",
        "tasks[2].decisionCases.str[0].optional: Input should be a valid boolean",
    ]


def test_inline_sub_workflow_is_validated_with_its_own_refs() -> None:
    inline = workflow(task("a", inputParameters={"x": "${b.output}"}), task("b"))
    data = workflow(
        task("s", "SUB_WORKFLOW", subWorkflowParam={"workflowDefinition": inline}),
        task("b"),
    )

    assert problems(data) == [
        "tasks[0].subWorkflowParam.workflowDefinition.tasks[0].inputParameters.x: "
        "${b.output} names task 'b', which runs later"
    ]


# --- SWITCH and DO_WHILE validate; build_plan refuses what Baton cannot run yet --------------


def switch(ref: str, cases: dict[str, list[dict[str, Any]]], **fields: Any) -> dict[str, Any]:
    inputs = {"k": "${workflow.input.k}"}
    fields.update(evaluatorType="value-param", expression="k", inputParameters=inputs)
    return task(ref, "SWITCH", decisionCases=cases, **fields)


def test_switch_cases_read_the_switch_but_not_each_other() -> None:
    data = workflow(
        switch(
            "s",
            {"x": [task("a", inputParameters={"r": "${s.output.evaluationResult}"})]},
            defaultCase=[task("b", inputParameters={"v": "${a.output}"})],
        ),
        task("c", inputParameters={"a": "${a.output}", "b": "${b.output}"}),
    )

    assert problems(data) == [
        "tasks[0].defaultCase[0].inputParameters.v: ${a.output} names task 'a', "
        "which runs only in another case of SWITCH 's' (decisionCases.x)"
    ]


def test_loop_body_reads_the_loop_and_any_body_task() -> None:
    body = [
        task("a", inputParameters={"i": "${l.output.iteration}", "b": "${b.output}"}),
        task("b"),
    ]

    loop = task("l", "DO_WHILE", loopCondition="false", loopOver=body)

    valid(workflow(loop, task("c", inputParameters={"a": "${a.output}", "l": "${l.output}"})))


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (
            [task("a"), switch("s", {"x": [task("w", "KAFKA_PUBLISH")]})],
            "tasks[1].decisionCases.x[0]: type KAFKA_PUBLISH is not supported yet",
        ),
        (
            [task("a"), task("l", "DO_WHILE", loopCondition="false",
                             loopOver=[task("m", "DO_WHILE", loopCondition="false",
                                            loopOver=[task("b")])])],
            "tasks[1].loopOver[0]: a DO_WHILE inside a DO_WHILE is not supported yet",
        ),
        (
            [fork("f", [task("a")], [task("w", "USER_DEFINED")]), join("j", "a", "w")],
            "tasks[0].forkTasks[1][0]: type USER_DEFINED is not supported yet",
        ),
    ],
)
def test_build_plan_refuses_unsupported_types(tasks: list[dict[str, Any]], expected: str) -> None:
    # Given a definition that validates but holds a type Baton cannot run yet
    definition = valid(workflow(*tasks, task("last")))

    # When a plan is built, Then each such task is named
    with pytest.raises(DefinitionError) as caught:
        build_plan(definition)

    assert [str(p) for p in caught.value.problems] == [expected]


def test_build_plan_of_a_supported_definition() -> None:
    branch = [task("a", name="anything", inputParameters={"x": "${e.output.x}"})]
    data = workflow(
        task("e", name="encode", inputParameters={"fileLocation": "${workflow.input.f}"}),
        fork("f", branch, [task("n", "NOOP")]),
        join("j", "a", "n"),
    )

    plan = build_plan(parse_definition(data), TRANSFORMATIONS)

    assert plan.sequences[MAIN] == (StepStage("e"), ForkStage("f", ("f[0]", "f[1]"), "j"))
    assert plan.sequences["f[0]"] == (StepStage("a"),)
    assert plan.steps["a"].reads == ("e",)
    assert plan.steps["j"].fork_ref == "f"
    assert plan.last_ref == "j" and plan.output is None


def test_build_plan_checks_the_definition_first() -> None:
    with pytest.raises(DefinitionError) as caught:
        build_plan(parse_definition(workflow(task("x", name="encod"))), TRANSFORMATIONS)

    assert [str(p) for p in caught.value.problems] == [
        "tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)"
    ]
