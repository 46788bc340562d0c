"""A step's input is checked against its transformation's signature before it runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import pytest

from app import RunStatus, StepStatus, submit_workflow
from app.errors import WorkflowFailed
from app.runtime.step_input import InvalidStepInput, input_checker

ROOT = Path(__file__).resolve().parents[1]
SEED = str(ROOT / "workflows" / "encode_and_deploy.json")


def typed(
    name: str, count: int, ratio: float, flag: bool, data: dict[str, Any], items: list[int],
    maybe: str | None = None, old: Optional[int] = 3, either: int | str = 0,  # noqa: UP045
    anything: Any = None, free=None,  # noqa: ANN001
) -> None: ...


GOOD = {"name": "n", "count": 1, "ratio": 1, "flag": False, "data": {}, "items": []}


def problem(**given: Any) -> str:
    with pytest.raises(InvalidStepInput) as raised:
        input_checker(typed)({**GOOD, **given})
    return str(raised.value)


def test_a_fitting_input_passes() -> None:
    check = input_checker(typed)
    check(GOOD)
    check({**GOOD, "ratio": 0.5, "maybe": None, "old": None, "either": "x", "anything": [1],
           "free": object()})


def test_a_missing_or_null_required_parameter_is_named_with_its_type() -> None:
    assert problem(name=None) == "name: required str, got null"
    given = dict(GOOD)
    del given["count"]
    with pytest.raises(InvalidStepInput, match=r"^count: required int, missing$"):
        input_checker(typed)(given)


def test_simple_type_mismatches_are_named_in_json_terms() -> None:
    assert problem(count="3") == "count: required int, got string"
    assert problem(count=True) == "count: required int, got boolean"
    assert problem(ratio="x") == "ratio: required float, got string"
    assert problem(flag=1) == "flag: required bool, got integer"
    assert problem(data=[]) == "data: required dict[str, typing.Any], got array" \
        .replace("typing.", "")
    assert problem(items={}) == "items: required list[int], got object"


def test_optional_and_union_parameters_take_each_member() -> None:
    assert problem(maybe=1) == "maybe: str | None, got integer"
    assert problem(old="x") == "old: int | None, got string"
    assert problem(either=None) == "either: int | str, got null"


def test_every_problem_is_reported_at_once() -> None:
    assert problem(name=None, count=None) == (
        "name: required str, got null; count: required int, got null")


def test_a_function_taking_any_keywords_is_checked_on_its_named_parameters() -> None:
    def loose(key: str, **values: Any) -> None: ...

    input_checker(loose)({"key": "k", "other": None})
    with pytest.raises(InvalidStepInput, match="key: required str, missing"):
        input_checker(loose)({"other": 1})


def test_checking_a_step_costs_microseconds() -> None:
    check = input_checker(typed)
    given = {**GOOD, "maybe": "m", "either": 1}
    rounds = 10_000
    started = time.perf_counter()
    for _ in range(rounds):
        check(given)
    each = (time.perf_counter() - started) / rounds
    assert each < 50e-6, f"{each * 1e6:.1f} us a check"


# -- on a real worker ----------------------------------------------------------------------


def test_a_misspelled_workflow_input_fails_the_step_naming_the_parameter(worker: Any) -> None:
    run = submit_workflow(SEED, {"fileLoc": "s3://in/movie.mov"})

    with pytest.raises(WorkflowFailed) as failed:
        run.result(timeout=30)

    assert failed.value.status == RunStatus.FAILED.value
    assert failed.value.step_ref == "encode"
    error = failed.value.error or {}
    assert (error.get("type"), error.get("message")) == (
        "InvalidStepInput", "fileLocation: required str, got null")
    step = run.steps["encode"]
    assert step.status is StepStatus.FAILED_WITH_TERMINAL_ERROR
    assert step.input == {"fileLocation": None}
    assert "AttributeError" not in (error.get("traceback") or "")


def test_a_step_with_invalid_input_is_not_retried(worker: Any) -> None:
    definition = {"name": "typed_retry", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "doomed", "taskReferenceName": "d", "type": "SIMPLE",
         "inputParameters": {"key": "${workflow.input.key}"}}]}

    run = submit_workflow(definition, {"key": 7})

    assert run.wait(timeout=30) is RunStatus.FAILED
    step = run.steps["d"]
    assert (step.status, step.attempts) == (StepStatus.FAILED_WITH_TERMINAL_ERROR, 1)
    assert step.error is not None and step.error["message"] == "key: required str, got integer"
