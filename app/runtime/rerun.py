"""Rerun and restart: a new attempt of an ended run, from one of its steps or from the start.

The run keeps its id. Records of the steps from the chosen one on are deleted, those before
it are kept (their outputs feed the steps that run again), and the route is sent from the
chosen step's place in the workflow's own task list.

Each attempt is a new epoch of the run and sends its route under a new Celery root id,
kept on the run as `root`. Messages of an earlier attempt still in a queue (a step that
was running when the run was cancelled, a WAIT's timer, a deadline) carry the old root and
do nothing when they arrive, so an earlier attempt can never run alongside this one.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from app.compiler.canvas import compile_route
from app.compiler.plan import MAIN, DynamicForkStage, ForkStage, Plan, Stage, refs_within
from app.config import get_settings
from app.runtime.lifecycle import LifecycleError
from app.runtime.run_limits import slot_again
from app.runtime.runs import check_input, send_deadline
from app.runtime.schemas import check_run_input
from app.runtime.state import get_store, plans
from app.store import DONE_STEP_STATUSES, OPEN_STEP_STATUSES, RunStatus

_ITERATION: Final = re.compile(r"(.+)__\d+")


def rerun(run_id: str, from_step: str, given: Mapping[str, Any] | None = None) -> None:
    """Run an ended run again from one of its top-level steps; the steps before it stay.

    `given`, when not None, replaces the run's input (the definition's inputTemplate
    still fills in what it leaves out).
    """
    plan = _ended_run(run_id, "rerun")
    position = _position(plan, from_step)
    new_input = None
    if given is not None:
        new_input = check_input(given, plan.definition.input_template)
        check_run_input(plan, new_input)
    with slot_again(run_id, "rerun"):
        _start_again(run_id, plan, position, new_input)


def restart(run_id: str) -> None:
    """Run an ended run again from the beginning, with the same input (same run id)."""
    plan = _ended_run(run_id, "restart")
    with slot_again(run_id, "restart"):
        _start_again(run_id, plan, 0, None)


def _ended_run(run_id: str, verb: str) -> Plan:
    run = get_store().get_run(run_id)
    status = (run or {}).get("status")
    if run is None or status in (RunStatus.RUNNING, RunStatus.PAUSED):
        raise LifecycleError(f"run {run_id} is {status or 'unknown'}: only an ended run can "
                             f"{verb}")
    if run.get("parentWorkflowId"):
        # its route ends in the parent's step; alone, it would never hand its output back
        raise LifecycleError(f"run {run_id} is a sub-workflow of run {run['parentWorkflowId']}"
                             f" (step '{run.get('parentWorkflowTaskRef', '')}'): {verb} the "
                             "parent from that step instead")
    plan = plans.get(run["plan"])
    if status == RunStatus.COMPLETED and not plan.definition.restartable:
        raise LifecycleError(f"run {run_id}: workflow '{plan.definition.name}' is not "
                             "restartable (restartable: false) and the run completed")
    return plan


def _position(plan: Plan, ref: str) -> int:
    """The place of a top-level step in the workflow's task list; else a precise error."""
    stages = plan.sequences[MAIN]
    for position, stage in enumerate(stages):
        if stage.ref == ref:
            return position
    for stage in stages:
        if isinstance(stage, ForkStage | DynamicForkStage) and stage.join_ref == ref:
            raise LifecycleError(f"from_step: '{ref}' is the JOIN of fork '{stage.ref}'; "
                                 f"rerun from '{stage.ref}'")
        if ref in refs_within(plan, stage):
            raise LifecycleError(f"from_step: '{ref}' is inside '{stage.ref}'; a rerun starts "
                                 f"from a task of the workflow's own list, such as "
                                 f"'{stage.ref}'")
    close = difflib.get_close_matches(ref, [stage.ref for stage in stages], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise LifecycleError(f"from_step: '{ref}' is not a task of workflow "
                         f"'{plan.definition.name}'{hint}")


def _start_again(run_id: str, plan: Plan, position: int, new_input: dict[str, Any] | None) -> None:
    store = get_store()
    stages = plan.sequences[MAIN]
    kept_plan = set().union(*(refs_within(plan, stage) for stage in stages[:position]))
    recorded = store.recorded_refs(run_id)
    records = store.get_step_records(run_id, sorted(recorded))
    kept = _kept(plan, kept_plan, records)
    _check_before(plan, stages[position].ref, stages[:position], kept, records)
    reset = recorded - kept

    root = store.reopen(run_id, reset=sorted(reset), from_start=position == 0,
                        new_input=new_input, variables=plan.definition.variables or {})
    if root is None:
        raise LifecycleError(f"run {run_id} is {store.get_status(run_id) or 'unknown'}: it "
                             "started again meanwhile")
    route = compile_route(plan, run_id, get_settings().segment_size, MAIN, position)
    assert route is not None  # the position is that of a stage
    route.apply_async(root_id=root)
    send_deadline(run_id, plan.definition, root)


def _kept(plan: Plan, kept_plan: set[str], records: Mapping[str, Mapping[str, str]]) -> set[str]:
    """Recorded refs that belong before the rerun's step: the plan's, with their loop
    iterations (`<ref>__<n>`), and the branches of the dynamic forks among them."""
    def base(ref: str) -> str:
        match = _ITERATION.fullmatch(ref)
        return match.group(1) if match and ref not in plan.steps else ref

    kept = {ref for ref in records if base(ref) in kept_plan}
    branches: set[str] = set()
    for ref in kept:
        if isinstance(plan.controls.get(base(ref)), DynamicForkStage):
            output = json.loads(records[ref].get("output") or "{}") or {}
            branches.update(str(branch) for branch in output.get("forkedTasks") or ())
    return kept | {ref for ref in records if base(ref) in branches}


def _check_before(
    plan: Plan, start: str, before: Iterable[Stage], kept: set[str],
    records: Mapping[str, Mapping[str, str]],
) -> None:
    """Every step before the rerun's must have completed: the steps after read them."""
    for stage in before:
        own = getattr(stage, "join_ref", stage.ref)
        status = records.get(own, {}).get("status")
        if status not in DONE_STEP_STATUSES and not (status and plan.steps[own].task.permissive):
            raise LifecycleError(f"from_step: '{start}' comes after '{own}', which did not "
                                 f"complete ({status or 'never started'}); rerun from "
                                 f"'{own}' or earlier")
    for ref in sorted(kept):
        status = records[ref].get("status")
        if status in OPEN_STEP_STATUSES:
            raise LifecycleError(f"from_step: '{start}' comes after '{ref}', which is still "
                                 f"{status}")
