"""inputSchema / outputSchema with enforceSchema, on real workers.

A workflow's schemas are enforced unless it sets enforceSchema false; a task's
(taskDefinition) only with enforceSchema true. The run input is checked at submit (nothing
is recorded when it fails), a step's input before its work and its output after it (the step
fails terminally), the run's output when it would complete (the run fails). A schema is
checked when the definition is: its dialect's metaschema, and only local references.
"""

from __future__ import annotations

from typing import Any

import pytest

from app import RunStatus, StepStatus, submit_workflow
from app.definitions import register_workflow
from app.dsl.model import SchemaDef
from app.dsl.schemas import compile_schema, violations
from app.dsl.validate import check_definition, parse_definition
from app.errors import DefinitionError
from app.runtime.runs import InvalidInput
from app.runtime.state import get_store
from tests.support import wait_for

PERSON = {"type": "object", "required": ["user"], "properties": {
    "user": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}}}
TOTAL = {"type": "object", "required": ["total"],
         "properties": {"total": {"type": "number", "minimum": 0}}}


def schema(data: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"name": "s", "type": "JSON", **({"data": data} if data is not None else {}),
            **fields}


def wf(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "schemas", "version": 1, "tasks": list(tasks), **extra}


def echo(ref: str, task_definition: dict[str, Any] | None = None, **inputs: Any
         ) -> dict[str, Any]:
    task: dict[str, Any] = {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}
    if task_definition is not None:
        task["taskDefinition"] = {"name": "echo", **task_definition}
    return task


def enforced(**schemas: Any) -> dict[str, Any]:
    """A taskDefinition enforcing the given inputSchema / outputSchema (data only)."""
    return {"enforceSchema": True, "retryCount": 2, "retryDelaySeconds": 0,
            **{name: schema(data) for name, data in schemas.items()}}


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(DefinitionError) as refused:
        check_definition(parse_definition(data))
    return {p.path: p.message for p in refused.value.problems}


def run_count() -> int:
    return len(get_store().list_runs(100_000))


# -- at validation ----------------------------------------------------------------------


def test_a_bad_schema_is_refused_with_its_path_among_the_definitions_other_problems() -> None:
    found = problems(wf(
        echo("a", enforced(inputSchema={"type": "object",
                                        "properties": {"n": {"minimum": "zero"}}})),
        echo("a"),
        inputSchema=schema({"type": "objec"})))

    assert found == {
        "inputSchema.data.type":
            "'objec' is not one of ['array', 'boolean', 'integer', 'null', 'number', "
            "'object', 'string']",
        "tasks[0].taskDefinition.inputSchema.data.properties.n.minimum":
            "'zero' is not of type 'number'",
        "tasks[1].taskReferenceName": "duplicate taskReferenceName 'a' (first at tasks[0])",
    }


def test_schema_problems_come_with_those_the_model_finds() -> None:
    found = problems(wf({"name": "noop", "taskReferenceName": "n", "type": "NOOP", "bogus": 1},
                        inputSchema=schema({"type": "objec"}),
                        outputSchema=schema(TOTAL, type="XML")))

    assert set(found) == {"tasks[0].bogus", "inputSchema.data.type", "outputSchema.type"}


def test_a_schema_is_checked_against_the_dialect_its_schema_keyword_names() -> None:
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
              "properties": {"n": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}}}
    check_definition(parse_definition(wf(echo("a"), inputSchema=schema(draft4))))

    # the same schema in the default dialect (2020-12), where exclusiveMinimum is a number
    del draft4["$schema"]
    assert problems(wf(echo("a"), inputSchema=schema(draft4))) == {
        "inputSchema.data.properties.n.exclusiveMinimum": "True is not of type 'number'"}
    assert "unknown JSON Schema dialect 'draft-5'" in problems(wf(
        echo("a"), inputSchema=schema({"$schema": "draft-5"})))["inputSchema.data.$schema"]

    # and data is judged by it: draft 4's boolean exclusiveMinimum excludes the minimum
    validator = compile_schema(SchemaDef.model_validate(schema(
        {**draft4, "$schema": "http://json-schema.org/draft-04/schema#"})))
    assert violations(validator, {"n": 0}, "input") == [
        "input.n: 0 is less than or equal to the minimum of 0"]


