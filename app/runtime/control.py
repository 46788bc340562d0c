"""Data-dependent operators: SWITCH/DECISION, DO_WHILE, FORK_JOIN_DYNAMIC and DYNAMIC.

Each runs as one control task that evaluates its input, records its decision on its own
step and puts the compiled sub-route in its place on the message's route (`replace`), so
the rest of the workflow continues after the sub-route ends. A loop is a chain of one
iteration's body followed by `baton.loop_next`, which decides on the next iteration:
the route stays the size of one body however many iterations run.
"""

from __future__ import annotations

import json
from typing import Any, Final

from celery import Task, chain
from celery.canvas import Signature

from app.celery_app import celery_app
from app.compiler.batches import Member, batched
from app.compiler.canvas import (
    CONTROL_TASKS,
    compile_route,
    fork_signature,
    step_signature,
    watched_fork,
)
from app.compiler.fusion import fusing
from app.compiler.plan import DynamicForkStage, LoopStage, Plan, StepSpec, SwitchStage
from app.compiler.weights import CHORD_OVERHEAD, FLOOR, route_budget, weigh
from app.config import get_settings
from app.dsl.expressions import parse_parameter
from app.dsl.validate import ref_problems
from app.registry import TASK_PREFIX, transformations
from app.runtime import javascript, state_events
from app.runtime.containment import contained
from app.runtime.dynamic_branches import (
    TRANSFORMATION_TYPES,
    Branch,
    batch_key,
    item_branches,
    listed_branches,
)
from app.runtime.lifecycle import still_running
from app.runtime.operators import OperatorError, system_task
from app.runtime.scope import build_scope, record_document
from app.runtime.state import get_store, plans
from app.runtime.step import (
    Outcome,
    StepContext,
    StepTask,
    _workflow_output,
    record_ref,
    step_task,
    stop_route,
)
from app.runtime.wait_timeouts import watch
from app.store import StepStatus, now_ms

LOOP_NEXT_TASK: Final = "baton.loop_next"


# -- SWITCH / DECISION -------------------------------------------------------------------------


def switch_case(spec: StepSpec, given: dict[str, Any]) -> str:
    """The case value a SWITCH or DECISION evaluates to, as the string its cases are keyed by."""
    task = spec.task
    if spec.type == "DECISION":
        if task.case_expression:
            value = javascript.evaluate(task.case_expression, given, where="caseExpression")
        else:
            value = given.get(task.case_value_param or "")
    else:
        evaluator = task.evaluator_type or "value-param"
        expression = task.expression or ""
        if evaluator == "value-param":
            value = given.get(expression)
        elif evaluator in ("javascript", "graaljs"):
            value = javascript.evaluate(expression, given, where="expression")
        else:
            raise OperatorError(f"evaluatorType must be value-param, javascript or graaljs, "
                                f"not '{evaluator}'")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else value if isinstance(value, str) else json.dumps(value)


def _switch_route(
    plan: Plan, spec: StepSpec, output: Any, final: bool, iteration: int | None, run_id: str
) -> Signature | None:
    stage = plan.controls[spec.ref]
    assert isinstance(stage, SwitchStage)
    case = (output.get("evaluationResult") or [None])[0]
    sequence = stage.cases.get(case, stage.default)
    return compile_route(plan, run_id, get_settings().segment_size, sequence, final=final,
                         iteration=iteration)


def _switch_work(context: StepContext) -> Outcome:
    case = switch_case(context.spec, dict(context.input))
    stage = context.plan.controls[context.spec.ref]
    assert isinstance(stage, SwitchStage)
    output = {"evaluationResult": [case],
              "selectedCase": case if case in stage.cases else "defaultCase"}
    route = _switch_route(context.plan, context.spec, output, context.final, context.iteration,
                          context.run_id)
    return Outcome(output, then=route)


def _switch_resend(run_id: str, plan: Plan, spec: StepSpec, output: Any, final: bool,
                   iteration: int | None) -> Signature | None:
    return _switch_route(plan, spec, output, final, iteration, run_id)


