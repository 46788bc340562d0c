"""User data given to a run is checked before anything is written: the input at submit,
rerun and child-run creation, the output given to complete_step, a cancel reason.

Refusals are InvalidInput (or PayloadTooLarge) naming the path, never a raw
RecursionError, ValueError or TypeError, and leave Redis as it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app import InvalidInput, RunStatus, WorkflowRun, submit_workflow
from app.cli import main
from app.config import get_settings
from app.errors import DefinitionError
from app.payloads import InvalidPayload, PayloadTooLarge
from app.runtime.state import get_store
from tests.support import RedisServer, wait_for

SEED = str(Path(__file__).resolve().parents[1] / "workflows" / "encode_and_deploy.json")


def baton_keys() -> set[str]:
    return set(get_store().client.keys("baton:*"))


def nested(depth: int, leaf: Any = 1) -> Any:
    """A value whose deepest container is `depth` levels below it ({"a": {"a": ... leaf}})."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"x": 1}
    loop["self"] = {"again": loop}
    return loop


def wf(*tasks: dict[str, Any], name: str = "guarded") -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def echo(ref: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": inputs}


HUMAN = {"name": "approve", "taskReferenceName": "h", "type": "HUMAN"}

# (value, the start of the message): every way a value can fail to be JSON data
NOT_JSON: list[tuple[Any, str]] = [
    ({"deep": nested(10_000)}, "input.deep.a.a.a"),
    ({"x": float("nan")}, "input.x: nan is not a JSON number"),
    ({"x": [1, float("inf")]}, "input.x[1]: inf is not a JSON number"),
    ({"tags": {"a", "b"}}, "input.tags: a set is not JSON data"),
    ({"loop": cyclic()}, "input.loop.self.again: refers to itself (a cycle)"),
    ({"m": {1: "one"}}, "input.m: key 1 is not a string"),
]


@pytest.mark.parametrize(("given", "message"), NOT_JSON)
def test_input_that_is_not_json_data_is_refused_at_submit(
    redis_server: RedisServer, given: dict[str, Any], message: str
) -> None:
    before = baton_keys()

    with pytest.raises(InvalidInput) as refused:
        submit_workflow(SEED, input=given)

    assert str(refused.value).startswith(message)
    assert isinstance(refused.value, InvalidPayload)
    assert baton_keys() == before


def test_input_nested_too_deeply_names_the_path_and_the_limit(redis_server: RedisServer) -> None:
    limit = get_settings().max_json_depth

    with pytest.raises(InvalidInput) as refused:
        submit_workflow(SEED, input={"deep": nested(10_000)})

    path = "input" + ".deep" + ".a" * (limit - 1)
    assert str(refused.value) == f"{path[:40]}...{path[-40:]}: nested more than {limit} deep"
    submit_workflow(SEED, input={"deep": nested(limit - 1)}).cancel()  # the limit itself is fine


def test_input_over_the_size_limit_is_refused_at_submit(redis_server: RedisServer) -> None:
    before = baton_keys()

    with pytest.raises(PayloadTooLarge) as refused:
        submit_workflow(SEED, input={"blob": "x" * 50_000_000})

    # counted before it is serialised: so far over the limit, a lower bound is enough
    assert str(refused.value) == "input: at least 47.7 MiB, over the limit of 4.0 MiB"
    assert baton_keys() == before


def test_the_input_template_counts_towards_the_input(redis_server: RedisServer) -> None:
    definition = {**wf(echo("e")), "inputTemplate": {"pad": "x" * 3_000_000}}

    with pytest.raises(PayloadTooLarge, match=r"^input: 4\.8 MiB is over the limit"):
        submit_workflow(definition, input={"more": "y" * 2_000_000})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "[" * 10_000 + "]" * 10_000], "baton: --input: nested too deeply to parse"),
        (["-i", "deep=" + "[" * 10_000 + "]" * 10_000], "baton: -i deep: nested too deeply"),
        (["--input", json.dumps({"deep": nested(500)})],
         "baton: input.deep.a.a.a.a"),
        (["--input", '{"x": NaN}'], "baton: input.x: nan is not a JSON number"),
    ],
)
def test_cli_submit_refuses_bad_input_in_one_line(
    redis_server: RedisServer, args: list[str], message: str
) -> None:
    before = baton_keys()

    result = CliRunner().invoke(main, ["submit", SEED, *args])

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert result.stderr.startswith(message)
    assert baton_keys() == before


