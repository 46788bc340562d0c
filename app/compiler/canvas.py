"""Plan -> Celery canvas: a sequence becomes a chain, a fork a chord closed by its join.

Signatures are immutable and carry pointers only: (run id, step ref, plan digest). A
sequence longer than the segment size compiles to its first stages followed by a
`baton.continue` task that compiles the rest when it runs, so message size and nesting
depth stay bounded whatever the workflow's length. Runtime tasks are named, never
imported. No I/O here.
"""

from __future__ import annotations

from typing import Any, Final

from celery import chain, chord
from celery.canvas import Signature

from app.celery_app import celery_app
from app.compiler.plan import MAIN, ForkStage, Plan, StepStage
from app.registry import TASK_PREFIX

JOIN_TASK: Final = "baton.join"
NOOP_TASK: Final = "baton.noop"
CONTINUE_TASK: Final = "baton.continue"

_CONTROL_TASKS: Final = {"JOIN": JOIN_TASK, "NOOP": NOOP_TASK}
TIME_LIMIT_GRACE: Final = 5.0
"""Seconds between the soft limit (the step fails as TIMED_OUT) and the hard kill."""


def compile_route(
    plan: Plan, run_id: str, segment_size: int, sequence_id: str = MAIN, start: int = 0
) -> Signature:
    """The canvas for one sequence of a plan from stage `start` on, one segment deep."""
    stages = plan.sequences[sequence_id]
    end = min(start + segment_size, len(stages))
    ends_run = sequence_id == MAIN and end == len(stages)
    signatures = []
    for position in range(start, end):
        stage = stages[position]
        final = ends_run and position == end - 1
        if isinstance(stage, StepStage):
            signatures.append(_step(plan, run_id, stage.ref, final))
        else:
            signatures.append(_fork(plan, run_id, stage, segment_size, final))
    if end < len(stages):
        signatures.append(
            celery_app.signature(
                CONTINUE_TASK, args=(run_id, sequence_id, end, plan.digest), immutable=True
            )
        )
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def _step(plan: Plan, run_id: str, ref: str, final: bool) -> Signature:
    spec = plan.steps[ref]
    name = _CONTROL_TASKS.get(spec.type, TASK_PREFIX + spec.name)
    kwargs: dict[str, Any] = {"final": True} if final else {}
    options: dict[str, Any] = {}
    timeout = spec.policy_overrides.get("timeout_seconds")
    if timeout:
        options = {"soft_time_limit": timeout, "time_limit": timeout + TIME_LIMIT_GRACE}
    return celery_app.signature(
        name, args=(run_id, ref, plan.digest), kwargs=kwargs, immutable=True, **options
    )


def _fork(
    plan: Plan, run_id: str, stage: ForkStage, segment_size: int, final: bool
) -> Signature:
    branches = [
        compile_route(plan, run_id, segment_size, branch_id) for branch_id in stage.branches
    ]
    join = _step(plan, run_id, stage.join_ref, final)
    if len(branches) == 1:
        # a one-member group unrolls to a plain signature and would not wait: chain instead
        return chain(branches[0], join)
    return chord(branches, join)
