"""A workflow's `rateLimitConfig`: how many of its runs are in flight at once, per key.

A run of a limited workflow takes a slot of its limit (the workflow's name, and the value
of `rateLimitKey` resolved against the run: `${workflow.input.customer}`) before its first
step is sent, and holds it until the run ends, however it ends (the run store's end hook
gives it back). Over the limit, policy QUEUE records the run RUNNING but waiting
(`waitingOn`) and parks a start message with the limit: whoever frees a slot sends it, in
the order the runs were submitted, and `baton.start_run` sends the run's first route
then. Policy REJECT refuses the run: the caller removes it and the error names the key
and the limit. The slots are the flow limits' own (app.store.limits), held by the run's
id without a lease: no worker runs a run. A slot whose end hook was lost (its process
died) is found when the limit is next full, or by the limit's timer while runs wait,
and given back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from celery import Task, chain

from app.celery_app import celery_app
from app.dsl.expressions import parse_parameter
from app.dsl.model import WorkflowDef
from app.errors import BatonError
from app.runtime.lifecycle import LifecycleError
from app.runtime.limits import TICKET, lease_ms, limit_store, send_limit_messages
from app.runtime.messages import message_of
from app.runtime.state import get_store, plans
from app.store import OPEN_RUN_STATUSES

START_RUN: Final = "baton.start_run"
PREFIX: Final = "workflow:"
"""A run limit's id is `workflow:<name>`, and `|<key value>` when it has a key."""
HOLD_MS: Final = 10 * 365 * 24 * 3600 * 1000
"""A run holds its slot until it ends: its end gives it back, not a lease."""


class RunLimitReached(BatonError):
    """A workflow's rateLimitConfig (policy REJECT) refused a run: its key is at its limit."""


class LimitFull(LifecycleError):
    """An ended run cannot start again now: its workflow's limit is full."""


@dataclass(frozen=True)
class RunLimit:
    """The slot a run of a limited workflow takes."""

    id: str
    name: str
    key: str
    concurrency: int
    reject: bool

    def describe(self) -> str:
        key = f" for key {self.key!r}" if self.key else ""
        return f"workflow {self.name!r}: {self.concurrency} run(s) at once{key}"


def run_limit(workflow: WorkflowDef, run_input: Mapping[str, Any],
              correlation_id: str | None) -> RunLimit | None:
    """The limit a new run of `workflow` with this input takes a slot of, if any."""
    config = workflow.rate_limit_config
    if config is None or config.concurrent_exec_limit <= 0:
        return None
    key = ""
    if config.rate_limit_key:
        scope = {"workflow": {"input": dict(run_input), "correlationId": correlation_id,
                              "workflowType": workflow.name, "version": workflow.version}}
        value = parse_parameter(config.rate_limit_key).resolve(scope)
        key = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    limit_id = f"{PREFIX}{workflow.name}" + (f"|{key}" if key else "")
    return RunLimit(limit_id, workflow.name, key, config.concurrent_exec_limit,
                    reject=config.policy == "REJECT")


def take(limit: RunLimit, run_id: str, *, then: Any = None, root: str,
         carry: Mapping[str, Any] | None = None) -> bool:
    """Take the run's slot: True when its route may be sent now. Over the limit, a REJECT
    raises RunLimitReached (the caller removes the run); a QUEUE parks the run's start,
    which `baton.start_run` carries out once a slot is handed to it: the run's route
    followed by `then` (a Celery signature), sent with `root` as its root id and in the
    place of the message `carry` was captured from (its route on, its fork membership:
    a SUB_WORKFLOW step's, whose route goes on after its child's)."""
    asked = _ask(limit, run_id, "")
    if asked == "full":
        # slots of runs that ended without giving theirs back (their end hook lost) come
        # back; then ask again, parking the start unless refused (a slot given back by a
        # run's end meanwhile is found too)
        _give_back_ended(limit.id)
        message = "" if limit.reject else json.dumps(
            _start_message(limit, run_id, then, root, carry))
        asked = _ask(limit, run_id, message)
    if asked in ("run", "duplicate"):  # duplicate: it holds the slot already
        return True
    if asked == "parked":
        limit_store().run_waits(run_id, f"limit {limit.id} ({limit.describe()})")
        return False
    raise RunLimitReached(
        f"rateLimitConfig: {limit.describe()} is full ({limit.concurrency} of "
        f"{limit.concurrency} in flight, policy REJECT): run not started")


def _ask(limit: RunLimit, run_id: str, message: str, ticket: bool = False) -> str:
    asked = limit_store().acquire(
        limit.id, run_id, message, lease_ms=lease_ms(), concurrency=limit.concurrency,
        interval_ms=0, name=f"{PREFIX}{limit.name}", key=limit.key, ticket=ticket,
        hold_ms=HOLD_MS)
    send_limit_messages(limit.id, asked.send, asked.timer_ms)
    return asked.verdict