def test_a_child_run_whose_input_nests_too_deeply_fails_its_step(worker: Any) -> None:
    # Given a parent input at the depth limit, When a SUB_WORKFLOW nests it one level
    # deeper in the child's input, Then the SUB_WORKFLOW step fails with the path and
    # no child run is recorded.
    limit = get_settings().max_json_depth
    child = wf(echo("inner", v="${workflow.input.v}"), name="deep_child")
    sub = {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
           "inputParameters": {"v": {"more": "${workflow.input.v}"}},
           "subWorkflowParam": {"name": "deep_child", "workflowDefinition": child}}
    run = submit_workflow(wf(sub, name="deep_parent"), {"v": nested(limit - 1)})

    assert run.wait(timeout=30) is RunStatus.FAILED
    error = run.steps["sub"].error or {}
    assert "input.v.more.a.a" in str(error)
    assert f"nested more than {limit} deep" in str(error)
    assert "subWorkflowId" not in (run.steps["sub"].output or {})


def test_rerun_with_input_that_is_not_json_data_writes_nothing(worker: Any) -> None:
    run = submit_workflow(wf(echo("e", v="${workflow.input.v}")), {"v": 1})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    record = run.record()

    for given, message in [({"v": float("nan")}, "input.v: nan is not a JSON number"),
                           ({"v": nested(10_000)}, "input.v.a.a"),
                           ({"v": "x" * 5_000_000}, "input: 4.8 MiB is over the limit")]:
        with pytest.raises(InvalidPayload) as refused:
            run.rerun("e", input=given)
        assert str(refused.value).startswith(message)

    assert run.record() == record


def waiting(run: WorkflowRun, ref: str) -> bool:
    """The step is parked, waiting to be completed (its record is written in full)."""
    step = run.steps.get(ref)
    return step is not None and step.status.value == "IN_PROGRESS" and step.output is not None


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (float("nan"), "output: must be a JSON object, not float"),
        ([1, 2], "output: must be a JSON object, not list"),
        ({"a", "b"}, "output: must be a JSON object, not set"),
        ("done", "output: must be a JSON object, not str"),
        ({"x": float("nan")}, "output.x: nan is not a JSON number"),
        ({"x": {1, 2}}, "output.x: a set is not JSON data"),
        ({"x": object()}, "output.x: an object is not JSON data"),
        ({"loop": cyclic()}, "output.loop.self.again: refers to itself (a cycle)"),
        ({"deep": nested(10_000)}, "output.deep.a.a.a"),
        ({"blob": "x" * 5_000_000}, "output: 4.8 MiB is over the limit of 4.0 MiB"),
    ],
)
def test_complete_step_refuses_output_that_is_not_a_json_object(
    worker: Any, output: Any, message: str
) -> None:
    # Given a HUMAN step waiting, When it is completed with something that is not a JSON
    # object of JSON data, Then InvalidPayload says what and where, the step still waits,
    # and a good output completes it afterwards.
    run = submit_workflow(wf(HUMAN, echo("after", ok="${h.output.ok}")))
    wait_for(lambda: waiting(run, "h"), timeout=30, what="the HUMAN step to wait")
    step = run.steps["h"]

    with pytest.raises(InvalidPayload) as refused:
        run.complete_step("h", output)

    assert str(refused.value).startswith(message)
    assert isinstance(refused.value, PayloadTooLarge | InvalidInput)
    assert run.steps["h"] == step
    run.complete_step("h", {"ok": True})
    assert run.result(timeout=30) == {"ok": True}


