"""Flow limits at run time: a step takes its slot before its work, or waits without a worker.

A step of a limited transformation asks its limit once its claim says RUN. Over the
limit, its claim is undone (the step is SCHEDULED again, noting what it waits on), its
message (from this step on, route and fork membership and all) is parked with the limit
and the worker moves on. Whoever frees a slot (a step's end, a timer when the next start
is due or a lease ran out) is handed the next parked message in the same script and
sends it; the message carries a ticket, so its step finds the slot already its own.
A slot's lease is renewed by a thread of the worker while the step runs: a worker killed
while holding one gives it back within the lease, and a handed message its sender never
sent is parked again then. Steps with no limit cost nothing here: no Redis command.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Final

from celery import Task
from celery.exceptions import Ignore

from app.celery_app import celery_app
from app.config import get_settings
from app.dsl.expressions import Parameter, parse_parameter
from app.dsl.fields import LIMITED_TYPES
from app.limits import Limit, task_limit
from app.registry import TASK_PREFIX, transformations
from app.runtime.messages import message_of, send_message
from app.runtime.scope import build_scope
from app.runtime.state import get_store
from app.runtime.step_task import stop_route
from app.store.limits import LimitStore, StepClaim, limit_key
from app.store.records import SlotAsk, SlotFree

log = logging.getLogger(__name__)
TICKET: Final = "limit_ticket"
"""Keyword argument of a message handed a slot: [limit id, holder]."""
PUMP_TASK: Final = "baton.limit_pump"
HANDED_PRIORITY: Final = 0
MAX_TIMER_SECONDS: Final = 3600.0
"""A timer further off is sent this far ahead and looks again then (below any visibility
timeout, so the broker never delivers it twice)."""


@dataclass
class Held:
    """A slot (or a start) a running step holds under its limit."""

    limit_id: str
    holder: str
    leased: bool
    """It holds a slot of a concurrency limit (or a start handed to it), with a lease;
    a step that took a start under a rate alone holds nothing to give back."""
    released: bool = False
    handed: bool = False
    """A ticket: its slot was handed to a message whose step may not have started."""


PARKED: Final = Held("", "", leased=False, released=True)
"""What `acquire` returns for a step it parked: its route is stopped, return at once."""


@lru_cache(maxsize=4)
def _limit_store(client: Any) -> LimitStore:
    return LimitStore(client)


def limit_store() -> LimitStore:
    return _limit_store(get_store().client)


def lease_ms() -> int:
    return int(get_settings().limit_lease_seconds * 1000)


def step_limit(task: Task, spec: Any, policy: Any) -> Limit | None:
    """The limit of a step: only a transformation's steps (SIMPLE or DYNAMIC, run by its own
    task) have one."""
    # by the step's own type: a message may run a step of another type before its own
    # (a folded JOIN runs in the message of the transformation step after it)
    if policy is None or spec.type not in LIMITED_TYPES or not task.name.startswith(TASK_PREFIX):
        return None
    found = transformations().get(task.name[len(TASK_PREFIX):])
    default = found.limit if found is not None else None
    defined = spec.task.task_definition
    if defined is None:
        return default if default is not None and default.active else None
    return _limit_of(default, defined.concurrent_exec_limit, defined.rate_limit_per_frequency,
                     defined.rate_limit_frequency_in_seconds)


@lru_cache(maxsize=1024)
def _limit_of(default: Limit | None, concurrency: int | None, rate: int | None,
              per: int | None) -> Limit | None:
    """task_limit, once per transformation default and counts (not each step)."""
    return task_limit(default, SimpleNamespace(
        concurrent_exec_limit=concurrency, rate_limit_per_frequency=rate,
        rate_limit_frequency_in_seconds=per))


@lru_cache(maxsize=1024)
def _waiting_on(limit_id: str, limit: Limit) -> str:
    return f"limit {limit_id} ({limit.describe()})"


def slot_ask(task_name: str, request: Any, limit: Limit | None) -> SlotAsk | None:
    """What the step's claim asks of its limit, to take the slot in the same call: only a
    limit with no key (a key is resolved against the step's scope, which the claim reads)
    and a message not handed a slot (its ticket goes the long way). The claim names the
    holder as `acquire` does: `<run>|<ref>|<attempt>`."""
    if limit is None or limit.key is not None or TICKET in (request.kwargs or {}):
        return None
    return _slot_ask(task_name[len(TASK_PREFIX):], lease_ms(), limit.concurrency,
                     limit.interval_ms)


@lru_cache(maxsize=1024)
def _slot_ask(name: str, lease: int, concurrency: int, interval_ms: int) -> SlotAsk:
    return SlotAsk(limit_key(name), lease, concurrency, interval_ms)


def acquire(task: Task, run_id: str, recorded_as: str, attempts: int, limit: Limit | None,
            scope: Mapping[str, Any], taken: bool = False) -> Held | None:
    """Take the step's slot; None when it has no limit, PARKED when it must wait (its route
    is then stopped; a fork member raises Ignore, so its fork does not count it yet).

    A step asks as `<run>|<ref>|<attempt>`: a message delivered again after it parked (its
    claim undone, so the same attempt) finds its parked copy and keeps one in line; a
    retry, or a delivery after its worker died mid-step, asks anew, and a dead holder's
    slot comes back with its lease. `taken`: the claim took the slot already (slot_ask).
    """
    if taken and limit is not None:  # (slot_ask asks only for a message with no ticket)
        held = Held(task.name[len(TASK_PREFIX):], f"{run_id}|{recorded_as}|{attempts}",
                    leased=limit.concurrency > 0)
        if held.leased:
            _renewer.add(held)
        return held
    ticket = _take_ticket(task, run_id, recorded_as)
    if limit is None:
        if ticket is not None:  # handed a slot, and limited no more since
            release(Held(ticket[0], ticket[1], True, handed=True))
        return None
    name = task.name[len(TASK_PREFIX):]
    key = _key_value(limit, scope, run_id, str(task.request.id or ""))
    limit_id = name if key is None else f"{name}|{key}"
    if ticket is not None and ticket[0] != limit_id:
        release(Held(ticket[0], ticket[1], True, handed=True))
        ticket = None
    holder = ticket[1] if ticket is not None else f"{run_id}|{recorded_as}|{attempts}"
    parked_before = ticket is not None  # only a parked message carries a ticket
    store = limit_store()
    claim = StepClaim(run_id, recorded_as, str(task.request.id or ""),
                      _waiting_on(limit_id, limit))
    # the message is captured only once the limit is reached (most steps never need it),
    # or at once while this process saw the limit full lately: one call fewer to park
    message = _capture(task, limit_id, holder) if _full_lately(limit_id) else ""
    while True:
        asked = store.acquire(
            limit_id, holder, message, lease_ms=lease_ms(), concurrency=limit.concurrency,
            interval_ms=limit.interval_ms, name=name, key=key or "",
            ticket=ticket is not None, step=claim)
        send_limit_messages(limit_id, asked.send, asked.timer_ms)
        if asked.verdict == "duplicate":  # another delivery holds it
            ticket, holder, message = None, _new_holder(run_id, recorded_as), ""
        elif asked.verdict == "full":
            message = _capture(task, limit_id, holder)
        else:
            break
    if asked.verdict == "run":
        _full_since.pop(limit_id, None)
        held = Held(limit_id, holder, leased=limit.concurrency > 0)
        if held.leased:
            _renewer.add(held)
        if parked_before:
            store.started(run_id, recorded_as)
        return held
    _full_since[limit_id] = time.monotonic()  # parked, its claim undone in the same call
    stop_route(task)
    if task.request.chord:
        raise Ignore()
    return PARKED


_full_since: dict[str, float] = {}
"""When this process last saw each limit full (a step of it parked)."""
FULL_LATELY_SECONDS: Final = 1.0


def _full_lately(limit_id: str) -> bool:
    seen = _full_since.get(limit_id)
    return seen is not None and time.monotonic() - seen < FULL_LATELY_SECONDS


def _capture(task: Task, limit_id: str, holder: str) -> str:
    return json.dumps(message_of(task, **{TICKET: [limit_id, holder]}))


def slot_free(held: Held | None) -> SlotFree | None:
    """The slot a running step holds, to give back in the call that records its output
    (then `release(held, freed)` hands it on if others wait)."""
    if held is None or held.released or not held.leased or held.handed:
        return None
    return SlotFree(limit_key(held.limit_id), held.holder)


def release(held: Held | None, freed: SlotFree | None = None) -> None:
    """Give a step's slot back at its end (idempotent) and send what it frees; `freed`:
    the call that recorded its output gave it back already."""
    if held is None or held.released or not held.leased:
        return
    held.released = True
    _renewer.discard(held)
    if freed is not None and not freed.others_wait:
        return
    released = limit_store().release(held.limit_id, held.holder, lease_ms=lease_ms(),
                                     ticket=held.handed)
    send_limit_messages(held.limit_id, released.send, released.timer_ms)


def give_back(task: Task, run_id: str, recorded_as: str, held_back: bool) -> None:
    """A message handed a slot whose step will not run now (done, paused, cancelled, stale):
    the slot goes to the next in line. One `held_back` with its paused or failed run waits
    on the run now, no more on the limit."""
    ticket = _take_ticket(task, run_id, recorded_as)
    if ticket is not None:
        release(Held(ticket[0], ticket[1], True, handed=True))
        if held_back:
            limit_store().started(run_id, recorded_as)


@celery_app.task(name=PUMP_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def pump(limit_id: str, due_ms: int) -> None:
    """A limit's timer: a start is due, or a lease ran out; hand out what is free."""
    from app.runtime import run_limits  # it builds on this module

    if limit_id.startswith(run_limits.PREFIX):
        run_limits.timer_due(limit_id)  # runs' slots have no lease: look at their runs
    released = limit_store().release(limit_id, "", lease_ms=lease_ms(), timer_ms=due_ms)
    send_limit_messages(limit_id, released.send, released.timer_ms)


