"""WAIT and HUMAN: steps that wait without holding a worker slot.

A WAIT with a `duration` or an `until` sends `baton.wake` to itself with a countdown (in
hops shorter than the broker's visibility timeout, so a long wait is never redelivered
early) and completes when it is due. A WAIT without either, and a HUMAN step, park the
rest of their route in the step's record and stop; completing the step from outside
(`complete_waiting_step`) records its output and sends the parked route on, chord
membership included, so a waiting step inside a fork branch still closes its fork.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from celery import Task

from app.celery_app import celery_app
from app.delays import hop_until
from app.errors import BatonError
from app.runtime import state_events
from app.runtime.containment import contained
from app.runtime.lifecycle import still_running
from app.runtime.operators import OperatorError, system_task
from app.runtime.runs import check_output
from app.runtime.scope import build_scope, record_document
from app.runtime.state import get_store, plans
from app.runtime.step import (
    Outcome,
    StepContext,
    StepTask,
    _workflow_output,
    record_ref,
    stop_route,
)
from app.runtime.system_retries import keep_message, superseded_wait
from app.runtime.wait_timeouts import watch
from app.store import RunStatus, StepStatus, now_ms

WAKE_TASK: Final = "baton.wake"
RESUME_TASK: Final = "baton.resume"
_UNITS: Final = {"d": 86400, "day": 86400, "days": 86400, "h": 3600, "hour": 3600,
                 "hours": 3600, "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
                 "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}
_PART: Final = re.compile(r"\s*(\d+)\s*([a-zA-Z]+)\s*")
_UNTIL_FORMATS: Final = ("%Y-%m-%d %H:%M %Z", "%Y-%m-%d %H:%M %z", "%Y-%m-%d %H:%M",
                         "%Y-%m-%d")


# a waiting step's type: HTTP and EVENT wait only with asyncComplete (app.runtime.async_complete)
_COMPLETED_FROM_OUTSIDE: Final = frozenset({"WAIT", "HUMAN", "HTTP", "EVENT"})


class NotWaiting(BatonError):
    """Raised when a step completed from outside is not a waiting step of a running run."""


def parse_duration(text: str) -> float:
    """Seconds in a Conductor duration such as "1d 2h 3m 4s" or "30 seconds"."""
    total, position = 0, 0
    for match in _PART.finditer(text):
        if match.start() != position or match.group(2).lower() not in _UNITS:
            raise OperatorError(f"duration '{text}' is not like '1d 2h 3m 4s'")
        total += int(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
    if position != len(text) or not text.strip():
        raise OperatorError(f"duration '{text}' is not like '1d 2h 3m 4s'")
    return float(total)


def parse_until(text: str) -> float:
    """Epoch seconds of a Conductor `until` ("2026-11-25 14:00 UTC", "2026-11-25")."""
    for form in _UNTIL_FORMATS:
        try:
            moment = datetime.strptime(text.strip(), form)
        except ValueError:
            continue
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise OperatorError(f"until '{text}' is not like '2026-11-25 14:00 UTC'")


def _wake(run_id: str, ref: str, digest: str, due_ms: int, final: bool,
          iteration: int | None) -> Any:
    frame: dict[str, Any] = {"final": True} if final else {}
    if iteration is not None:
        frame["iteration"] = iteration
    return celery_app.signature(WAKE_TASK, args=(run_id, ref, digest, due_ms), kwargs=frame,
                                immutable=True, countdown=hop_until(due_ms))


def _wait(context: StepContext) -> Outcome:
    given = context.input if isinstance(context.input, dict) else {}
    if given.get("duration") or given.get("until"):
        seconds = (parse_duration(str(given["duration"])) if given.get("duration")
                   else parse_until(str(given["until"])) - now_ms() / 1000)
        due = now_ms() + int(max(seconds, 0) * 1000)
        route = _wake(context.run_id, context.spec.ref, context.plan.digest, due,
                      context.final, context.iteration)
        watch(context)
        keep_message(context)  # for a retry of the step: it waits again
        return Outcome({"waitUntil": due}, then=route, status=StepStatus.IN_PROGRESS)
    return _park(context)


def park(context: StepContext, output: Any = None) -> Outcome:
    """Keep the step IN_PROGRESS with `output`, its route parked until it is completed."""
    request = context.task.request
    parked = {"chain": request.chain, "chord": request.chord, "group_id": request.group,
              "group_index": request.group_index, "root_id": request.root_id,
              "final": context.final, "iteration": context.iteration,
              "task_id": request.id}
    watch(context)
    keep_message(context)  # for a retry of the step: it waits again
    return Outcome(output or {}, status=StepStatus.IN_PROGRESS, stop=True,
                   parked=json.dumps(parked))


def _park(context: StepContext) -> Outcome:
    return park(context)


wait = system_task("WAIT")(_wait)
human = system_task("HUMAN")(_park)


@celery_app.task(name=WAKE_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
@contained(lambda ref, digest, due_ms, final=False, iteration=None: record_ref(ref, iteration))
def wake(
    self: Task, run_id: str, ref: str, digest: str, due_ms: int, final: bool = False,
    iteration: int | None = None,
) -> Any:
    """Complete a timed WAIT when it is due, or wait another hop."""
    if not still_running(self, run_id):
        return None
    if now_ms() < due_ms:
        return self.replace(_wake(run_id, ref, digest, due_ms, final, iteration))
    if superseded_wait(run_id, record_ref(ref, iteration), due_ms):
        stop_route(self)  # a retry of the step waits again, with a timer of its own
        return None
    if not _complete(run_id, ref, digest, {}, final, iteration):
        stop_route(self)
    return None


@celery_app.task(name=RESUME_TASK, bind=True, base=StepTask)  # type: ignore[untyped-decorator]
def resume(self: Task, run_id: str, ref: str) -> None:
    """Carry on the route a waiting step parked (Celery sends what follows)."""


def complete_waiting_step(run_id: str, ref: str, output: Any = None) -> None:
    """Complete a waiting step (WAIT, HUMAN, asyncComplete) from outside and send the rest
    of its route on.

    `output` is None or a JSON object, merged into the output the step recorded (as
    Conductor's task update by reference name does); InvalidInput (or PayloadTooLarge)
    before anything is read or written otherwise.
    """
    output = check_output(output)
    store = get_store()
    stored = store.get_step_records(run_id, [ref]).get(ref, {})
    record, parked_text = record_document(stored), stored.get("parked")
    if record.get("taskType") not in _COMPLETED_FROM_OUTSIDE or not parked_text:
        raise NotWaiting(f"step '{ref}' of run {run_id} is not a WAIT, HUMAN or asyncComplete "
                         "step waiting to be completed")
    output = check_output({**(record.get("output") or {}), **output})
    parked = json.loads(parked_text)
    run = store.get_run(run_id) or {}
    base = ref.rsplit("__", 1)[0] if parked.get("iteration") is not None else ref
    if not _complete(run_id, base, run.get("plan", ""), output, parked["final"],
                     parked.get("iteration")):
        raise NotWaiting(f"step '{ref}' of run {run_id} is no longer waiting")
    if parked.get("chain") or parked.get("chord"):
        celery_app.send_task(
            RESUME_TASK, args=(run_id, ref), chain=parked.get("chain"),
            chord=parked.get("chord"), group_id=parked.get("group_id"),
            group_index=parked.get("group_index"), root_id=parked.get("root_id"))


def _complete(run_id: str, ref: str, digest: str, output: dict[str, Any], final: bool,
              iteration: int | None) -> bool:
    """Complete a waiting step (and the run, if it is the last); False if it was not waiting.

    The store completes it only if it is still IN_PROGRESS, so of callers racing to
    complete one step (threads, a redelivered timer) exactly one wins.
    """
    store, plan = get_store(), plans.get(digest)
    recorded_as = record_ref(ref, iteration)
    reads = list(dict.fromkeys([recorded_as, *(plan.output_reads if final else ())]))
    run, variables, records = store.read_state(run_id, reads)
    step = record_document(records.get(recorded_as, {}))
    # a paused run's step may complete; what follows it waits for the resume
    open_run = run.get("status") in (RunStatus.RUNNING, RunStatus.PAUSED)
    if not open_run or step.get("status") != StepStatus.IN_PROGRESS:
        return False
    scope = build_scope(run, records, None, variables)
    run_output = _workflow_output(plan, scope, ref, step.get("input"), output) if final else None
    done = store.complete_step(run_id, recorded_as, input=step.get("input"), output=output,
                               run_output=run_output, final=final,
                               alias=ref if iteration is not None else None,
                               expect=StepStatus.IN_PROGRESS)
    if done is not None:
        state_events.step_ended(run_id, recorded_as, plan)
    return done is not None

