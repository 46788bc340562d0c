"""The benchmark's workloads, each as a Baton definition and as raw Celery canvas.

Loaded by the client and by the worker through BATON_TRANSFORMATIONS, so both sides'
tasks are registered on the one Celery app. The work itself is trivial on purpose: what
is measured is what each side spends around a step (messages, bookkeeping, Redis).
No timing and no process management here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from celery import chain, chord, group
from celery.canvas import Signature

from app import Limit, transformation
from app import celery as celery_app
from bench import messages

messages.install()  # here because the worker's pool processes import only this module

QUEUE: Final = "bench"
"""Both sides' tasks go to this queue, consumed by the same worker."""

STEP_OUTPUT: Final = {"ok": True}


@transformation(queue=QUEUE)
def bench_step(**values: Any) -> dict[str, Any]:
    """Baton's step: do nothing and say so."""
    return dict(STEP_OUTPUT)


@transformation(queue=QUEUE, limit=Limit(concurrency=1_000_000))
def bench_step_limited(**values: Any) -> dict[str, Any]:
    """bench_step under a concurrency limit it never reaches (bench.run --limited)."""
    return dict(STEP_OUTPUT)


@celery_app.task(name="raw.step")  # type: ignore[untyped-decorator]
def raw_step() -> dict[str, Any]:
    """The raw side's step: the same nothing."""
    return dict(STEP_OUTPUT)


@celery_app.task(name="raw.join")  # type: ignore[untyped-decorator]
def raw_join(results: list[Any]) -> dict[str, Any]:
    """Close a raw fork: keep the branch results, as Baton's JOIN keeps the branch outputs."""
    return {"branches": results}


@dataclass(frozen=True)
class Canvas:
    """One hand-written canvas of a workload, and what a correct run of it returns."""

    build: Callable[[], Signature]
    """Builds a fresh canvas per run (Celery mutates signatures as it sends them)."""
    output: Any
    tasks_per_run: int


RAW: Final = "raw"
"""The canvas every shape has; shape (a) has a second one, RAW_CHORD."""
RAW_CHORD: Final = "raw_chord"


@dataclass(frozen=True)
class Shape:
    """One workload: how many runs of what, on both sides, and what a correct run returns."""

    key: str
    title: str
    runs: int
    steps_per_run: int
    """Steps of the workload itself (Baton's internal `continue` hops are not counted)."""
    definition: dict[str, Any]
    baton_output: Any
    canvases: dict[str, Canvas]
    """Raw canvas variants by side name, RAW first; all are measured against Baton."""

    @property
    def steps(self) -> int:
        return self.runs * self.steps_per_run


# -- Baton definitions ----------------------------------------------------------------------


def _simple(ref: str) -> dict[str, Any]:
    return {"name": "bench_step", "taskReferenceName": ref, "type": "SIMPLE"}


def _fork(ref: str, branch_refs: list[str]) -> list[dict[str, Any]]:
    # joinOn lists every branch, so Baton's JOIN reads what the raw join is handed
    fork = {"name": "fork", "taskReferenceName": ref, "type": "FORK_JOIN",
            "forkTasks": [[_simple(branch)] for branch in branch_refs]}
    join = {"name": "join", "taskReferenceName": f"{ref}_join", "type": "JOIN",
            "joinOn": branch_refs}
    return [fork, join]


def _workflow(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": tasks}


def _branch_refs(count: int) -> list[str]:
    return [f"b{index}" for index in range(count)]


# -- raw canvas -------------------------------------------------------------------------------


def _raw_step() -> Signature:
    return raw_step.si().set(queue=QUEUE)


def _raw_fork(branches: int) -> Signature:
    return chord([_raw_step() for _ in range(branches)], raw_join.s().set(queue=QUEUE))


def raw_fork_join_step() -> Signature:
    return chain(_raw_step(), _raw_fork(2), _raw_step())


def raw_fork_then_step() -> Signature:
    """The canvas one would write: Celery turns the group and the step after it into a
    chord whose body is that step, so a run is 4 tasks, not 5 (no join task)."""
    return chain(_raw_step(), group(_raw_step(), _raw_step()), _raw_step())


def raw_wide_fork(branches: int) -> Signature:
    return _raw_fork(branches)


def raw_long_chain(steps: int) -> Signature:
    return chain(*[_raw_step() for _ in range(steps)])


# -- the shapes -------------------------------------------------------------------------------


def many_small_runs(runs: int) -> Shape:
    """(a) `runs` runs of: step, fork of two one-step branches, join, step."""
    tasks = [_simple("first"), *_fork("fan", ["left", "right"]), _simple("last")]
    return Shape(
        key="a",
        title=f"{runs} runs x 5 steps",
        runs=runs,
        steps_per_run=5,
        definition=_workflow("bench_fork_join_step", tasks),
        baton_output=STEP_OUTPUT,
        canvases={RAW: Canvas(raw_fork_join_step, STEP_OUTPUT, 5),
                  RAW_CHORD: Canvas(raw_fork_then_step, STEP_OUTPUT, 4)},
    )


def wide_fork(branches: int) -> Shape:
    """(b) One fork of `branches` one-step branches, then its join."""
    refs = _branch_refs(branches)
    return Shape(
        key="b",
        title=f"fork {branches} + join",
        runs=1,
        steps_per_run=branches + 1,
        definition=_workflow(f"bench_fork_{branches}", _fork("fan", refs)),
        baton_output={ref: STEP_OUTPUT for ref in refs},
        canvases={RAW: Canvas(lambda: raw_wide_fork(branches),
                              {"branches": [STEP_OUTPUT] * branches}, branches + 1)},
    )


def _chain_shape(key: str, title: str, runs: int, steps: int) -> Shape:
    tasks = [_simple(f"s{index}") for index in range(steps)]
    return Shape(
        key=key,
        title=title,
        runs=runs,
        steps_per_run=steps,
        definition=_workflow(f"bench_chain_{steps}", tasks),
        baton_output=STEP_OUTPUT,
        canvases={RAW: Canvas(lambda: raw_long_chain(steps), STEP_OUTPUT, steps)},
    )


def long_chain(steps: int) -> Shape:
    """(c) One chain of `steps` steps."""
    return _chain_shape("c", f"chain of {steps} steps", 1, steps)


def short_chains(runs: int, steps: int = 10) -> Shape:
    """(d) `runs` runs of a chain of `steps` steps, all on the one queue."""
    return _chain_shape("d", f"{runs} runs x chain of {steps}", runs, steps)