switch = step_task(CONTROL_TASKS["SWITCH"], _switch_work, resend=_switch_resend,
                   doc="Evaluate the case and run its tasks in this task's place; only a "
                       "missing key defaults.")


# -- DO_WHILE ----------------------------------------------------------------------------------


def _loop_items(context: StepContext) -> list[Any] | None:
    """The list a loop iterates over: its `items`, else Conductor's `inputParameters._items`."""
    task, given = context.spec.task, dict(context.input)
    items = parse_parameter(task.items).resolve(context.scope) if task.items else None
    if items is None and "_items" in given:
        items = given["_items"]
    if items is None:  # as Conductor's: a list that resolves to nothing is empty
        return [] if task.items or "_items" in given else None
    if not isinstance(items, list):
        raise OperatorError(f"DO_WHILE items must be a list, not {type(items).__name__}")
    return items


def _iteration_route(
    plan: Plan, run_id: str, stage: LoopStage, iteration: int, final: bool
) -> Signature:
    body = compile_route(plan, run_id, get_settings().segment_size, stage.body, final=False,
                         iteration=iteration)
    check = celery_app.signature(
        LOOP_NEXT_TASK, args=(run_id, stage.ref, plan.digest, iteration),
        kwargs={"final": True} if final else {}, immutable=True)
    return chain(body, check) if body is not None else check


def _loop_work(context: StepContext) -> Outcome:
    stage = context.plan.controls[context.spec.ref]
    assert isinstance(stage, LoopStage)
    items = _loop_items(context)
    output: dict[str, Any] = {"iteration": 1}
    if items is not None:
        if not items:
            return Outcome({"iteration": 0})
        output.update(_current(items, 0), items=items)
    route = _iteration_route(context.plan, context.run_id, stage, 1, context.final)
    watch(context)  # its timeoutSeconds bounds the whole loop
    return Outcome(output, then=route, status=StepStatus.IN_PROGRESS)


loop = step_task(CONTROL_TASKS["DO_WHILE"], _loop_work,
                 doc="Start a loop: record iteration 1 and run the body in this task's place.")


@celery_app.task(name=LOOP_NEXT_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda ref, *args, **kwargs: ref)
def loop_next(
    self: Task, run_id: str, ref: str, digest: str, iteration: int, final: bool = False
) -> Any:
    """After iteration n: evaluate loopCondition and run iteration n+1, or end the loop."""
    store, plan = get_store(), plans.get(digest)
    spec = plan.steps[ref]
    stage = plan.controls[ref]
    assert isinstance(stage, LoopStage)
    inner = [r for r in spec.reads if plan.loop_of.get(r) == ref]
    run, variables, records = store.read_state(run_id, list(dict.fromkeys(
        [ref, *inner, *spec.reads, *(plan.output_reads if final else ())])))
    loop_record = record_document(records.get(ref, {}))
    done = loop_record.get("output") or {}
    if not still_running(self, run_id, run):
        return None
    if loop_record.get("status") != StepStatus.IN_PROGRESS or done.get("iteration") != iteration:
        stop_route(self)  # a redelivery of a decision already made
        return None
    scope = build_scope(run, records, self.request.id, variables)
    # like Conductor, the loop's input is evaluated again for every condition
    loop_input = spec.inputs.resolve(scope)
    output = dict(done)
    output[str(iteration)] = {r: (scope.get(r) or {}).get("output") for r in inner}
    _keep_last(output, loop_input)
    items = output.get("items")
    try:
        bindings = {**loop_input, ref: output}
        bindings.update({r: (scope.get(r) or {}).get("output") for r in inner})
        if items is not None:
            # Conductor: over a list, the loop goes on while items are left and, when there
            # is a loopCondition, while it holds ($.loopItem and $.loopIndex bound)
            again = iteration < len(items)
            if again and (spec.task.loop_condition or "").strip():
                bindings.update(loopIndex=iteration - 1, loopItem=items[iteration - 1])
                again = bool(javascript.evaluate(spec.task.loop_condition or "", bindings,
                                                 where="loopCondition"))
        else:
            again = bool(javascript.evaluate(spec.task.loop_condition or "false", bindings,
                                             where="loopCondition"))
    except Exception as exc:
        store.fail_step(run_id, ref, error={"type": type(exc).__name__, "message": str(exc)})
        state_events.step_ended(run_id, ref, plan)
        stop_route(self)
        return None
    limit = get_settings().max_loop_iterations
    if again and iteration >= limit:
        # the loop record grows with every iteration: a condition that never turns false
        # would run, and grow, forever
        message = (f"loop: ran {iteration} iterations, the limit "
                   f"(BATON_MAX_LOOP_ITERATIONS={limit})")
        store.fail_step(run_id, ref, error={"type": "LoopLimitExceeded", "message": message})
        state_events.step_ended(run_id, ref, plan)
        stop_route(self)
        return None
    if again:
        output["iteration"] = iteration + 1
        if items is not None:
            output.update(_current(items, iteration))
        # only if no other delivery of this decision moved the loop on meanwhile
        if not store.record_step(run_id, ref, {"output": json.dumps(output)},
                                 expect_output=records[ref].get("output", "")):
            stop_route(self)
            return None
        return self.replace(_iteration_route(plan, run_id, stage, iteration + 1, final))
    # like Conductor's, the ended loop's output keeps the last loopItem and loopIndex
    output.pop("items", None)
    output.pop("item", None)
    output.pop("index", None)
    run_output = _workflow_output(plan, scope, ref, loop_record.get("input"), output) \
        if final else None
    if store.complete_step(run_id, ref, input=loop_record.get("input"), output=output,
                           run_output=run_output, final=final,
                           expect=StepStatus.IN_PROGRESS) is None:
        stop_route(self)  # another delivery of this decision ended the loop
        return None
    state_events.step_ended(run_id, ref, plan)
    return None