def test_only_references_inside_the_schema_are_honoured() -> None:
    data = {"$defs": {"name": {"type": "string"}},
            "properties": {"a": {"$ref": "#/$defs/name"},
                           "b": {"$ref": "https://example.com/person.json"},
                           "c": {"$ref": "#/$defs/missing"},
                           "d": {"const": {"$ref": "https://example.com/literal"}}}}

    found = problems(wf(echo("a"), outputSchema=schema(data)))

    assert found == {
        "outputSchema.data.properties.b.$ref":
            "'https://example.com/person.json' is not inside this schema: only local "
            "references (such as '#/$defs/name', or an $id given within the schema) are "
            "honoured, as Baton fetches no schema",
        "outputSchema.data.properties.c.$ref":
            "'#/$defs/missing' points to nothing in this schema ('/$defs/missing' does not "
            "exist)",
    }
    # an $id given inside the schema is local: a reference to it resolves
    embedded = {"$id": "https://example.com/root.json", "properties": {"x": {"$ref": "item"}},
                "$defs": {"item": {"$id": "item", "type": "string"}}}
    check_definition(parse_definition(wf(echo("a"), inputSchema=schema(embedded))))


def test_a_schema_kept_in_a_registry_or_not_json_schema_is_refused() -> None:
    found = problems(wf(echo("a", {"enforceSchema": True, "outputSchema": schema(
                        type="AVRO", data={"type": "record"})}),
                        inputSchema=schema(), outputSchema=schema(TOTAL, externalRef="s:1")))

    assert found["inputSchema"].startswith("schema 's' has no data: a schema kept in a "
                                           "registry by name and version is not supported")
    assert found["outputSchema.externalRef"].startswith("not supported (Baton has no schema "
                                                        "registry")
    assert found["tasks[0].taskDefinition.outputSchema.type"].startswith(
        "AVRO schemas are not supported (Baton validates JSON Schema only)")


def test_an_output_schema_is_refused_where_no_step_sees_the_output() -> None:
    found = problems(wf({"name": "h", "taskReferenceName": "h", "type": "HUMAN",
                         "taskDefinition": {"name": "h", "enforceSchema": True,
                                            "outputSchema": schema(TOTAL)}}))

    assert found == {"tasks[0].taskDefinition.outputSchema":
                     "not supported for a HUMAN task (its output is not seen by a step of its "
                     "own); remove it or set taskDefinition.enforceSchema false"}


def test_schemas_not_enforced_are_not_checked() -> None:
    task_definition = {"inputSchema": schema({"type": "objec"})}  # enforceSchema: false
    check_definition(parse_definition(wf(
        echo("a", task_definition), enforceSchema=False,
        inputSchema=schema(type="PROTOBUF"), outputSchema=schema({"$ref": "http://x/y"}))))


# -- on real workers ----------------------------------------------------------------------


def test_data_that_conforms_runs(worker: Any) -> None:
    run = submit_workflow(wf(
        echo("a", enforced(inputSchema=PERSON, outputSchema=PERSON), user="${workflow.input.user}"),
        echo("b", total=3),
        inputSchema=schema(PERSON), outputSchema=schema(TOTAL),
        inputTemplate={"user": {"name": "ann"}},  # fills in what the schema requires
        outputParameters={"total": "${b.output.total}"}))

    assert run.result(timeout=30) == {"total": 3}
    assert run.steps["a"].input == {"user": {"name": "ann"}}


def test_a_run_input_that_breaks_the_schema_is_refused_at_submit(worker: Any) -> None:
    before = run_count()

    with pytest.raises(InvalidInput) as refused:
        submit_workflow(wf(echo("a"), inputSchema=schema(PERSON)),
                        {"user": {"name": "ann", "age": -1}})

    assert str(refused.value) == ("input.user.age: -1 is less than the minimum of 0 "
                                  "(inputSchema 's')")
    assert type(refused.value).__name__ == "SchemaViolation"
    assert run_count() == before  # nothing recorded
    with pytest.raises(InvalidInput, match=r"^input: 'user' is a required property"):
        submit_workflow(wf(echo("a"), inputSchema=schema(PERSON)), {})


def test_a_rerun_with_input_that_breaks_the_schema_is_refused(worker: Any) -> None:
    run = submit_workflow(wf(echo("a"), inputSchema=schema(PERSON)), {"user": {"name": "a"}})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    record = run.record()

    with pytest.raises(InvalidInput, match=r"^input.user.name: 1 is not of type 'string'"):
        run.rerun("a", input={"user": {"name": 1}})

    assert run.record() == record


def test_a_step_input_that_breaks_the_schema_fails_the_step_terminally(worker: Any) -> None:
    run = submit_workflow(wf(echo("a", enforced(inputSchema=PERSON), user={"age": "x"}),
                             echo("b")))

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["a"]
    assert step.status is StepStatus.FAILED_WITH_TERMINAL_ERROR
    assert step.attempts == 1  # retryCount 2, but the same input fails again: no retry
    assert step.error is not None and step.error["type"] == "SchemaViolation"
    assert step.error["message"] == (
        "input.user: 'name' is a required property; input.user.age: 'x' is not of type "
        "'integer' (taskDefinition.inputSchema 's')")
    assert step.input == {"user": {"age": "x"}}  # recorded, to see what failed
    assert "b" not in run.steps
    assert run.record()["reasonForIncompletion"].startswith("SchemaViolation: input.user:")


