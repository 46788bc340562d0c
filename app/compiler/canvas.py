"""Plan -> Celery canvas: a sequence becomes a chain, a fork a chord closed by its join.

Signatures are immutable and carry pointers only: (run id, step ref, plan digest), plus
`final` on the stage that ends the run and `iteration` inside a loop body. A sequence
longer than the segment size compiles to its first stages followed by a `baton.continue`
task that compiles the rest when it runs, so message size and nesting depth stay bounded
whatever the workflow's length. Data-dependent operators (switch, loop, dynamic fork,
dynamic task) compile to one control task that compiles its sub-route when it runs.
Runtime tasks are named, never imported. No I/O here.
"""

from __future__ import annotations

from typing import Any, Final

from celery import chain, chord
from celery.canvas import Signature

from app.celery_app import celery_app
from app.compiler.plan import (
    MAIN,
    DynamicForkStage,
    ForkStage,
    LoopStage,
    Plan,
    Stage,
    StepStage,
    SwitchStage,
)
from app.registry import TASK_PREFIX
from app.timeouts import signature_options

CONTINUE_TASK: Final = "baton.continue"
JOIN_WATCH_TASK: Final = "baton.join_watch"
CONTROL_TASKS: Final = {
    "JOIN": "baton.join",
    "EXCLUSIVE_JOIN": "baton.exclusive_join",
    "NOOP": "baton.noop",
    "TERMINATE": "baton.terminate",
    "SET_VARIABLE": "baton.set_variable",
    "INLINE": "baton.inline",
    "LAMBDA": "baton.inline",
    "JSON_JQ_TRANSFORM": "baton.jq",
    "DYNAMIC": "baton.dynamic",
    "SWITCH": "baton.switch",
    "DECISION": "baton.switch",
    "DO_WHILE": "baton.loop",
    "FORK_JOIN_DYNAMIC": "baton.fork_dynamic",
    "SUB_WORKFLOW": "baton.sub_workflow",
    "START_WORKFLOW": "baton.start_workflow",
    "WAIT": "baton.wait",
    "HUMAN": "baton.human",
    "HTTP": "baton.http",
    "EVENT": "baton.event",
}


def compile_route(
    plan: Plan,
    run_id: str,
    segment_size: int,
    sequence_id: str = MAIN,
    start: int = 0,
    *,
    final: bool | None = None,
    iteration: int | None = None,
) -> Signature | None:
    """The canvas for a sequence from stage `start` on, one segment deep (None if empty).

    `final` says whether the sequence's last stage ends the run (default: only for the
    workflow's own task list); `iteration` marks every step as part of a loop iteration.
    """
    ends_run = sequence_id == MAIN if final is None else final
    stages = plan.sequences[sequence_id]
    end = min(start + segment_size, len(stages))
    signatures = []
    for position in range(start, end):
        stage = stages[position]
        last = position == len(stages) - 1
        signature = _stage(plan, run_id, stage, segment_size, iteration, final=ends_run and last)
        if not last and not isinstance(stage, ForkStage):
            # Clients follow the run store, not Celery results. Only the last task of a
            # sequence may be a chord member whose result closes a fork, so only it (and
            # every fork, whose header would inherit the option) keeps its result.
            signature.set(ignore_result=True)
        signatures.append(signature)
    if end < len(stages):
        kwargs = _frame(ends_run, iteration)
        signatures.append(celery_app.signature(
            CONTINUE_TASK, args=(run_id, sequence_id, end, plan.digest), kwargs=kwargs,
            immutable=True,
        ))
    if not signatures:
        return None
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def step_signature(
    plan: Plan, run_id: str, ref: str, *, final: bool = False, iteration: int | None = None,
    task_name: str | None = None,
) -> Signature:
    """The signature of one step; `task_name` overrides the name its type gives."""
    spec = plan.steps[ref]
    name = task_name or CONTROL_TASKS.get(spec.type, TASK_PREFIX + spec.name)
    options = signature_options(spec.policy_overrides, spec.task.start_delay or 0)
    kwargs = _frame(final, iteration)
    if spec.task.start_delay:
        # the worker that takes it first waits in hops of its own visibility timeout:
        # the process compiling the route may not share the workers' settings
        kwargs["delay_left"] = spec.task.start_delay
    return celery_app.signature(
        name, args=(run_id, ref, plan.digest), kwargs=kwargs, immutable=True, **options,
    )


def fork_signature(
    branches: list[Signature], join: Signature
) -> Signature:
    """Branches that run in parallel, then the join once all have ended."""
    if len(branches) == 1:
        # a one-member group unrolls to a plain signature and would not wait: chain instead
        return chain(branches[0], join)
    return chord(branches, join)


def watched_fork(plan: Plan, run_id: str, join_ref: str, iteration: int | None,
                 fork: Signature) -> Signature:
    """A fork whose JOIN sets a timeoutSeconds starts the join's timer first: the join
    waits for the branches from when its fork starts (app.runtime.wait_limits)."""
    if not plan.steps[join_ref].policy_overrides.get("timeout_seconds"):
        return fork
    watch = celery_app.signature(
        JOIN_WATCH_TASK, args=(run_id, join_ref, plan.digest),
        kwargs=_frame(False, iteration), immutable=True, ignore_result=True)
    return chain(watch, fork)


def _stage(
    plan: Plan, run_id: str, stage: Stage, segment_size: int, iteration: int | None,
    final: bool,
) -> Signature:
    if isinstance(stage, ForkStage):
        branches = []
        for branch_id in stage.branches:
            route = compile_route(plan, run_id, segment_size, branch_id, final=False,
                                  iteration=iteration)
            assert route is not None  # validation refuses empty branches
            branches.append(route)
        join = step_signature(plan, run_id, stage.join_ref, final=final, iteration=iteration)
        return watched_fork(plan, run_id, stage.join_ref, iteration,
                            fork_signature(branches, join))
    if isinstance(stage, DynamicForkStage):
        # the join is sent by the fork itself, once it knows its branches
        return step_signature(plan, run_id, stage.ref, final=final, iteration=iteration)
    if isinstance(stage, SwitchStage | LoopStage | StepStage):
        return step_signature(plan, run_id, stage.ref, final=final, iteration=iteration)
    raise TypeError(f"unknown stage {stage!r}")


def _frame(final: bool, iteration: int | None) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    if final:
        frame["final"] = True
    if iteration is not None:
        frame["iteration"] = iteration
    return frame
