"""Tests of the Conductor definition models: real definitions load, malformed ones do not."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.dsl.model import TASK_TYPES, SubWorkflowParams, TaskDef, WorkflowDef, WorkflowTask

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared/conformance/conductor"
CONFORMANCE_FILES = sorted(CONFORMANCE.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        data: dict[str, Any] = json.load(f)
    return data


def minimal(**task: Any) -> dict[str, Any]:
    """A one-task workflow; keyword arguments are merged into the task."""
    return {
        "name": "wf",
        "schemaVersion": 2,
        "tasks": [{"name": "t", "taskReferenceName": "t_ref", "type": "SIMPLE", **task}],
    }


def errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        WorkflowDef.model_validate(data)
    return [dict(e) for e in info.value.errors()]


def test_conformance_files_are_present() -> None:
    assert len(CONFORMANCE_FILES) >= 20


@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=lambda p: p.stem)
def test_conformance_file_validates(path: Path) -> None:
    definition = WorkflowDef.model_validate(load(path))
    assert definition.schema_version == 2
    assert definition.tasks
    assert all(t.type in TASK_TYPES for t in definition.tasks)


@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=lambda p: p.stem)
def test_conformance_file_round_trips(path: Path) -> None:
    data = load(path)
    assert WorkflowDef.model_validate(data).to_json_dict() == data


def test_inline_sub_workflow_is_a_workflow_def() -> None:
    data = load(CONFORMANCE / "simple_workflow_with_sub_workflow_inline_def_integration_test.json")
    definition = WorkflowDef.model_validate(data)
    subs = [t for t in definition.tasks if t.type == "SUB_WORKFLOW"]
    assert subs and subs[0].sub_workflow_param is not None
    inline = subs[0].sub_workflow_param.workflow_definition
    assert isinstance(inline, WorkflowDef)
    assert inline.name == "one_task_workflow"


def test_sub_workflow_definition_may_be_an_expression() -> None:
    param = {"name": "child", "workflowDefinition": "${workflow.input.childDef}"}
    definition = WorkflowDef.model_validate(minimal(type="SUB_WORKFLOW", subWorkflowParam=param))
    sub = definition.tasks[0].sub_workflow_param
    assert sub is not None and sub.workflow_definition == "${workflow.input.childDef}"


@pytest.mark.parametrize("value", ["not an expression", 5, ["x"]])
def test_sub_workflow_definition_rejects_other_values(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        SubWorkflowParams.model_validate({"workflowDefinition": value})
    assert info.value.errors()[0]["loc"][0] == "workflowDefinition"


def test_inline_sub_workflow_errors_are_located() -> None:
    inline = {"name": "child", "tasks": [{"name": "c", "taskReferenceName": "c", "optional": 1}]}
    param = {"workflowDefinition": inline}
    (err,) = errors(minimal(type="SUB_WORKFLOW", subWorkflowParam=param))
    loc = err["loc"]
    assert loc[:4] == ("tasks", 0, "subWorkflowParam", "workflowDefinition")
    assert loc[-3:] == ("tasks", 0, "optional")


def test_defaults() -> None:
    data = minimal()
    del data["tasks"][0]["type"]
    del data["schemaVersion"]
    definition = WorkflowDef.model_validate(data)
    task = definition.tasks[0]
    assert definition.version == 1
    assert definition.schema_version == 2
    assert task.type == "SIMPLE"
    assert task.input_parameters == {}
    assert task.optional is False
    assert task.children() == []
    assert definition.to_json_dict() == data


def test_python_names_are_accepted_too() -> None:
    task = WorkflowTask.model_validate({"name": "t", "task_reference_name": "r"})
    assert task.task_reference_name == "r"


def test_unknown_field_is_rejected_with_its_location() -> None:
    data = minimal(retryCont=1)
    (err,) = errors(data)
    assert err["type"] == "extra_forbidden"
    assert err["loc"] == ("tasks", 0, "retryCont")


def test_unknown_field_in_nested_object_is_rejected() -> None:
    data = minimal(taskDefinition={"name": "t", "retryCount": 1, "retries": 2})
    (err,) = errors(data)
    assert err["loc"] == ("tasks", 0, "taskDefinition", "retries")


def test_unknown_top_level_field_is_rejected() -> None:
    data = minimal()
    data["timeout"] = 5
    (err,) = errors(data)
    assert err["loc"] == ("timeout",)


@pytest.mark.parametrize(
    ("fields", "loc_tail"),
    [
        ({"optional": "true"}, ("optional",)),
        ({"permissive": 1}, ("permissive",)),
        ({"asyncComplete": "false"}, ("asyncComplete",)),
        ({"startDelay": "1"}, ("startDelay",)),
        ({"retryCount": "1"}, ("retryCount",)),
        ({"startDelay": 1.5}, ("startDelay",)),
        ({"name": 5}, ("name",)),
        ({"taskReferenceName": 5}, ("taskReferenceName",)),
        ({"type": 1}, ("type",)),
        ({"inputParameters": ["a"]}, ("inputParameters",)),
        ({"joinOn": "a"}, ("joinOn",)),
        ({"joinOn": [1]}, ("joinOn", 0)),
        ({"forkTasks": [{"name": "a", "taskReferenceName": "a"}]}, ("forkTasks", 0)),
        ({"decisionCases": {"a": {"name": "a", "taskReferenceName": "a"}}}, ("decisionCases", "a")),
        ({"defaultCase": {"name": "a", "taskReferenceName": "a"}}, ("defaultCase",)),
        ({"loopOver": "a"}, ("loopOver",)),
        ({"loopOver": [{"name": "a"}]}, ("loopOver", 0, "taskReferenceName")),
        ({"joinMode": "sync"}, ("joinMode",)),
    ],
)
def test_wrong_task_field_types_are_rejected(
    fields: dict[str, Any], loc_tail: tuple[Any, ...]
) -> None:
    errs = errors(minimal(**fields))
    assert any(e["loc"][2:] == loc_tail for e in errs), errs


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 5),
        ("version", "1"),
        ("version", True),
        ("schemaVersion", "2"),
        ("tasks", {"name": "t"}),
        ("inputParameters", {"a": 1}),
        ("outputParameters", ["a"]),
        ("restartable", "yes"),
        ("timeoutPolicy", "RETRY"),
        ("timeoutSeconds", "10"),
    ],
)
def test_wrong_workflow_field_types_are_rejected(field: str, value: Any) -> None:
    data = minimal()
    data[field] = value
    errs = errors(data)
    assert any(e["loc"][0] == field for e in errs), errs


def test_task_def_fields_are_typed() -> None:
    with pytest.raises(ValidationError) as info:
        TaskDef.model_validate({"name": "t", "retryLogic": "NONE", "responseTimeoutSeconds": 0})
    assert {e["loc"][0] for e in info.value.errors()} == {"retryLogic", "responseTimeoutSeconds"}


def test_unknown_type_suggests_the_closest() -> None:
    (err,) = errors(minimal(type="SIMPL"))
    assert err["loc"] == ("tasks", 0, "type")
    assert err["msg"] == "unknown task type 'SIMPL' (did you mean 'SIMPLE'?)"


def test_lower_case_type_is_rejected_with_hint() -> None:
    (err,) = errors(minimal(type="fork_join"))
    assert err["msg"] == "unknown task type 'fork_join' (did you mean 'FORK_JOIN'?)"


def test_unrelated_type_lists_the_allowed_ones() -> None:
    (err,) = errors(minimal(type="QQQ"))
    assert err["msg"].startswith("unknown task type 'QQQ' (expected one of ")
    assert "SIMPLE" in err["msg"] and "LLM_CHAT_COMPLETE" in err["msg"]


def test_task_types_cover_conductor() -> None:
    assert len(TASK_TYPES) == 36
    assert {"SIMPLE", "DO_WHILE", "NOOP", "LLM_TEXT_COMPLETE", "CALL_MCP_TOOL"} <= TASK_TYPES


def test_schema_version_1_is_rejected() -> None:
    data = minimal()
    data["schemaVersion"] = 1
    (err,) = errors(data)
    assert err["loc"] == ("schemaVersion",)
    assert err["msg"] == "only schemaVersion 2 is supported"


def test_tasks_are_required_and_non_empty() -> None:
    data = minimal()
    data["tasks"] = []
    (err,) = errors(data)
    assert err["msg"] == "a workflow needs at least one task"
    del data["tasks"]
    (err,) = errors(data)
    assert err["loc"] == ("tasks",) and err["type"] == "missing"


@pytest.mark.parametrize("field", ["name", "taskReferenceName"])
def test_task_names_are_required_and_non_empty(field: str) -> None:
    data = minimal()
    data["tasks"][0][field] = ""
    (err,) = errors(data)
    assert err["loc"] == ("tasks", 0, field)
    del data["tasks"][0][field]
    (err,) = errors(data)
    assert err["type"] == "missing"


def test_workflow_name_is_required_and_non_empty() -> None:
    data = minimal()
    data["name"] = ""
    assert errors(data)[0]["loc"] == ("name",)
    del data["name"]
    assert errors(data)[0]["type"] == "missing"


def test_no_cross_task_checks() -> None:
    # Duplicate refs and a JOIN without a fork are the validator's business, not the model's.
    data = minimal()
    data["tasks"].append(copy.deepcopy(data["tasks"][0]))
    data["tasks"].append({"name": "j", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["x"]})
    assert len(WorkflowDef.model_validate(data).tasks) == 3


def task(ref: str) -> dict[str, Any]:
    return {"name": ref, "taskReferenceName": ref}


def test_children_paths() -> None:
    parsed = WorkflowTask.model_validate(
        {
            **task("op"),
            "type": "SWITCH",
            "forkTasks": [[task("f0")], [], [task("f2a"), task("f2b")]],
            "decisionCases": {"caseA": [task("a")], "empty": []},
            "defaultCase": [task("d")],
            "loopOver": [task("l")],
        }
    )
    got = [(path, [t.task_reference_name for t in ts]) for path, ts in parsed.children()]
    assert got == [
        ("forkTasks[0]", ["f0"]),
        ("forkTasks[2]", ["f2a", "f2b"]),
        ("decisionCases.caseA", ["a"]),
        ("defaultCase", ["d"]),
        ("loopOver", ["l"]),
    ]


def test_children_of_a_conformance_fork() -> None:
    definition = WorkflowDef.model_validate(load(CONFORMANCE / "fork_join_integration_test.json"))
    fork = next(t for t in definition.tasks if t.type == "FORK_JOIN")
    paths = [path for path, _ in fork.children()]
    assert paths == [f"forkTasks[{i}]" for i in range(len(fork.fork_tasks))]


def test_to_json_dict_keeps_only_given_fields() -> None:
    data = minimal(optional=True, items="${workflow.input.list}", onStateChange={})
    data["rateLimitConfig"] = {"rateLimitKey": "k", "concurrentExecLimit": 2}
    dumped = WorkflowDef.model_validate(data).to_json_dict()
    assert dumped == data
    assert "joinOn" not in dumped["tasks"][0]
