"""Very large definitions: reading, checking and planning cost time in proportion to their
tasks, and a plan too heavy for the cache is not built again while it is in use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from app import registry
from app.compiler.plan import build_plan, step_spec
from app.config import get_settings
from app.dsl.validate import check_definition, parse_definition
from app.loader import ensure_loaded
from app.runtime.state import plans
from bench.big_definition import chain, forks
from tests.support import scaled

TASKS = 20_000


@pytest.fixture
def many_tasks(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BATON_MAX_DEFINITION_TASKS", str(TASKS))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _prepared(data: dict[str, Any]) -> float:
    """Seconds to read, check and plan the definition."""
    ensure_loaded()
    transformations = registry.transformations()
    started = time.perf_counter()
    definition = parse_definition(data, transformations)
    assert check_definition(definition, transformations) == []
    build_plan(definition, transformations, validated=True)
    return time.perf_counter() - started


# On the idle development machine both take about 0.8 s; checking each task against a copy
# of every ref before it (as scopes once did) took 5 s for the chain and 15 s for the forks.
@pytest.mark.parametrize("shape", [chain, forks], ids=["chain", "forks"])
def test_a_definition_of_20000_tasks_is_read_checked_and_planned_in_linear_time(
    many_tasks: None, shape: Callable[[int], dict[str, Any]]
) -> None:
    seconds = _prepared(shape(TASKS))
    assert seconds < scaled(3.0), f"{seconds:.2f} s for {TASKS} tasks"


def test_a_plans_step_specs_are_built_when_first_asked_for_and_equal_built_ones() -> None:
    definition = parse_definition(forks(8))
    plan = build_plan(definition)
    assert list(plan.steps) == ["f0", "j0", "l0", "r0", "f1", "j1", "l1", "r1"]
    join = plan.steps["j1"]
    assert join is plan.steps["j1"]  # built once
    assert join == step_spec(definition.tasks[3], fork_ref="f1")
    assert join.reads == ("l1", "r1", "f1")
    assert "nope" not in plan.steps


def test_a_plan_over_the_caches_budget_is_found_while_it_is_held(many_tasks: None) -> None:
    plan = build_plan(parse_definition(chain(TASKS)))
    weight = get_settings().plan_cache_mib * 1024 * 1024 + 1
    plans.put(plan, weight)  # too heavy to keep
    # the store has no such definition: found only because something still holds the plan
    assert plans.get(plan.digest) is plan