def test_cli_complete_refuses_bad_output_in_one_line(worker: Any) -> None:
    run = submit_workflow(wf(HUMAN, echo("after", ok="${h.output.ok}")))
    wait_for(lambda: waiting(run, "h"), timeout=30, what="the HUMAN step to wait")

    for output, message in [
        ("[" * 10_000 + "]" * 10_000, "baton: --output: nested too deeply to parse"),
        (json.dumps({"deep": nested(500)}), "baton: output.deep.a.a"),
        ('{"x": NaN}', "baton: output.x: nan is not a JSON number"),
    ]:
        result = CliRunner().invoke(main, ["complete", run.id, "h", "--output", output])
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(message)

    assert run.status is RunStatus.RUNNING
    run.complete_step("h", {"ok": 1})
    assert run.result(timeout=30) == {"ok": 1}


def test_cancel_reason_must_be_a_short_string(worker: Any) -> None:
    run = submit_workflow(wf(HUMAN))
    wait_for(lambda: waiting(run, "h"), timeout=30, what="the HUMAN step to wait")

    with pytest.raises(InvalidInput, match="^reason: must be a string, not dict"):
        run.cancel({"why": "x"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="^reason: 50000 characters, over the limit of 4096"):
        run.cancel("x" * 50_000)

    assert run.status is RunStatus.RUNNING
    run.cancel("duplicate")
    assert run.record()["reasonForIncompletion"] == "duplicate"


def test_a_catastrophic_regex_built_from_the_input_does_not_hold_the_worker(
    worker: Any,
) -> None:
    # The path `items[?(@.n =~ /(a+)+b/)]` comes with the input; a backtracking engine
    # would take ~2**40 steps on forty `a`s, RE2 a few microseconds.
    q = "items[?(@.n =~ /(a+)+b/)]"
    run = submit_workflow(wf(echo("e", found="${workflow.input.${workflow.input.q}}")),
                          {"q": q, "items": [{"n": "a" * 40}, {"n": "ab"}]})

    assert run.result(timeout=30) == {"found": [{"n": "ab"}]}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"correlation_id": {"order": 7}}, "correlationId: must be a string, not dict"),
        ({"idempotency_key": 7}, "idempotencyKey: must be a string, not int"),
        ({"correlation_id": "x" * 5000}, "correlationId: 5000 characters, over the limit of 4096"),
    ],
)
def test_run_labels_must_be_short_strings(
    redis_server: RedisServer, options: dict[str, Any], message: str
) -> None:
    before = baton_keys()

    with pytest.raises(InvalidInput) as refused:
        submit_workflow(SEED, input={}, **options)

    assert str(refused.value) == message
    assert baton_keys() == before


SEED_DEFINITION = json.loads(Path(SEED).read_text())


@pytest.mark.parametrize("source", [
    {**SEED_DEFINITION, "variables": nested(10_000)},
    json.dumps(SEED_DEFINITION)[:-1] + ', "variables": ' + "[" * 10_000 + "]" * 10_000 + "}",
    "name: deep\nvariables: " + "[" * 10_000 + "]" * 10_000,
    {**SEED_DEFINITION, "inputTemplate": {"x": math.nan}},
], ids=["deep dict", "deep JSON text", "deep YAML text", "NaN"])
def test_a_definition_too_deep_or_not_json_is_refused_with_its_path(
    redis_server: RedisServer, source: Any
) -> None:
    before = baton_keys()
    with pytest.raises(DefinitionError) as refused:
        submit_workflow(source)
    assert "Traceback" not in str(refused.value)
    assert str(refused.value).startswith(("variables", "definition:", "inputTemplate.x"))
    assert baton_keys() == before
