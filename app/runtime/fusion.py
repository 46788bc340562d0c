"""Several steps in one message: the step runner's side of fusion (app.compiler.fusion).

A fused message names its first step as any message does (run id, ref, plan digest) and
the steps that follow it in `fused`. Each runs through the step runner as it would in a
message of its own: claimed, recorded, retried, timed out and held back on its own. The
request is rewritten to start at each step before it runs, so whatever captures the
message (a retry, a pause holding it back, a failed step kept for `retry`) captures the
steps from that one on, never those already done; a message redelivered whole (its worker
died) finds the done ones completed and runs each of them no more. A step that stops the
route (held back, failed, completed meanwhile, over a limit) ends the message there.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from app.compiler.canvas import step_task_name
from app.compiler.fusion import FUSED
from app.runtime.state import plans
from app.runtime.step import KINDS, execute_step
from app.runtime.step_task import route_stopped


def run_fused(task: Task, run_id: str, refs: list[str], digest: str, *, final: bool,
              iteration: int | None) -> Any:
    """Run `refs` one after the other in this message (`final`: the last ends the run)."""
    plan = plans.get(digest)
    result: Any = None
    for index, ref in enumerate(refs):
        rest = refs[index + 1:]
        _start_at(task, ref, rest)
        if index and (task.soft_time_limit or task.time_limit):
            # a transformation's own time limit bounds a message, not a step: the rest
            # goes on in messages of their own, as unfused steps would
            return task.replace(task.signature(
                args=tuple(task.request.args), kwargs=dict(task.request.kwargs),
                immutable=True))
        spec = plan.steps.get(ref)
        kind = KINDS[step_task_name(spec.type, spec.name) if spec else task.name]
        result = execute_step(task, run_id, ref, digest, kind.work, final=final and not rest,
                              iteration=iteration, policy=kind.policy, resend=kind.resend)
        if route_stopped(task):
            break
    return result


def _start_at(task: Task, ref: str, rest: list[str]) -> None:
    """Make the running request that of a message starting at `ref` (see the module)."""
    request = task.request
    args = list(request.args)
    args[1] = ref
    request.args = args
    request.kwargs = {**(request.kwargs or {}), FUSED: rest}
    request.baton_stopped = False
