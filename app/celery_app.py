"""The Celery application and its configuration: the one module every runtime layer imports.

Routing is generated from the transformation registry: each transformation's task goes
to its own queue, Baton's I/O-bound system tasks (HTTP, EVENT) to the I/O queue, its
other control tasks to the control queue, and an undeclared queue fails loudly
(`task_create_missing_queues=False`). A slow remote server thus holds an I/O worker at
most, never the joins, switches and loops of every run.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Final

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_init
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from app import broker, registry
from app.config import Settings, get_settings
from app.queue_variants import routed
from app.routing import PRIORITY_STEPS
from app.store.base import SCHEDULED_AT

CONTROL_PREFIX = "baton."
IO_TASKS: Final = frozenset({"baton.http", "baton.event"})
"""Baton's system tasks that wait on other systems: they run on settings.io_queue, and
their time limit also allows for an HTTP deadline."""
SCHEDULED_HEADER: Final = "baton_scheduled"
"""Message header: when the message was sent, or is due when sent with a delay (epoch ms);
a step's queue wait runs from it to the step's start (its claim records it)."""
SOFT_LIMIT_GRACE = 5.0
"""Seconds between a control task's soft limit (its step fails, naming the limit) and the
kill; a quarter of the limit when that is shorter."""


def _configure(app: Celery, settings: Settings) -> None:
    transport: dict[str, int] = {"visibility_timeout": settings.visibility_timeout}
    broker_transport = {
        **transport,
        "unacked_restore_interval": settings.unacked_restore_interval,
        "unacked_restore_throttle": settings.unacked_restore_throttle,
        # ten lists per queue, one per priority, step 0 served first (app.routing)
        "priority_steps": list(PRIORITY_STEPS),
    }
    app.conf.update(
        broker_url=settings.redis_url,
        # "<class>+<url>" is Celery's form for a backend class of one's own on a URL
        result_backend=f"app.backend:RunResultBackend+{settings.redis_url}",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=settings.task_acks_late,
        task_reject_on_worker_lost=settings.task_reject_on_worker_lost,
        worker_prefetch_multiplier=settings.worker_prefetch_multiplier,
        worker_max_memory_per_child=settings.worker_max_memory_per_child or None,
        broker_transport_options=broker_transport,
        result_backend_transport_options=transport,
        result_expires=settings.result_expires,
        # steps keep no result nobody reads (app.compiler.canvas), but a failed step's
        # error (masked) stays where Celery's tools look for it, whatever its place
        task_store_errors_even_if_ignored=True,
        worker_send_task_events=settings.worker_send_task_events,
        task_send_sent_event=settings.task_send_sent_event,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=(
            settings.worker_cancel_long_running_tasks_on_connection_loss
        ),
        task_create_missing_queues=False,
        task_default_queue=settings.control_queue,
        task_routes=(route_task,),
        task_annotations=(ControlTimeLimits(),),
        task_queues=[make_queue(name) for name in dict.fromkeys(
            [settings.control_queue, settings.io_queue])],
        worker_hijack_root_logger=False,
        broker_connection_retry=True,
    )


def route_task(name: str, args: Any = None, *_: Any, **__: Any) -> dict[str, Any] | None:
    """Celery router: a transformation's task to its queue, HTTP and EVENT to the I/O
    queue, the other control tasks to Baton's control queue; each to its run's queue
    variant and with its run's priority (app.queue_variants)."""
    if name.startswith(registry.TASK_PREFIX):
        found = registry.transformations().get(name[len(registry.TASK_PREFIX) :])
        if found is None:
            return None
        return routed(name, {"queue": found.queue}, args, domain=True, isolation=True)
    if name in IO_TASKS:
        return routed(name, {"queue": get_settings().io_queue}, args, isolation=True)
    if name.startswith(CONTROL_PREFIX):
        return routed(name, {"queue": get_settings().control_queue}, args)
    return None


def all_queues() -> list[str]:
    """Every queue a deployment needs a worker on: control, I/O, then the transformations'."""
    settings = get_settings()
    return list(dict.fromkeys([settings.control_queue, settings.io_queue, *registry.queues()]))


def control_time_limits(name: str) -> tuple[float, float] | None:
    """(hard, soft) time limit of a control task, None for a transformation's task.

    Past the soft limit the task's step fails with a message naming the limit; past the
    hard one the pool process is killed and the worker's main process records the failure.
    Only a prefork pool enforces them.
    """
    if not name.startswith(CONTROL_PREFIX):
        return None
    settings = get_settings()
    hard = float(settings.control_time_limit)
    if name in IO_TASKS:
        hard = max(hard, settings.http_deadline + SOFT_LIMIT_GRACE)
    return hard, hard - min(SOFT_LIMIT_GRACE, hard / 4)


class ControlTimeLimits:
    """Celery task annotation: every `baton.*` task gets the control time limits."""

    def annotate(self, task: Any) -> dict[str, float] | None:
        limits = control_time_limits(str(task.name))
        if limits is None:
            return None
        return {"time_limit": limits[0], "soft_time_limit": limits[1]}


def declare_queues() -> None:
    """Declare Baton's own queues and every registered transformation's queue.

    Called again whenever a transformation registers: once Celery has built its queue
    table (the first send or worker start does), new queues are added to that table too.
    """
    names = all_queues()
    celery_app.conf.task_queues = [make_queue(name) for name in names]
    built = celery_app.amqp.__dict__.get("queues")
    if built is not None:
        for name in names:
            if name not in built:
                built.add(make_queue(name))


def make_queue(name: str) -> Queue:
    # Exchange and routing key of its own: a bare Queue(name) is bound to the default
    # exchange with the default key, and every queue would receive every message.
    exchange = Exchange(name, type="direct")  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name)  # type: ignore[no-untyped-call]


def reload_settings() -> None:
    """Re-read the environment into the app; only before the first connection is made."""
    get_settings.cache_clear()
    _configure(celery_app, get_settings())
    declare_queues()


broker.install()  # Redis refusing writes must not stop a worker consuming (app.broker)
celery_app = Celery("baton", amqp="app.queue_variants:VariantAMQP")
_configure(celery_app, get_settings())


@worker_init.connect  # type: ignore[untyped-decorator]
def _refuse_to_start_without_transformations(**_: Any) -> None:
    from app.loader import ensure_loaded

    ensure_loaded()


@before_task_publish.connect  # type: ignore[untyped-decorator]
def _stamp_scheduled_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp each message with when it is sent, or due (its `eta`): no Redis call."""
    if headers is None:
        return
    scheduled = int(time.time() * 1000)
    eta = headers.get("eta")
    if eta:
        try:
            scheduled = max(scheduled, int(datetime.fromisoformat(str(eta)).timestamp() * 1000))
        except ValueError:
            pass  # not Celery's ISO time: the send time stands
    headers[SCHEDULED_HEADER] = scheduled


@task_prerun.connect  # type: ignore[untyped-decorator]
def _take_scheduled_time(task: Any = None, **_: Any) -> None:
    """Hand the running message's stamp to the run store, for the claim of its step."""
    value = task.request.get(SCHEDULED_HEADER) if task is not None else None
    SCHEDULED_AT.set(value if isinstance(value, int) else 0)


@task_postrun.connect  # type: ignore[untyped-decorator]
def _forget_scheduled_time(**_: Any) -> None:
    SCHEDULED_AT.set(0)
