"""Fields Baton accepts but does not carry out: refused when set, accepted when off.

Also checks that docs/conductor-fields.md has a row for every field of every model, so the
table cannot fall behind the models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from app.dsl import model
from app.dsl.validate import check_definition, parse_definition
from app.errors import DefinitionError

DOC = Path(__file__).resolve().parents[1] / "docs" / "conductor-fields.md"


def task(**fields: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": "t", **fields}


def workflow(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "tasks": list(tasks) or [task()], **fields}


def problems(data: dict[str, Any]) -> list[str]:
    try:
        check_definition(parse_definition(data))
    except DefinitionError as exc:
        return [f"{p.path}: {p.message}" for p in exc.problems]
    return []


def task_def(**fields: Any) -> dict[str, Any]:
    return task(taskDefinition={"name": "echo", **fields})


SUB = {"type": "SUB_WORKFLOW"}

REFUSED = [
    # a schema kept in a registry (no inline data), or not JSON Schema
    (workflow(inputSchema={"name": "s", "type": "JSON"}), "inputSchema"),
    (workflow(outputSchema={"name": "s", "type": "JSON"}, enforceSchema=True), "outputSchema"),
    (workflow(outputSchema={"name": "s", "type": "AVRO", "data": {}}), "outputSchema.type"),
    (workflow(task(asyncComplete=True)), "tasks[0].asyncComplete"),
    (workflow(task(type="WAIT", cacheConfig={"key": "k", "ttlInSecond": 5})),
     "tasks[0].cacheConfig"),
    (workflow(task(type="FORK_JOIN_DYNAMIC", dynamicForkJoinTasksParam="x",
                   dynamicForkTasksParam="d", dynamicForkTasksInputParamName="i"),
              {"name": "join", "taskReferenceName": "j", "type": "JOIN"}),
     "tasks[0].dynamicForkJoinTasksParam"),
    (workflow(task(type="HUMAN", optional=True, taskDefinition={
        "name": "h", "timeoutSeconds": 60, "timeoutPolicy": "RETRY"})),
     "tasks[0].taskDefinition.timeoutPolicy"),
    (workflow(task(taskDefinition={"name": "w", "timeoutSeconds": 9, "timeoutPolicy": "RETRY"},
                   subWorkflowParam={"name": "w"}, **SUB)),
     "tasks[0].taskDefinition.timeoutPolicy"),
    (workflow(task(type="FORK_JOIN", forkTasks=[[task(taskReferenceName="a")]]),
              {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["a"],
               "optional": True, "taskDefinition": {"name": "j", "timeoutSeconds": 5,
                                                    "timeoutPolicy": "RETRY"}}),
     "tasks[1].taskDefinition.timeoutPolicy"),
    # flow limits hold transformations' steps only
    (workflow(task(type="WAIT", taskDefinition={"name": "w", "rateLimitPerFrequency": 10})),
     "tasks[0].taskDefinition.rateLimitPerFrequency"),
    (workflow(task(type="HTTP", inputParameters={"http_request": {"uri": "http://x"}},
                   taskDefinition={"name": "h", "concurrentExecLimit": 2})),
     "tasks[0].taskDefinition.concurrentExecLimit"),
    (workflow(task_def(pollTimeoutSeconds=30, timeoutPolicy="ALERT_ONLY")),
     "tasks[0].taskDefinition.pollTimeoutSeconds"),
    (workflow(task_def(totalTimeoutSeconds=30, timeoutPolicy="ALERT_ONLY")),
     "tasks[0].taskDefinition.totalTimeoutSeconds"),
    (workflow(task(optional=True, taskDefinition={"name": "echo", "pollTimeoutSeconds": 3,
                                                  "timeoutPolicy": "RETRY"})),
     "tasks[0].taskDefinition.pollTimeoutSeconds"),
    (workflow(task(type="INLINE", inputParameters={"evaluatorType": "graaljs", "expression": "1"},
                   taskDefinition={"name": "i", "isolationGroupId": "g"})),
     "tasks[0].taskDefinition.isolationGroupId"),
    (workflow(task(type="SET_VARIABLE", taskDefinition={"name": "s", "executionNameSpace": "n"})),
     "tasks[0].taskDefinition.executionNameSpace"),
    (workflow(task_def(inputSchema={"name": "s", "type": "JSON"}, enforceSchema=True)),
     "tasks[0].taskDefinition.inputSchema"),
    # nested tasks, and an inline sub-workflow's own fields, carry their full path
    (workflow(task(type="FORK_JOIN", forkTasks=[[task(taskReferenceName="a",
                                                      asyncComplete=True)]]),
              {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["a"]}),
     "tasks[0].forkTasks[0][0].asyncComplete"),
    (workflow(task(subWorkflowParam={"workflowDefinition": workflow(
        task(taskReferenceName="in", taskDefinition={"name": "echo", "pollTimeoutSeconds": 3,
                                                     "timeoutPolicy": "ALERT_ONLY"}),
        maskedFields=["x"])}, **SUB)),
     "tasks[0].subWorkflowParam.workflowDefinition.tasks[0].taskDefinition.pollTimeoutSeconds"),
]


@pytest.mark.parametrize(("data", "path"), REFUSED, ids=[p for _, p in REFUSED])
def test_unhonoured_field_is_refused_with_its_path(data: dict[str, Any], path: str) -> None:
    found = problems(data)
    assert any(p.startswith(f"{path}: ") and "not supported" in p for p in found), found


def test_message_says_what_to_do() -> None:
    found = problems(workflow(task(taskReferenceName="a"), task(taskReferenceName="b"),
                              task(taskReferenceName="w", type="WAIT",
                                   taskDefinition={"name": "w", "rateLimitPerFrequency": 3})))
    assert found == ["tasks[2].taskDefinition.rateLimitPerFrequency: not supported on a WAIT "
                     "task: flow limits hold the steps of a transformation (SIMPLE or DYNAMIC "
                     "tasks); remove it or set 0"]


def test_flow_limits_of_a_transformation_are_accepted_and_checked() -> None:
    assert problems(workflow(task_def(concurrentExecLimit=2, rateLimitPerFrequency=5,
                                      rateLimitFrequencyInSeconds=60))) == []
    assert problems(workflow(task_def(concurrentExecLimit=-1))) == [
        "tasks[0].taskDefinition.concurrentExecLimit: cannot be negative (got -1); 0 or "
        "absent means no limit"]
    assert problems(workflow(task_def(rateLimitPerFrequency=5,
                                      rateLimitFrequencyInSeconds=0))) == [
        "tasks[0].taskDefinition.rateLimitFrequencyInSeconds: must be more than 0 with "
        "rateLimitPerFrequency set (got 0); absent means 1 second, as in Conductor"]


def test_every_refusal_comes_with_the_other_problems() -> None:
    # one DefinitionError lists the validator's own problems and these together
    found = problems(workflow(task(asyncComplete=True), task()))
    assert any("duplicate taskReferenceName" in p for p in found), found
    assert any(p.startswith("tasks[0].asyncComplete: ") for p in found), found


ACCEPTED = [
    workflow(workflowStatusListenerEnabled=False, workflowStatusListenerSink="s"),
    workflow(workflowStatusListenerEnabled=True, workflowStatusListenerSink="s"),
    workflow(task(onStateChange={"onScheduled,onStart,onSuccess,onFailed": [{"type": "q"}]})),
    workflow(task(onStateChange={"onCancelled": [{"type": "q"}]})),
    workflow(task(type="WAIT", onStateChange={"onStart,onSuccess": [{"type": "q"}]})),
    workflow(enforceSchema=True),
    workflow(inputSchema={"name": "s", "type": "JSON"}, enforceSchema=False),
    workflow(inputSchema={"name": "s", "type": "JSON", "data": {"type": "object"}},
             outputSchema={"name": "s", "type": "JSON", "data": {}}),
    workflow(cacheConfig={"ttlInSecond": 0}),
    workflow(cacheConfig={"key": "${workflow.input.k}", "ttlInSecond": 60}),
    workflow(task(cacheConfig={"key": "k-${v}", "ttlInSecond": 5}, inputParameters={"v": 1})),
    workflow(maskedFields=[]),
    workflow(maskedFields=["password", "token"]),
    workflow(maskedFields=["password"], workflowStatusListenerEnabled=True),
    workflow(rateLimitConfig={"rateLimitKey": "k", "concurrentExecLimit": 4}),
    workflow(ownerEmail="a@b.c", description="d", createTime=1, updatedBy="u", metadata={"a": 1},
             inputParameters=["x"]),
    workflow(task(asyncComplete=False, onStateChange={}, rateLimited=True, joinStatus="x")),
    workflow(task(type="INLINE", retryCount=0, inputParameters={
        "evaluatorType": "graaljs", "expression": "1"})),
    workflow(task(type="INLINE", retryCount=2, inputParameters={
        "evaluatorType": "graaljs", "expression": "1"})),
    workflow(task(type="JSON_JQ_TRANSFORM", inputParameters={"queryExpression": "."},
                  taskDefinition={"name": "jq", "retryCount": 1})),
    workflow(task(type="HUMAN", retryCount=1)),
    workflow(task(retryCount=2, subWorkflowParam={"name": "w"}, **SUB)),
    workflow(task(retryCount=3, taskDefinition={"name": "echo", "retryCount": 2})),
    workflow(task(type="HTTP", retryCount=2, inputParameters={"http_request": {
        "uri": "http://localhost:1/", "method": "GET"}})),
    workflow(task_def(rateLimitPerFrequency=0, rateLimitFrequencyInSeconds=1,
                      concurrentExecLimit=0, pollTimeoutSeconds=0, totalTimeoutSeconds=0,
                      responseTimeoutSeconds=3600, isolationGroupId="", executionNameSpace="",
                      inputKeys=["a"], outputKeys=["b"], taskStatusListenerEnabled=False,
                      createdBy="me", ownerEmail="a@b.c", baseType="x")),
    workflow(task_def(timeoutSeconds=60, responseTimeoutSeconds=60)),
    workflow(task_def(timeoutSeconds=60, timeoutPolicy="TIME_OUT_WF", retryCount=1)),
    workflow(task_def(timeoutSeconds=60, timeoutPolicy="RETRY")),
    workflow(task_def(timeoutPolicy="ALERT_ONLY")),
    workflow(task_def(timeoutSeconds=10, timeoutPolicy="ALERT_ONLY")),
    workflow(task_def(pollTimeoutSeconds=30, totalTimeoutSeconds=30, responseTimeoutSeconds=10)),
    workflow(task_def(timeoutSeconds=10, responseTimeoutSeconds=5)),
    workflow(task(optional=True, taskDefinition={"name": "echo", "pollTimeoutSeconds": 3})),
    workflow(task_def(enforceSchema=True)),
    workflow(task(type="WAIT", taskDefinition={"name": "wait", "timeoutSeconds": 0})),
    workflow(task(type="WAIT", taskDefinition={"name": "wait", "timeoutSeconds": 60})),
    workflow(task(type="HUMAN", optional=True, taskDefinition={"name": "h", "timeoutSeconds": 6})),
    # a SUB_WORKFLOW, JOIN, EXCLUSIVE_JOIN or DO_WHILE times its wait out (test_wait_timeouts)
    workflow(task(taskDefinition={"name": "w", "timeoutSeconds": 9},
                  subWorkflowParam={"name": "w"}, **SUB)),
    workflow(task(type="FORK_JOIN", forkTasks=[[task(taskReferenceName="a")]]),
             {"name": "join", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["a"],
              "taskDefinition": {"name": "j", "timeoutSeconds": 5, "timeoutPolicy": "RETRY"}}),
    workflow(task(type="DO_WHILE", loopCondition="false", loopOver=[task(taskReferenceName="a")],
                  taskDefinition={"name": "loop", "timeoutSeconds": 5,
                                  "timeoutPolicy": "ALERT_ONLY"})),
    workflow(task(type="INLINE", taskDefinition={"name": "i", "timeoutSeconds": 5},
                  inputParameters={"evaluatorType": "graaljs", "expression": "1"})),
    workflow(task_def(inputSchema={"name": "s", "type": "JSON"})),
    workflow(task_def(enforceSchema=True, inputSchema={"name": "s", "type": "JSON", "data": {}})),
    workflow(task(subWorkflowParam={"name": "w", "taskToDomain": {}, "priority": 0,
                                    "idempotencyStrategy": "FAIL"}, **SUB)),
    # routing fields are honoured (tests/test_routing.py)
    workflow(task_def(isolationGroupId="g", executionNameSpace="n")),
    workflow(task(subWorkflowParam={"name": "w", "taskToDomain": {"*": "d,NO_DOMAIN"},
                                    "priority": 5}, **SUB)),
    workflow(task(subWorkflowParam={"name": "w", "taskToDomain": {"echo": "${workflow.input.d}"},
                                    "priority": "${workflow.input.p}"}, **SUB)),
]


@pytest.mark.parametrize("data", ACCEPTED)
def test_off_value_is_accepted(data: dict[str, Any]) -> None:
    assert problems(data) == []


# Every model of app.dsl.model and its heading in the doc.
MODELS: dict[str, type[BaseModel]] = {
    "WorkflowDef": model.WorkflowDef,
    "WorkflowTask": model.WorkflowTask,
    "TaskDef": model.TaskDef,
    "SubWorkflowParams": model.SubWorkflowParams,
    "RateLimitConfig": model.RateLimitConfig,
    "CacheConfig": model.CacheConfig,
    "StateChangeEvent": model.StateChangeEvent,
    "SchemaDef": model.SchemaDef,
}


def doc_tables() -> dict[str, list[str]]:
    """Heading's first word -> the field names of its table's first column."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = tables.setdefault(line[3:].split()[0], [])
        elif line.startswith("| `"):
            current += re.findall(r"`([^`]+)`", line.split("|")[1])
    return tables


def test_every_model_is_in_the_doc() -> None:
    concrete = {name for name, cls in vars(model).items() if isinstance(cls, type)
                and issubclass(cls, model.ConductorModel) and cls.model_fields
                and name not in ("ConductorModel", "Auditable")}
    assert concrete == set(MODELS)
    assert set(doc_tables()) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_doc_lists_every_field_once(name: str) -> None:
    fields = [f.alias or n for n, f in MODELS[name].model_fields.items()]
    listed = doc_tables()[name]
    assert sorted(listed) == sorted(fields)
