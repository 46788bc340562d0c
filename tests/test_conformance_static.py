"""Conductor's own test definitions, checked statically: they validate, and they compile or not.

Level 1: every file loads and validates (no transformation names checked): these are
definitions Conductor runs, so a problem found here is a validator bug.
Level 2: `build_plan` and `compile_route` build the Celery canvas for files that use only
what Baton runs today; for the others, build_plan names every unsupported task. The table
below records the outcome per file, so any change in what compiles shows up here.
No Redis is contacted: building signatures makes no connection.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import pytest
from celery.canvas import Signature

from app.compiler.canvas import compile_route
from app.compiler.plan import build_plan
from app.dsl.load import load_definition
from app.dsl.validate import check_definition
from app.errors import DefinitionError

CONFORMANCE: Final = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "conductor"

if not CONFORMANCE.is_dir():
    if os.environ.get("CI"):
        pytest.fail(f"conformance folder {CONFORMANCE} is missing", pytrace=False)
    pytest.skip(f"no conformance folder at {CONFORMANCE}", allow_module_level=True)

FILES: Final = sorted(CONFORMANCE.glob("*.json"))

COMPILES: Final = "compiles"

# File -> "compiles", or the types build_plan reports as unsupported. Tasks nested inside an
# unsupported operator (a DECISION's cases, a DO_WHILE's body) are not reached by the plan
# builder, so only the outermost unsupported types are listed.
EXPECTED: Final[dict[str, str | frozenset[str]]] = {
    "25-a2a-server-multi-turn.json": COMPILES,
    "concurrency_check_wait30.json": COMPILES,
    "do_while_integration_test.json": COMPILES,
    "do_while_set_variable_fix.json": COMPILES,
    "do_while_with_decision_task.json": COMPILES,
    "dyn_fork_test.json": COMPILES,
    "dynamic_fork_join_integration_test.json": COMPILES,
    "event_workflow_integration_test.json": COMPILES,
    "exclusive_join_integration_test.json": COMPILES,
    "fork_join_integration_test.json": COMPILES,
    "fork_join_permissive_integration_test.json": COMPILES,
    "kitchensink.json": COMPILES,
    "sequential_json_jq_transform_integration_test.json": COMPILES,
    "set_variable_workflow_integration_test.json": COMPILES,
    "simple_decision_task_integration_test.json": COMPILES,
    "simple_one_task_sub_workflow_integration_test.json": COMPILES,
    "simple_switch_task_integration_test.json": COMPILES,
    "simple_wait_task_workflow_integration_test.json": COMPILES,
    "simple_workflow_1_input_template_integration_test.json": COMPILES,
    "simple_workflow_1_integration_test.json": COMPILES,
    "simple_workflow_with_optional_task_integration_test.json": COMPILES,
    "simple_workflow_with_permissive_task_integration_test.json": COMPILES,
    "simple_workflow_with_resp_time_out_integration_test.json": COMPILES,
    "simple_workflow_with_sub_workflow_inline_def_integration_test.json": COMPILES,
    "switch_and_terminate_integration_test.json": COMPILES,
    "terminate_task_completed_workflow_integration_test.json": COMPILES,
    "terminate_task_terminated_status_in_do_while_test.json": COMPILES,
    "workflow.json": COMPILES,
    "workflow_that_starts_another_workflow.json": COMPILES,
    "workflow_with_sub_workflow_1_integration_test.json": COMPILES,
}

UNSUPPORTED_SUFFIX: Final = " is not supported yet"


def test_every_file_has_an_expected_outcome() -> None:
    # A file added to or removed from the folder must be added to or removed from the table.
    assert sorted(path.name for path in FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_level_1_every_file_loads_and_validates(path: Path) -> None:
    # Given one of Conductor's own definitions, When it is loaded and validated,
    # Then no problem is found (a DefinitionError here names the validator's mistake).
    definition = load_definition(path)

    check_definition(definition, transformations=None)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_level_2_compiles_or_names_every_unsupported_type(path: Path) -> None:
    # Given a definition that validates
    definition = load_definition(path)
    expected = EXPECTED[path.name]

    if expected == COMPILES:
        # When it only uses what Baton runs, Then it compiles to a canvas
        plan = build_plan(definition, transformations=None)
        route = compile_route(plan, "run-id", 32)
        assert isinstance(route, Signature)
        return

    # When it uses a type Baton does not run yet, Then build_plan refuses it and every
    # problem says which type is unsupported
    with pytest.raises(DefinitionError) as caught:
        build_plan(definition, transformations=None)
    messages = [problem.message for problem in caught.value.problems]
    assert all(m.startswith("type ") and m.endswith(UNSUPPORTED_SUFFIX) for m in messages), messages
    reported = frozenset(m.removeprefix("type ").removesuffix(UNSUPPORTED_SUFFIX) for m in messages)
    assert reported == expected
