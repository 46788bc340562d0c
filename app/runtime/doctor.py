"""The invariant, checked: every run is ended, paused, waiting (on a timer or an outside
completion), or has a message queued or in flight. `find_stuck` lists the runs that break
it; `repair` sends such a run on from its recorded state.

A message is in flight from the broker's own records: Celery's Redis transport keeps a
queue as a list named after it, and every message a worker has taken but not acknowledged
(running, or held for its countdown) in the hash `unacked`. A message counts for the run
in its first argument, if it was sent on the run's current route (its root id).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from app.celery_app import celery_app
from app.compiler.canvas import compile_route
from app.compiler.plan import MAIN, Plan
from app.config import get_settings
from app.queue_variants import queue_lists, used_queues
from app.runtime.lifecycle import DEADLINE_TASK
from app.runtime.state import get_store, plans
from app.store import DONE_STEP_STATUSES, OPEN_RUN_STATUSES, RunStatus, StepStatus, now_ms

_UNACKED: Final = "unacked"
"""The hash of taken, unacknowledged messages in kombu's Redis transport."""
_WAITING_TYPES: Final = frozenset({"WAIT", "HUMAN", "HTTP", "EVENT"})  # HTTP, EVENT: asyncComplete


@dataclass(frozen=True)
class StuckRun:
    """A run that nothing will carry on."""

    run_id: str
    workflow: str
    status: str
    last_step: str | None
    """The ref of the step recorded last (started or ended), if any."""
    idle_seconds: float
    """Seconds since anything of the run was recorded."""


def find_stuck(min_idle_seconds: float = 60.0) -> list[StuckRun]:
    """Open runs with no message queued or in flight, idle at least `min_idle_seconds`.

    The idle time keeps a message between two hands (taken from its queue, not yet in
    `unacked`) from making its run look stuck.
    """
    store = get_store()
    alive = _runs_in_flight()
    stuck: list[StuckRun] = []
    for run_id in store.open_runs():
        found = _check(run_id, alive, min_idle_seconds)
        if found is not None:
            stuck.append(found)
    return stuck


def _check(run_id: str, alive: Mapping[str, set[str]], min_idle: float) -> StuckRun | None:
    store = get_store()
    run = store.get_run(run_id)
    if run is None or run.get("status") != RunStatus.RUNNING:
        return None  # paused, or ended meanwhile
    if run.get("waitingOn"):
        return None  # waits for its workflow's limit: its start is kept with it
    roots = alive.get(run_id, set())
    if run.get("root") in roots or (roots and not run.get("root")):
        return None  # a message of its current route is on its way
    steps = store.get_steps(run_id)
    for record in steps.values():
        if record.get("status") == StepStatus.SCHEDULED and record.get("waitingOn"):
            return None  # its message waits in Redis for a flow limit (app.runtime.limits)
        if record.get("status") != StepStatus.IN_PROGRESS:
            continue
        if record.get("taskType") in _WAITING_TYPES and record.get("parked"):
            return None  # waits for `complete_step`
        if record.get("taskType") == "SUB_WORKFLOW":
            child = (json.loads(record.get("output") or "{}") or {}).get("subWorkflowId")
            if child and _check(str(child), alive, 0.0) is None and \
                    store.get_status(str(child)) in OPEN_RUN_STATUSES:
                return None  # its child carries it
    times = [int(value) for record in [run, *steps.values()]
             for value in (record.get("startTime"), record.get("endTime")) if value]
    last = max(times) if times else now_ms()
    idle = (now_ms() - last) / 1000
    if idle < min_idle:
        return None
    last_step = max(steps, default=None, key=lambda ref: max(
        int(steps[ref].get("startTime") or 0), int(steps[ref].get("endTime") or 0)))
    return StuckRun(run_id, run.get("workflowType", ""), run.get("status", ""), last_step,
                    idle)


def _runs_in_flight() -> dict[str, set[str]]:
    """Run id -> root ids of the messages queued or taken for it (timers left out)."""
    found: dict[str, set[str]] = {}
    with celery_app.connection_for_read() as connection:
        client = connection.default_channel.client
        pipe = client.pipeline(transaction=False)
        for queue in used_queues(client):  # variants and priority lists included
            for key in queue_lists(queue):
                pipe.lrange(key, 0, -1)
        pipe.hvals(_UNACKED)
        *queued, taken = pipe.execute()
    for raw in [*(m for q in queued for m in q), *taken]:
        parsed = _message(raw)
        if parsed is not None:
            run_id, root = parsed
            found.setdefault(run_id, set()).add(root)
    return found


def _message(raw: Any) -> tuple[str, str] | None:
    """(run id, root id) of a broker message of a Baton task; None for anything else."""
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, list):  # `unacked` keeps [message, exchange, routing key]
            envelope = envelope[0]
        headers = envelope.get("headers") or {}
        if headers.get("task") == DEADLINE_TASK:
            return None  # a timer carries no route
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        return str(args[0]), str(headers.get("root_id") or "")
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def repair(run_id: str) -> str:
    """Send a stuck run on from the first top-level stage that has not ended.

    Steps that completed do nothing when their messages come again (their claim says
    so); the step that was lost runs again. Returns the ref it was sent on from.
    """
    store = get_store()
    run = store.get_run(run_id) or {}
    plan = plans.get(run["plan"])
    records = store.get_steps(run_id)
    position = _first_open(plan, records)
    route = compile_route(plan, run_id, get_settings().segment_size, MAIN, position)
    assert route is not None
    route.apply_async(root_id=run.get("root") or run_id)
    return plan.sequences[MAIN][position].ref


def _first_open(plan: Plan, records: Mapping[str, Mapping[str, str]]) -> int:
    stages = plan.sequences[MAIN]
    for position, stage in enumerate(stages):
        ends = getattr(stage, "join_ref", stage.ref)  # a fork ends with its join
        if records.get(ends, {}).get("status") not in DONE_STEP_STATUSES:
            return position
    return len(stages) - 1  # every stage ended: the last one completes the run again


def describe(stuck: Iterable[StuckRun]) -> list[dict[str, Any]]:
    return [{"runId": s.run_id, "workflow": s.workflow, "status": s.status,
             "lastStep": s.last_step, "idleSeconds": round(s.idle_seconds, 1)}
            for s in stuck]