def _current(items: list[Any], index: int) -> dict[str, Any]:
    """The loop output naming the item of iteration index+1: Conductor's `loopItem` and
    `loopIndex` (zero-based), and Baton's earlier names `item` and `index` for them."""
    return {"loopItem": items[index], "loopIndex": index, "item": items[index], "index": index}


def _keep_last(output: dict[str, Any], given: dict[str, Any]) -> None:
    keep = given.get("keepLastN")
    if isinstance(keep, int) and keep > 0:
        numbered = sorted(int(k) for k in output if k.isdigit())
        for number in numbered[:-keep]:
            output.pop(str(number), None)


# -- FORK_JOIN_DYNAMIC and DYNAMIC ---------------------------------------------------------------


def _dynamic_branches(context: StepContext) -> list[Branch]:
    """The branches a dynamic fork was given (see app/runtime/dynamic_branches.py)."""
    task, given = context.spec.task, dict(context.input)
    if task.dynamic_fork_tasks_param:
        branches = listed_branches(task, given)
    else:
        branches = item_branches(context.spec.ref, given,
                                 lambda first: _another_fork_ran(context, first))
    _check_width(len(branches))
    return branches


def _another_fork_ran(context: StepContext, first_ref: str) -> bool:
    """Whether the run ran a dynamic fork before this one (Conductor then names item
    branches after their fork too). A redelivered fork keeps its first delivery's answer:
    the short-named first branch is its own exactly when that delivery chose short names."""
    if context.iteration is not None and context.iteration > 1:
        return True  # this fork ran in the loop's earlier iterations
    defined = get_store().get_dynamic_step(context.run_id, first_ref)
    if defined is not None:
        return bool(defined.get("fork") != context.spec.ref)
    plan, own = context.plan, context.record_ref
    # read from the stages: going through plan.steps would build every step's spec
    forks = {ref for ref, stage in plan.controls.items() if isinstance(stage, DynamicForkStage)}
    return any(ref != own and ref.split("__")[0] in forks
               for ref in get_store().recorded_refs(context.run_id))


def _check_width(count: int) -> None:
    """Refuse a fork wider than the limit before any branch is defined or sent."""
    limit = get_settings().max_fork_width
    if count > limit:
        raise OperatorError(f"fork: {count} branches are over the limit of {limit} "
                            "(BATON_MAX_FORK_WIDTH)")


