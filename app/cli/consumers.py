"""Which queue a run waits on that no worker consumes: told while `submit --wait` and `run`
follow a run, and by `baton status`.

A step whose queue has no worker waits silently: its message lies in Redis and nothing
is recorded. Once a run has made no progress for QUIET_SECONDS with no step running, the
queues of its steps that have not ended are looked at: one that holds messages and that
no worker consumes (asked of the workers with `inspect active_queues`, at most every
ASK_EVERY_SECONDS) is named, with the step that waits on it. Only reads: the broker's
queue lengths and the workers' answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from app.celery_app import celery_app, route_task
from app.client import Step
from app.queue_variants import INSPECT_TIMEOUT, queue_length
from app.registry import TASK_PREFIX
from app.runtime.state import get_store, plans
from app.store import StepStatus

QUIET_SECONDS: Final = 3.0
"""How long a run goes without progress, no step running, before workers are asked."""
ASK_EVERY_SECONDS: Final = 10.0
"""How long the workers' answer is trusted (a worker started meanwhile is seen after it)."""
_SYSTEM_IO: Final = {"HTTP": "baton.http", "EVENT": "baton.event"}


@dataclass(frozen=True)
class Unconsumed:
    """A queue that holds a waiting step's message and that no worker consumes."""

    queue: str
    step: str
    messages: int

    def __str__(self) -> str:
        waiting = f"{self.messages} message{'s' if self.messages != 1 else ''} waiting"
        return (f"no worker consumes queue '{self.queue}' (step {self.step}, {waiting}); "
                f"start one: baton worker {self.queue}")


class ConsumerCheck:
    """Asks the workers which queues they consume, at most every ASK_EVERY_SECONDS."""

    def __init__(self) -> None:
        self._consumed: frozenset[str] = frozenset()
        self._asked = -ASK_EVERY_SECONDS

    def consumed(self) -> frozenset[str]:
        if time.monotonic() - self._asked >= ASK_EVERY_SECONDS:
            # a connection of its own, closed after: a pooled one kept by the process could
            # have outlived a restart of Redis by the next time (a broadcast does not reconnect)
            with celery_app.connection_for_write() as connection:
                replies = celery_app.control.inspect(
                    timeout=INSPECT_TIMEOUT, connection=connection).active_queues() or {}
            self._consumed = frozenset(
                queue["name"] for queues in replies.values() for queue in queues or ())
            self._asked = time.monotonic()
        return self._consumed

    def unconsumed(self, run_id: str, steps: Mapping[str, Step]) -> list[Unconsumed]:
        """The queues the run's steps that have not ended wait on with no worker on them."""
        waiting = _waiting_queues(run_id, steps)
        if not waiting:
            return []
        client = get_store().client
        found = []
        consumed = None
        for queue, ref in waiting.items():
            messages = queue_length(client, queue)
            if not messages:
                continue
            consumed = self.consumed() if consumed is None else consumed
            if queue not in consumed:
                found.append(Unconsumed(queue, ref, messages))
        return found


def quiet_for(steps: Iterable[Step], since: float, now: float) -> bool:
    """Whether the run has waited QUIET_SECONDS since its last progress (`since`,
    monotonic) with no step running."""
    if any(step.status is StepStatus.IN_PROGRESS for step in steps):
        return False
    return now - since >= QUIET_SECONDS


def _waiting_queues(run_id: str, steps: Mapping[str, Step]) -> dict[str, str]:
    """Queue -> the first step not started yet (or SCHEDULED again) whose message goes there."""
    digest = get_store().get_run_fields(run_id, "plan").get("plan")
    if not digest:
        return {}
    queues: dict[str, str] = {}
    for ref, spec in plans.get(digest).steps.items():
        step = steps.get(ref)
        if step is not None and (step.status is not StepStatus.SCHEDULED or step.waiting_on):
            continue  # running or ended, or waiting on its flow limit (`baton limits` tells)
        task = (TASK_PREFIX + spec.name if spec.type in ("SIMPLE", "DYNAMIC")
                else _SYSTEM_IO.get(spec.type, f"baton.{spec.type.lower()}"))
        route = route_task(task, [run_id, ref, digest])
        if route is not None:
            queues.setdefault(str(route["queue"]), ref)
    return queues
