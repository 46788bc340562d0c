"""Very large definitions: reading, checking and planning cost time in proportion to their
tasks, a plan too heavy for the cache is not built again while it is in use, and a plan
heavy enough is kept in Redis in pieces that a worker reads one step at a time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app import registry
from app.compiler.pieces import PieceSteps
from app.compiler.plan import Plan, build_plan, step_spec
from app.config import get_settings
from app.dsl.validate import check_definition, parse_definition
from app.loader import ensure_loaded
from app.runtime.state import _PlanCache, get_store, plan_weight, plans
from app.store import RunStatus
from app.store.keys import definition_key, plan_key
from bench.big_definition import chain, forks, pool_pid, rss_kib
from tests.support import CeleryWorker, RedisServer, baton_settings, scaled

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


@pytest.fixture
def small_cache(redis_server: RedisServer) -> Iterator[None]:
    """A plan cache of 1 MiB: plans of a few hundred tasks and more are stored in pieces."""
    with baton_settings(plan_cache_mib="1", max_definition_tasks=str(TASKS)):
        yield


def _recorded(data: dict[str, Any]) -> Plan:
    """A definition's plan, recorded as a submit records it (the definition, then the plan)."""
    definition = parse_definition(data)
    plan = build_plan(definition)
    document = definition.to_json_dict()
    text = json.dumps(document, separators=(",", ":"))
    get_store().client.set(definition_key(plan.digest), text)
    plans.put(plan, plan_weight(plan, len(text)), document=document)
    return plan


def _same_specs(plan: Plan, other: Plan) -> None:
    assert list(other.steps) == list(plan.steps)
    for ref in plan.steps:
        mine, theirs = plan.steps[ref], other.steps[ref]
        # a piece's task leaves out its nested task lists: the stages hold them
        assert (theirs.ref, theirs.type, theirs.inputs, theirs.reads, theirs.join_on,
                theirs.fork_ref, theirs.policy_overrides, theirs.reads_run) == (
            mine.ref, mine.type, mine.inputs, mine.reads, mine.join_on, mine.fork_ref,
            mine.policy_overrides, mine.reads_run)


@pytest.mark.parametrize("shape", [chain, forks], ids=["chain", "forks"])
def test_a_heavy_plan_is_read_from_its_pieces_as_it_was_built(
    small_cache: None, shape: Callable[[int], dict[str, Any]]
) -> None:
    # Given a plan over a quarter of the cache's budget, recorded
    plan = _recorded(shape(400))
    # When a process that has not seen it asks for it
    found = _PlanCache().get(plan.digest)
    # Then it is assembled from the pieces, with the same stages and the same steps
    assert isinstance(found.steps, PieceSteps)
    assert found.sequences == plan.sequences and found.controls == plan.controls
    assert (found.last_ref, found.output_reads, dict(found.loop_of)) == (
        plan.last_ref, plan.output_reads, dict(plan.loop_of))
    assert found.definition.name == plan.definition.name
    _same_specs(plan, found)
    assert "nope" not in found.steps and len(found.steps) == len(plan.steps)


def test_nested_operators_are_read_from_pieces_as_they_were_built(small_cache: None) -> None:
    data = chain(300)
    loop = {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE",
            "loopCondition": "false", "loopOver": [
                {"name": "echo", "taskReferenceName": "in_loop", "type": "SIMPLE"}]}
    switch = {"name": "switch", "taskReferenceName": "sw", "type": "SWITCH",
              "evaluatorType": "value-param", "expression": "x",
              "inputParameters": {"x": "${workflow.input.x}"},
              "decisionCases": {"a": [{"name": "echo", "taskReferenceName": "in_a",
                                       "type": "SIMPLE"}]},
              "defaultCase": [loop]}
    data["tasks"][1:1] = [switch, *forks(4)["tasks"]]
    plan = _recorded(data)
    found = _PlanCache().get(plan.digest)
    assert isinstance(found.steps, PieceSteps)
    assert found.sequences == plan.sequences and found.loop_of == {"in_loop": "loop"}
    _same_specs(plan, found)


def test_pieces_that_expired_are_written_again_from_the_definition(small_cache: None) -> None:
    # Given a plan assembled from its pieces, kept by a process
    plan = _recorded(chain(400))
    cache = _PlanCache()
    found = cache.get(plan.digest)
    # When its pieces expire (a run idle past the retention) before a step is read
    get_store().client.delete(plan_key(plan.digest), f"{plan_key(plan.digest)}:tasks")
    # Then the step is read after the pieces are written again from the definition
    assert found.steps["t399"].reads == ("t398",)
    assert get_store().get_plan_outline(plan.digest) is not None


def test_a_heavy_plan_without_pieces_is_built_once_and_stored_in_pieces(
    small_cache: None,
) -> None:
    # Given a heavy plan's definition recorded without its pieces (as before plans had any)
    definition = parse_definition(forks(400))
    plan = build_plan(definition)
    text = json.dumps(definition.to_json_dict(), separators=(",", ":"))
    get_store().client.set(definition_key(plan.digest), text)
    get_store().client.delete(plan_key(plan.digest), f"{plan_key(plan.digest)}:tasks")
    # When a process asks for it, it is built from the definition
    built = _PlanCache().get(plan.digest)
    assert not isinstance(built.steps, PieceSteps)
    # Then its pieces are stored, and the next process reads those instead
    found = _PlanCache().get(plan.digest)
    assert isinstance(found.steps, PieceSteps)
    _same_specs(plan, found)


def test_a_worker_runs_a_heavy_plan_without_holding_or_building_it_whole(
    small_cache: None, tmp_path: Path
) -> None:
    from app.celery_app import all_queues
    from app.client import submit_workflow

    # Given a worker whose pool process has run a small run
    worker = CeleryWorker(tmp_path / "worker.log", all_queues(), concurrency=1,
                          prefix="pieces", env={"BATON_PLAN_CACHE_MIB": "1"}).ready()
    try:
        assert submit_workflow(chain(3), {"x": 1}).wait(timeout=scaled(60)) \
            is RunStatus.COMPLETED
        pid = pool_pid(worker.process.pid)
        peak_before = rss_kib(pid, "VmHWM")
        # When it runs 40 steps of a definition of 20,000 tasks
        run = submit_workflow(chain(TASKS, terminate_at=40), {"x": 1})
        assert run.wait(timeout=scaled(60)) is RunStatus.COMPLETED
        # Then its memory never held the plan (built whole, it weighs some 70 MiB)
        grew = (rss_kib(pid, "VmHWM") - peak_before) / 1024
        assert grew < 30, f"the pool process's peak grew {grew:.1f} MiB"
        assert run.steps["t39"].output == {"x": 1, "n": 39}
    finally:
        worker.stop()