def test_a_step_output_that_breaks_the_schema_fails_the_step(worker: Any) -> None:
    run = submit_workflow(wf(echo("a", enforced(outputSchema=TOTAL), total=-2)))

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["a"]
    assert step.status is StepStatus.FAILED_WITH_TERMINAL_ERROR
    assert step.attempts == 1
    assert step.error is not None and step.error["message"] == (
        "output.total: -2 is less than the minimum of 0 (taskDefinition.outputSchema 's')")


def test_an_optional_step_whose_output_breaks_the_schema_lets_the_run_go_on(
        worker: Any) -> None:
    run = submit_workflow(wf({**echo("a", enforced(outputSchema=TOTAL)), "optional": True},
                             echo("b", after="${a.output}")))

    assert run.result(timeout=30) == {"after": {}}
    assert run.steps["a"].status is StepStatus.COMPLETED_WITH_ERRORS


def test_a_task_schema_is_not_enforced_without_enforce_schema(worker: Any) -> None:
    not_enforced = {"inputSchema": schema(PERSON), "outputSchema": schema(TOTAL)}
    run = submit_workflow(wf(echo("a", not_enforced, total="none"), enforceSchema=False,
                             inputSchema=schema(PERSON), outputSchema=schema(TOTAL)),
                          {"user": {"age": -1}})

    assert run.result(timeout=30) == {"total": "none"}


def test_a_run_output_that_breaks_the_schema_fails_the_run(worker: Any) -> None:
    run = submit_workflow(wf(echo("a", total="${workflow.input.total}"),
                             outputSchema=schema(TOTAL)), {"total": "ten"})

    assert run.wait(timeout=30) is RunStatus.FAILED
    record = run.record()
    assert record["reasonForIncompletion"] == (
        "SchemaViolation: output.total: 'ten' is not of type 'number' (outputSchema 's')")
    assert run.steps["a"].status is StepStatus.COMPLETED  # the work itself was done
    assert run.output == {"total": "ten"}  # kept, to see what broke the schema


def test_a_run_output_given_from_outside_is_checked_too(worker: Any) -> None:
    human = {"name": "h", "taskReferenceName": "h", "type": "HUMAN"}
    run = submit_workflow(wf(human, outputSchema=schema(TOTAL),
                             outputParameters={"total": "${h.output.total}"}))
    wait_for(lambda: "h" in run.steps and run.steps["h"].status is StepStatus.IN_PROGRESS,
             timeout=30, what="the HUMAN step to wait")

    run.complete_step("h", {"total": -1})

    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.record()["reasonForIncompletion"].startswith(
        "SchemaViolation: output.total: -1 is less than the minimum of 0")
    assert run.steps["h"].status is StepStatus.COMPLETED


def child(**extra: Any) -> dict[str, Any]:
    return wf(echo("c", total="${workflow.input.total}"), name="schemas_child",
              inputSchema=schema({"type": "object", "required": ["total"]}),
              outputSchema=schema(TOTAL), **extra)


def sub_workflow(**inputs: Any) -> dict[str, Any]:
    return {"name": "child", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
            "inputParameters": inputs,
            "subWorkflowParam": {"name": "schemas_child", "workflowDefinition": child()}}


def test_a_sub_workflow_input_that_breaks_its_schema_fails_the_parent_step(
        worker: Any) -> None:
    run = submit_workflow(wf(sub_workflow(other=1)))

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["sub"]
    assert step.status is StepStatus.FAILED_WITH_TERMINAL_ERROR
    assert step.error is not None and step.error["message"] == (
        "input: 'total' is a required property (inputSchema 's')")


def test_a_sub_workflow_output_that_breaks_its_schema_fails_the_parent_step(
        worker: Any) -> None:
    run = submit_workflow(wf(sub_workflow(total=-5)))

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["sub"]
    assert step.status is StepStatus.FAILED
    assert step.error is not None and "output.total: -5 is less than the minimum of 0" \
        in step.error["message"]
    assert run.steps["sub"].output is not None
    child_id = (run.steps["sub"].output or {}).get("subWorkflowId")
    assert get_store().get_status(str(child_id)) == RunStatus.FAILED


def test_a_started_workflow_input_that_breaks_its_schema_fails_the_step(worker: Any) -> None:
    start = {"name": "start", "taskReferenceName": "start", "type": "START_WORKFLOW",
             "inputParameters": {"startWorkflow": {"name": "schemas_child", "input": {}}}}
    register_workflow(child())

    run = submit_workflow(wf(start))

    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.steps["start"].status is StepStatus.FAILED_WITH_TERMINAL_ERROR
