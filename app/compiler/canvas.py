"""Plan -> Celery canvas: a sequence becomes a chain, a fork a chord closed by its join.

Signatures are immutable and carry pointers only: (run id, step ref, plan digest), plus
`final` on the stage that ends the run and `iteration` inside a loop body. A sequence
longer than the segment size, or heavier than the byte budget of one broker message
(app.compiler.weights), compiles to its first stages followed by a `baton.continue` task
that compiles the rest when it runs, so message size and nesting depth stay bounded
whatever the workflow's length and shape. A fork whose branches do not fit one message
compiles to a `baton.fork` task that sends them when it runs, each with its own message,
but for one-step branches of a fork wider than `BATON_FORK_SPREAD`, sent in batches
(app.compiler.batches).
Consecutive steps of one transformation share a message, and a JOIN runs in the message
of the step after it, where app.compiler.fusion allows.
Data-dependent operators (switch, loop, dynamic fork, dynamic task) compile to one
control task that compiles its sub-route when it runs.
Runtime tasks are named, never imported. No I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from celery import chain, chord
from celery.canvas import Signature

from app.celery_app import celery_app
from app.compiler.batches import Member, batched
from app.compiler.fusion import FUSED, foldable_join, fusing, fusion_key
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
from app.compiler.weights import (
    CHAIN_OVERHEAD,
    CHORD_OVERHEAD,
    FLOOR,
    SIGNATURE_OVERHEAD,
    route_budget,
    weigh,
)
from app.registry import TASK_PREFIX
from app.timeouts import signature_options

CONTINUE_TASK: Final = "baton.continue"
FORK_TASK: Final = "baton.fork"
_CONTINUE_WEIGHT: Final = 400 + SIGNATURE_OVERHEAD
"""Bytes a continue signature may weigh (ids, sequence id, position, frame)."""
_JOIN_WATCH_WEIGHT: Final = 300 + SIGNATURE_OVERHEAD + CHAIN_OVERHEAD
"""Bytes the watch a timed JOIN starts with adds to its fork (a task and a chain)."""
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
    budget: int | None = None,
) -> Signature | None:
    """The canvas for a sequence from stage `start` on, one segment deep (None if empty).

    A segment holds at most `segment_size` stages and weighs at most `budget` bytes
    (default: app.compiler.weights.route_budget), its first stage whatever it weighs.
    `final` says whether the sequence's last stage ends the run (default: only for the
    workflow's own task list); `iteration` marks every step as part of a loop iteration.
    """
    ends_run = sequence_id == MAIN if final is None else final
    cut = _Cut(plan, run_id, segment_size, iteration)
    built = cut.route(sequence_id, start, route_budget() if budget is None else budget,
                      ends_run, whole=False, required=True)
    return built.signature if built is not None else None


def fork_route(
    plan: Plan, run_id: str, segment_size: int, fork_ref: str, *, final: bool,
    iteration: int | None,
) -> Signature:
    """A fork too heavy for one message, compiled when its `baton.fork` task runs: each
    branch's message carries only its own branch and the join, so each branch gets the
    budget, cut to its first stages and a continue."""
    stage = plan.controls[fork_ref]
    assert isinstance(stage, ForkStage)
    cut = _Cut(plan, run_id, segment_size, iteration)
    join = cut.join(stage, final)
    share = max(route_budget() - join.weight - CHORD_OVERHEAD, FLOOR)
    branches = []
    for branch_id in stage.branches:
        built = cut.route(branch_id, 0, share, False, whole=False, required=True)
        assert built is not None and built.signature is not None  # no empty branches
        branches.append(Member(built.signature, built.weight, cut.branch_key(branch_id)))
    members = batched(branches, len(branches), share)
    return watched_fork(plan, run_id, stage.join_ref, iteration,
                        fork_signature(members, join.signature))


def step_signature(
    plan: Plan, run_id: str, ref: str, *, final: bool = False, iteration: int | None = None,
    task_name: str | None = None,
) -> Signature:
    """The signature of one step; `task_name` overrides the name its type gives."""
    spec = plan.steps[ref]
    name = task_name or step_task_name(spec.type, spec.name)
    options = signature_options(spec.policy_overrides, spec.task.start_delay or 0)
    kwargs = _frame(final, iteration)
    if spec.task.start_delay:
        # the worker that takes it first waits in hops of its own visibility timeout:
        # the process compiling the route may not share the workers' settings
        kwargs["delay_left"] = spec.task.start_delay
    return celery_app.signature(
        name, args=(run_id, ref, plan.digest), kwargs=kwargs, immutable=True, **options,
    )


def step_task_name(task_type: str, name: str) -> str:
    """The Celery task that runs a step of this type and task name."""
    return CONTROL_TASKS.get(task_type, TASK_PREFIX + name)


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


@dataclass(frozen=True)
class _Built:
    signature: Signature | None
    """None for an empty sequence."""
    weight: int
    tail: Signature | None = None
    """The signature the route's next step may be fused into (its message runs last)."""
    folded: bool = False
    """A fork whose join runs in the message of the stage after it, which it took."""
    body: Signature | None = None
    """A fork's join (its chord's body), or the message it is folded into."""