def _check_branch_refs(plan: Plan, branches: list[Branch]) -> None:
    """A branch defined at run time may not take a ref of the plan, or another branch's."""
    known, seen = transformations(), set()
    for branch in branches:
        branch_ref, name = branch.ref, branch.name
        problems = ref_problems(branch_ref)
        if problems:
            raise OperatorError(f"dynamic task '{branch_ref}': {problems[0]}")
        if branch_ref in plan.steps:
            raise OperatorError(f"dynamic task '{branch_ref}' takes the ref of a task of the "
                                "workflow; give it a taskReferenceName of its own")
        if branch_ref in seen:
            raise OperatorError(f"dynamic task '{branch_ref}' is listed twice")
        seen.add(branch_ref)
        if branch.type in TRANSFORMATION_TYPES and name not in known:
            raise OperatorError(f"dynamic task '{branch_ref}' names unknown transformation "
                                f"'{name}'")


def _fork_work(context: StepContext) -> Outcome:
    branches = _dynamic_branches(context)
    _check_branch_refs(context.plan, branches)
    taken = get_store().define_branches(context.run_id, context.spec.ref, {
        branch.ref: {"name": branch.name, "input": branch.input, "task": branch.task}
        for branch in branches})
    if taken is not None:
        raise OperatorError(f"dynamic task '{taken[0]}' takes the ref of {taken[1]}; give it "
                            "a taskReferenceName of its own")
    stage = context.plan.controls[context.spec.ref]
    assert isinstance(stage, DynamicForkStage)
    join = step_signature(context.plan, context.run_id, stage.join_ref,
                          final=context.final, iteration=context.iteration)
    signatures = _branch_messages(context, branches, weigh(join))
    output = {"forkedTasks": [branch.ref for branch in branches]}
    fork = fork_signature(signatures, join) if signatures else join
    return Outcome(output, then=watched_fork(context.plan, context.run_id, stage.join_ref,
                                             context.iteration, fork))


def _branch_messages(context: StepContext, branches: list[Branch],
                     join_weight: int) -> list[Signature]:
    """The fork's chord members: a message per branch, or per batch of branches of one
    transformation in a fork wider than BATON_FORK_SPREAD (app.compiler.batches)."""
    frame = {"iteration": context.iteration} if context.iteration is not None else {}
    batching = len(branches) > get_settings().fork_spread and fusing(context.plan)
    members = []
    for branch in branches:
        signature = celery_app.signature(
            CONTROL_TASKS.get(branch.type, TASK_PREFIX + branch.name),
            args=(context.run_id, branch.ref, context.plan.digest), kwargs=dict(frame),
            immutable=True)
        key = batch_key(branch) if batching else None
        members.append(Member(signature, weigh(signature) if batching else 0, key))
    share = max(route_budget() - join_weight - CHORD_OVERHEAD, FLOOR)
    return batched(members, len(branches), share)


fork_dynamic = system_task("FORK_JOIN_DYNAMIC")(_fork_work)


@celery_app.task(name=CONTROL_TASKS["DYNAMIC"], bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda ref, digest, final=False, iteration=None: record_ref(ref, iteration))
def dynamic(
    self: Task, run_id: str, ref: str, digest: str, final: bool = False,
    iteration: int | None = None,
) -> Any:
    """Run the transformation named by the input `dynamicTaskNameParam` names, as this step."""
    store, plan = get_store(), plans.get(digest)
    spec = plan.steps[ref]
    run, variables, records = store.read_state(run_id, list(spec.reads))
    if not still_running(self, run_id, run):
        return None
    scope = build_scope(run, records, self.request.id, variables)
    name = spec.inputs.resolve(scope).get(spec.task.dynamic_task_name_param or "")
    if not isinstance(name, str) or name not in transformations():
        error = {"type": "OperatorError",
                 "message": f"dynamicTaskNameParam names no known transformation: {name!r}",
                 "time": str(now_ms())}
        store.fail_step(run_id, ref, error=error)
        stop_route(self)
        return None
    return self.replace(step_signature(plan, run_id, ref, final=final, iteration=iteration,
                                       task_name=TASK_PREFIX + name))
