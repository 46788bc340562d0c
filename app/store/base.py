"""The run store's plumbing: its client, its scripts, and the end of a run reported out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

import redis

from app.errors import StoreRefused, StoreUnavailable
from app.store.connection import REFUSALS, REFUSED_IN_SCRIPT
from app.store.records import Ended
from app.store.scripts import Scripts

ROUTE_ROOT: ContextVar[str] = ContextVar("baton_route_root", default="")
"""The Celery root id of the route the running task belongs to ('' outside a task).

Every write a task makes to its run is fenced with it; the task class sets it before each
task runs.
"""
SCHEDULED_AT: ContextVar[int] = ContextVar("baton_scheduled_at", default=0)
"""When the running task's message was sent, or due when sent with a delay (epoch ms; 0
when unknown). The Celery app sets it from the message's header before each task runs; a
step's claim records it as the step's scheduledTime (its queue wait ends at its start)."""


class StoreBase:
    """What every part of the run store shares.

    `on_end` is called with every run that a call of the store ended, so that what follows
    a run's end (its parent's step, its failureWorkflow, its children) happens wherever it
    ended, explicitly, rather than through hooks registered at import.
    """

    def __init__(self, client: redis.Redis, retention_seconds: int,
                 on_end: Callable[[Ended], None] | None = None) -> None:
        self.client = client
        self.retention = retention_seconds
        self.on_end = on_end
        self.scripts = Scripts(client)

    def _ended(self, reply: Any, run_id: str) -> bool:
        """True if a script ended its run, after telling `on_end`."""
        if not isinstance(reply, list):
            return bool(reply)
        if self.on_end is not None:
            self.on_end(Ended.from_reply(run_id, reply))
        return True

    def call(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        registered = self.scripts[script]
        return self.guard(lambda: registered(keys=keys, args=args))

    def execute(self, pipe: Any) -> list[Any]:
        return list(self.guard(pipe.execute))

    @staticmethod
    def guard(call: Any) -> Any:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis: {exc}") from exc
        except REFUSALS as exc:
            raise StoreRefused(f"Redis refuses writes ({type(exc).__name__}): {exc}") from exc
        except redis.ResponseError as exc:
            if REFUSED_IN_SCRIPT.search(str(exc)):
                raise StoreRefused(f"Redis refuses writes (in a script): {exc}") from exc
            raise