class _Cut:
    """Compiles routes of one plan and frame, cutting them to byte budgets as it goes:
    each stage is weighed once, from its own signatures (app.compiler.weights)."""

    def __init__(self, plan: Plan, run_id: str, segment_size: int, iteration: int | None):
        self.plan, self.run_id = plan, run_id
        self.segment_size, self.iteration = segment_size, iteration
        self.fusing = fusing(plan)

    def key(self, stage: Stage) -> str | None:
        return fusion_key(self.plan, stage) if self.fusing else None

    def branch_key(self, branch_id: str) -> str | None:
        """The fusion key of a fork's branch of one step (app.compiler.batches), else None."""
        stages = self.plan.sequences[branch_id]
        return self.key(stages[0]) if len(stages) == 1 else None

    def route(self, sequence_id: str, start: int, budget: int, ends_run: bool, *,
              whole: bool, required: bool) -> _Built | None:
        """A segment from `start` within `budget`; None if it cannot be (`whole`: the
        sequence does not fit entire; else not even its first stage fits and it is not
        `required`)."""
        stages = self.plan.sequences[sequence_id]
        end = min(start + self.segment_size, len(stages))
        if whole and end < len(stages):
            return None
        signatures: list[Signature] = []
        used = 0
        position = start
        tail: Signature | None = None
        while position < end:
            stage = stages[position]
            last = position == len(stages) - 1
            key = self.key(stage)
            added = len(json.dumps(stage.ref)) + 2
            if tail is not None and key is not None and key == tail.name \
                    and used + added <= budget - (0 if last else _CONTINUE_WEIGHT):
                _fuse(tail, stage.ref, final=ends_run and last,
                      keeps=last and sequence_id != MAIN)
                used += added
                position += 1
                continue
            first = not signatures
            # a second signature makes the route a chain; a stage not last, a continue too
            room = budget - used - (CHAIN_OVERHEAD if not (first and last) else 0) \
                - (0 if last else _CONTINUE_WEIGHT)
            after = stages[position + 1] if position + 1 < end else None
            built = self.stage(stage, room, final=ends_run and last, may_cut=first and not whole,
                               must=first and required, late=not first and not whole,
                               after=after, after_final=ends_run and position + 2 == len(stages))
            if built is None:
                if whole or first:
                    return None
                break
            signature = built.signature
            assert signature is not None
            # Clients follow the run store, not Celery results. Only the last task of a
            # branch may be a chord member whose result closes a fork, so only it keeps its
            # result; a fork's own options would go to its header: its body is set instead.
            # (The workflow's own list is never a branch: a child run's route is followed
            # by the task that ends its parent's step.)
            ends = position + (2 if built.folded else 1) == len(stages)
            keeps = ends and sequence_id != MAIN
            if not keeps:
                if isinstance(stage, ForkStage):
                    if built.body is not None:
                        built.body.set(ignore_result=True)
                else:
                    signature.set(ignore_result=True)
            signatures.append(signature)
            used += built.weight
            position += 2 if built.folded else 1
            tail = built.tail if key is not None or built.folded else None
        if position < len(stages):
            signatures.append(celery_app.signature(
                CONTINUE_TASK, args=(self.run_id, sequence_id, position, self.plan.digest),
                kwargs=_frame(ends_run, self.iteration), immutable=True,
            ))
            used += _CONTINUE_WEIGHT
        if not signatures:
            return _Built(None, 0)
        if len(signatures) == 1:
            return _Built(signatures[0], used)
        return _Built(chain(*signatures), used + CHAIN_OVERHEAD)

    def stage(self, stage: Stage, room: int, *, final: bool, may_cut: bool, must: bool,
              late: bool, after: Stage | None = None, after_final: bool = False
              ) -> _Built | None:
        """A stage within `room` bytes, None if it does not fit (unless it `must`).

        A fork goes inline with its branches entire if they fit, else (as the first stage
        of a segment, `may_cut`) with its branches cut to their shares, else as a
        `baton.fork` task that sends its branches when it runs. A `late` stage (one the
        segment may end before) does not become a `baton.fork`: the next segment starts
        with it and may hold it inline. An inline fork whose join may be folded takes the
        stage `after` it into its join's message (`after_final`: that stage ends the run).
        """
        if isinstance(stage, ForkStage):
            fold = after if after is not None and self.key(after) is not None and foldable_join(
                self.plan, stage.join_ref) else None
            final = after_final if fold is not None else final
            inline = self.fork(stage, room, final, whole=True, fold=fold)
            if inline is None and may_cut:
                inline = self.fork(stage, room, final, whole=False, fold=fold)
            if inline is not None or late:
                return inline
            signature = celery_app.signature(
                FORK_TASK, args=(self.run_id, stage.ref, self.plan.digest),
                kwargs=_frame(final, self.iteration), immutable=True)
        elif isinstance(stage, DynamicForkStage | SwitchStage | LoopStage | StepStage):
            # a dynamic fork's join is sent by the fork itself, once it knows its branches
            signature = step_signature(self.plan, self.run_id, stage.ref, final=final,
                                       iteration=self.iteration)
        else:
            raise TypeError(f"unknown stage {stage!r}")
        weight = weigh(signature)
        return _Built(signature, weight, signature) if weight <= room or must else None

    def fork(self, stage: ForkStage, room: int, final: bool, *, whole: bool,
             fold: Stage | None = None) -> _Built | None:
        """The fork inline, branches sharing what the join leaves of `room` (None if a
        branch does not fit its share); its join runs in `fold`'s message if given."""
        join = self.join(stage, final, fold)
        left = budget = room - join.weight - CHORD_OVERHEAD
        branches = []
        for index, branch_id in enumerate(stage.branches):
            share = left // (len(stage.branches) - index)
            built = self.route(branch_id, 0, share, False, whole=whole, required=False)
            if built is None:
                return None
            assert built.signature is not None  # validation refuses empty branches
            branches.append(Member(built.signature, built.weight, self.branch_key(branch_id)))
            left -= built.weight
        # a batch weighs less than the branches it takes: the fork's weight stays an upper bound
        members = batched(branches, len(branches), budget)
        signature = watched_fork(self.plan, self.run_id, stage.join_ref, self.iteration,
                                 fork_signature(members, join.signature))
        folded = fold is not None
        return _Built(signature, room - left, join.signature if folded else None, folded,
                      join.signature)

    def join(self, stage: ForkStage, final: bool, fold: Stage | None = None) -> _Built:
        """A fork's join, with the watch that starts its timer when it has one; run in the
        message of the step `fold` (then `final` is that step's) if given."""
        if fold is not None:
            signature = step_signature(self.plan, self.run_id, fold.ref, final=final,
                                       iteration=self.iteration)
            signature.args = (self.run_id, stage.join_ref, self.plan.digest)
            signature.kwargs[FUSED] = [fold.ref]
            return _Built(signature, weigh(signature))
        signature = step_signature(self.plan, self.run_id, stage.join_ref, final=final,
                                   iteration=self.iteration)
        watch = _JOIN_WATCH_WEIGHT if self.plan.steps[stage.join_ref].policy_overrides.get(
            "timeout_seconds") else 0
        return _Built(signature, weigh(signature) + watch)


def _fuse(signature: Signature, ref: str, *, final: bool, keeps: bool) -> None:
    """Run step `ref` in `signature`'s message after the steps it runs (`final`: it ends
    the run; `keeps`: it ends a branch, so the message keeps its result for a fork)."""
    signature.kwargs.setdefault(FUSED, []).append(ref)
    if final:
        signature.kwargs["final"] = True
    if keeps:
        signature.options.pop("ignore_result", None)


def _frame(final: bool, iteration: int | None) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    if final:
        frame["final"] = True
    if iteration is not None:
        frame["iteration"] = iteration
    return frame