def send_limit_messages(limit_id: str, messages: list[str], timer_ms: int) -> None:
    """Send the messages a limit handed slots to, and its timer if it wants one. A handed
    message goes first in its queue (kombu's priority step 0): it waited its turn in
    the limit's line already, and its slot is held, idle, until its step starts."""
    for message in messages:
        send_message(json.loads(message), priority=HANDED_PRIORITY)
    if timer_ms:
        countdown = min(max(timer_ms / 1000 - time.time(), 0.0), MAX_TIMER_SECONDS)
        celery_app.send_task(PUMP_TASK, args=[limit_id, timer_ms], countdown=countdown)


def _take_ticket(task: Task, run_id: str, recorded_as: str) -> tuple[str, str] | None:
    """The slot a message was handed, taken off its request (a retry or a message kept for
    `retry` is sent from the request: it asks afresh)."""
    kwargs = task.request.kwargs
    if not kwargs or TICKET not in kwargs:
        return None
    task.request.kwargs = {k: v for k, v in kwargs.items() if k != TICKET}
    ticket = kwargs[TICKET]
    if not (isinstance(ticket, list) and len(ticket) == 2
            and str(ticket[1]).startswith(f"{run_id}|{recorded_as}|")):
        return None  # a fused message's ticket of an earlier step, already taken
    return str(ticket[0]), str(ticket[1])