def _start_message(limit: RunLimit, run_id: str, then: Any, root: str,
                   carry: Mapping[str, Any] | None) -> dict[str, Any]:
    place = {"chain": None, "chord": None, "group_id": None, "group_index": None,
             "root_id": root, **{k: v for k, v in (carry or {}).items()
                                 if k not in ("task", "args", "kwargs")}}
    return {"task": START_RUN, "args": [run_id],
            "kwargs": {"then": dict(then) if then is not None else None, "root": root,
                       "limit": [limit.id, limit.name, limit.key, limit.concurrency],
                       TICKET: [limit.id, run_id]},
            **place}


def _give_back_ended(limit_id: str) -> bool:
    """Give back the slots of runs that ended without giving theirs back (their end hook
    was lost with its process); True if any came back."""
    holders = limit_store().holders(limit_id)
    statuses = limit_store().run_statuses(holders) if holders else []
    ended = [h for h, s in zip(holders, statuses, strict=True) if s not in OPEN_RUN_STATUSES]
    for holder in ended:
        released = limit_store().release(limit_id, holder, lease_ms=lease_ms(), withdraw=True)
        send_limit_messages(limit_id, released.send, released.timer_ms)
    return bool(ended)


@contextmanager
def slot_again(run_id: str, verb: str) -> Iterator[Callable[[], None]]:
    """An ended run of a limited workflow that starts again (retry, rerun, restart) takes
    its slot again first; over the limit it is refused (LimitFull), whatever the policy:
    its start cannot wait in line. Yields what gives the slot back, called when the run
    does not start after all (and on an error); a slot the run held already is kept."""
    fields = get_store().get_run_fields(run_id, "runLimit", "plan")
    config = plans.get(fields["plan"]).definition.rate_limit_config \
        if fields.get("runLimit") and fields.get("plan") else None
    if config is None:
        yield lambda: None
        return
    limit_id = fields["runLimit"]
    name, _, key = limit_id[len(PREFIX):].partition("|")
    limit = RunLimit(limit_id, name, key, config.concurrent_exec_limit, reject=True)
    asked = _ask(limit, run_id, "")
    if asked == "full":  # see take
        _give_back_ended(limit_id)
        asked = _ask(limit, run_id, "")
    if asked == "full":
        raise LimitFull(f"run {run_id} cannot {verb}: rateLimitConfig: {limit.describe()} is "
                        f"full ({limit.concurrency} of {limit.concurrency} in flight); "
                        "try again once one of its runs ends")

    def give_back() -> None:
        if asked == "run":  # taken here, not held before
            run_ended(run_id, limit_id)

    try:
        yield give_back
    except BaseException:
        give_back()
        raise


def run_ended(run_id: str, limit_id: str) -> None:
    """A run that ended gives its slot back, or leaves the line if it still waited."""
    released = limit_store().release(limit_id, run_id, lease_ms=lease_ms(), withdraw=True)
    send_limit_messages(limit_id, released.send, released.timer_ms)


def timer_due(limit_id: str) -> None:
    """A run limit's timer: slots of runs that ended unnoticed come back."""
    _give_back_ended(limit_id)


@celery_app.task(name=START_RUN, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def start_run(self: Task, run_id: str, then: dict[str, Any] | None = None, root: str = "",
              limit: list[Any] | None = None, **kwargs: Any) -> Any:
    """A run waiting on its workflow's limit was handed a slot: it starts now."""
    from app.runtime.runs import NewRun, first_route, send_deadline

    ticket = kwargs.get(TICKET)
    if not limit or not isinstance(ticket, list):
        return None
    held = RunLimit(str(limit[0]), str(limit[1]), str(limit[2]), int(limit[3]), False)
    fields = get_store().get_run_fields(run_id, "status", "plan", "waitingOn")
    if fields.get("status") not in OPEN_RUN_STATUSES:
        run_ended(run_id, held.id)  # it ended while it waited: the slot goes on
        return None
    carry = {k: v for k, v in message_of(self).items() if k not in ("task", "args", "kwargs")}
    asked = _ask(held, run_id, json.dumps(_start_message(held, run_id, then, root, carry)),
                 ticket=True)
    # 'duplicate': another delivery took the slot; it started the run unless its process
    # died first (the run still says it waits)
    if asked != "run" and not (asked == "duplicate" and fields.get("waitingOn")):
        return None
    plan = plans.get(fields["plan"])
    route = first_route(NewRun(run_id, plan))
    if then is not None:
        route = chain(route, celery_app.signature(then))
    send_deadline(run_id, plan.definition, root or run_id)
    limit_store().run_started(run_id)
    # in this message's place: its route goes on after the run's, its fork counts that
    return self.replace(route)
