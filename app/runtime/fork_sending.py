"""`baton.fork`: a static fork too heavy for one broker message sends its branches itself.

The compiler (app.compiler.canvas) puts this task where such a fork stands. When it runs it
compiles the fork and puts it in its own place on the route, as `baton.continue` does with
a segment: each branch then travels in a message of its own, with the join. Like a
continue it records nothing: the join records the fork, and a redelivered `baton.fork`
sends branches whose steps were claimed already, which do not run again.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from app.celery_app import celery_app
from app.compiler.canvas import FORK_TASK, fork_route
from app.config import get_settings
from app.runtime.containment import contained
from app.runtime.lifecycle import still_running
from app.runtime.state import plans
from app.runtime.step import StepTask


@celery_app.task(name=FORK_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda *args, **kwargs: None)
def send_fork(
    self: Task, run_id: str, ref: str, digest: str, final: bool = False,
    iteration: int | None = None,
) -> Any:
    """Compile the fork `ref` and put it, branches and join, in this task's place."""
    if not still_running(self, run_id):
        return None
    plan = plans.get(digest)
    return self.replace(fork_route(plan, run_id, get_settings().segment_size, ref,
                                   final=final, iteration=iteration))