def _new_holder(run_id: str, recorded_as: str) -> str:
    return f"{run_id}|{recorded_as}|{uuid.uuid4().hex[:12]}"


def run_ended(run_id: str) -> None:
    """A run ended from outside (cancel, terminate): the slots its running steps hold come
    back once their processes are killed, a third of the lease and a second from now,
    rather than when the whole lease ends (a step that runs on renews its lease first)."""
    grace_ms = lease_ms() // 3 + 1000
    for limit_id, holders in limit_store().holders_of(f"{run_id}|").items():
        timer_ms = limit_store().expire(limit_id, holders, grace_ms=grace_ms)
        send_limit_messages(limit_id, [], timer_ms)


@lru_cache(maxsize=256)
def _key_parameter(key: str) -> Parameter:
    return parse_parameter(key)


def _key_value(limit: Limit, scope: Mapping[str, Any], run_id: str, task_id: str) -> str | None:
    """The value of the limit's key for this step, as text."""
    if limit.key is None:
        return None
    parameter = _key_parameter(limit.key)
    roots = parameter.roots()
    refs = sorted(root for root in roots if root != "workflow" and root not in scope)
    if refs or ("workflow" in roots and "input" not in scope.get("workflow", {})):
        # the claim read only what the step's input needs: read what the key needs too
        run, variables, records = get_store().read_state(run_id, refs)
        scope = {**scope, **build_scope(run, records, task_id, variables)}
    value = parameter.resolve(scope)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class _Renewer:
    """One thread per worker process renewing the leases of the slots its steps hold.

    Most steps end long before their lease needs renewing; a step only adds its slot to a
    dict and takes it out again (each one store under the GIL, no lock), and the thread
    copies the dict when it wakes."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], None] = {}
        self._started = threading.Lock()
        self._pid = 0

    def add(self, held: Held) -> None:
        self._held[held.limit_id, held.holder] = None
        if self._pid != os.getpid():  # none yet in this (forked) process
            with self._started:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    threading.Thread(target=self._run, name="baton-limit-leases",
                                     daemon=True).start()

    def discard(self, held: Held) -> None:
        self._held.pop((held.limit_id, held.holder), None)

    def _run(self) -> None:
        while True:
            time.sleep(get_settings().limit_lease_seconds / 3)
            held: dict[str, list[str]] = {}
            for limit_id, holder in list(self._held):  # copied in one step, under the GIL
                held.setdefault(limit_id, []).append(holder)
            for limit_id, holders in held.items():
                try:
                    limit_store().renew(limit_id, sorted(holders), lease_ms=lease_ms())
                except Exception:  # Redis away: the next round tries again
                    log.warning("could not renew the leases of limit %s", limit_id,
                                exc_info=True)


_renewer = _Renewer()
