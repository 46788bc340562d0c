"""Sending a run's messages to its queue variants, with its priority (see app.routing).

One place decides both for every message: Celery's router (`app.celery_app.route_task`)
calls `routed` at each send, whoever sends (the client, a step's chain, a chord's join,
a control task compiling a sub-route, a retry, a continuation, a timer, a resend after
pause or completion). A message's first argument is its run's id, so its routing facts
are read from the run record (`taskToDomain`, `priority`), once per run and process: they
are written when the run is created and never change.

A variant queue is not declared in advance: `VariantQueues` adds one on first use when it
is a variant of a declared queue, so `celery -A app worker -Q encode:gpu` consumes it and
a misspelt plain queue still fails loudly (task_create_missing_queues stays False).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from celery.app.amqp import AMQP, Queues
from kombu import Queue  # type: ignore[attr-defined]

from app.routing import (
    NO_DOMAIN,
    PRIORITY_STEPS,
    base_queue,
    broker_priority,
    domains_for,
    variant_queue,
)

ACTIVE_QUEUES_SECONDS: Final = 10.0
"""How long the queues that workers consume are trusted once asked (as Conductor's
activeWorkerLastPollTimeout, 10 s by default)."""
INSPECT_TIMEOUT: Final = 0.5
"""Seconds to wait for workers' answers when asking which queues they consume."""
_KEPT_RUNS: Final = 10_000


@dataclass(frozen=True)
class RunRouting:
    """A run's routing facts as its record keeps them."""

    task_to_domain: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0


_NONE = RunRouting()


class _RunRoutingCache:
    """Run id -> RunRouting, least recently used out past _KEPT_RUNS."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, RunRouting | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunRouting | None:
        """None when the id names no run (a message that is not a run's)."""
        with self._lock:
            if run_id in self._runs:
                self._runs.move_to_end(run_id)
                return self._runs[run_id]
        from app.runtime.state import get_store

        fields = get_store().get_run_fields(run_id, "workflowId", "taskToDomain", "priority")
        if not fields:
            return None  # not cached: a run is always recorded before its first message
        found = RunRouting(json.loads(fields.get("taskToDomain") or "{}"),
                           int(fields.get("priority") or 0))
        with self._lock:
            self._runs[run_id] = found
            while len(self._runs) > _KEPT_RUNS:
                self._runs.popitem(last=False)
        return found


run_routing = _RunRoutingCache()


class _ActiveQueues:
    """The queues some worker consumes, asked of the workers (`inspect active_queues`) at
    most every ACTIVE_QUEUES_SECONDS per process, and only for a list of domains."""

    def __init__(self) -> None:
        self._names: frozenset[str] = frozenset()
        self._asked = -ACTIVE_QUEUES_SECONDS
        self._lock = threading.Lock()

    def __contains__(self, queue: object) -> bool:
        with self._lock:
            if time.monotonic() - self._asked >= ACTIVE_QUEUES_SECONDS:
                self._names = frozenset(_consumed_queues())
                self._asked = time.monotonic()
            return queue in self._names

    def forget(self) -> None:
        """Ask again at the next look (tests, and a worker that just started)."""
        with self._lock:
            self._asked = -ACTIVE_QUEUES_SECONDS


active_queues = _ActiveQueues()


def _consumed_queues() -> Iterable[str]:
    from app.celery_app import celery_app

    replies = celery_app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    return {queue["name"] for queues in replies.values() for queue in queues or ()}


def pick_domain(queue: str, domains: list[str]) -> str | None:
    """Conductor's active domain: the first of `domains` whose queue variant a worker
    consumes; if none is, no domain when the list ends with NO_DOMAIN, else its last.

    A single domain is taken without asking (Conductor's rule gives it either way)."""
    if not domains:
        return None
    if len(domains) > 1:
        for domain in domains:
            if domain != NO_DOMAIN and variant_queue(queue, domain) in active_queues:
                return domain
    last = domains[-1]
    return None if last == NO_DOMAIN else last


def routed(
    name: str, route: dict[str, Any], args: Any, *, domain: bool = False,
    isolation: bool = False,
) -> dict[str, Any]:
    """`route` (the queue the task's name gives) for this message of its run, with the
    run's priority and, as asked, the queue variant of its domain (`domain`) and of its
    taskDefinition's executionNameSpace and isolationGroupId (`isolation`)."""
    if not args or not isinstance(args, list | tuple) or not isinstance(args[0], str):
        return route
    routing = run_routing.get(args[0])
    if routing is None:
        return route
    queue = str(route["queue"])
    chosen = None
    if domain:
        chosen = pick_domain(queue, domains_for(name.split(".", 1)[-1], routing.task_to_domain))
    namespace, group = _task_definition_parts(args) if isolation else (None, None)
    return {**route, "queue": variant_queue(queue, chosen, namespace, group),
            "priority": broker_priority(routing.priority)}


def _task_definition_parts(args: Any) -> tuple[str | None, str | None]:
    """(executionNameSpace, isolationGroupId) of the step's taskDefinition, if it has one."""
    if len(args) < 3 or not isinstance(args[1], str) or not isinstance(args[2], str):
        return None, None
    from app.runtime.state import PlanMissing, plans

    try:
        spec = plans.get(args[2]).steps.get(args[1])
    except PlanMissing:
        return None, None
    definition = spec.task.task_definition if spec is not None else None
    if definition is None:
        return None, None
    return definition.execution_name_space, definition.isolation_group_id


class VariantQueues(Queues):  # type: ignore[misc]
    """Celery's queue table, which adds a variant of a declared queue when it is named."""

    def __missing__(self, name: str) -> Queue:
        from app.celery_app import all_queues, make_queue

        base = base_queue(name)
        if base is not None and base in all_queues():
            return cast(Queue, self.add(make_queue(name)))
        return cast(Queue, super().__missing__(name))


class VariantAMQP(AMQP):  # type: ignore[misc]
    """Celery's AMQP part with the VariantQueues table (`Celery(amqp=...)`)."""

    queues_cls = VariantQueues


BINDINGS: Final = "_kombu.binding.*"
"""kombu's Redis transport keeps each exchange's bindings in a set of this name."""
SEPARATOR: Final = "\x06\x16"
"""kombu's Redis transport's separator, in binding entries and priority list names."""


def queue_lists(name: str) -> list[str]:
    """The Redis lists that hold a queue's waiting messages, one per priority step."""
    return [name if step == 0 else f"{name}{SEPARATOR}{step}" for step in PRIORITY_STEPS]


def queue_length(client: Any, name: str) -> int:
    """How many messages wait on a queue, whatever their priority."""
    pipe = client.pipeline(transaction=False)
    for key in queue_lists(name):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def used_queues(client: Any) -> list[str]:
    """Baton's declared queues, and every variant of them that a message was sent to."""
    from app.celery_app import all_queues

    declared = all_queues()
    found = dict.fromkeys(declared)
    for key in client.scan_iter(match=BINDINGS):
        for member in client.smembers(key):
            text = member.decode() if isinstance(member, bytes) else str(member)
            queue = text.split(SEPARATOR)[-1]
            if base_queue(queue) in declared:
                found[queue] = None
    return list(found)
