"""Celery's Redis result backend, waiting by polling instead of by subscription.

Clients follow runs in the run store and never wait on Celery results, yet Celery's
Redis backend subscribes the sending process to the result channel of every task it
publishes outside a worker and of every member of every group it builds (the group's
result barrier): one SUBSCRIBE per message, a thousand for a thousand-branch fork, and
an AsyncResult that talks to Redis when it is garbage-collected, even at interpreter
exit. Workers store results exactly as before (chords count on them); an explicit
`AsyncResult.get()` still works, by polling the stored result.
"""

from __future__ import annotations

from typing import Any

from celery.backends.base import SyncBackendMixin
from celery.backends.redis import RedisBackend


class RunResultBackend(RedisBackend):  # type: ignore[misc]
    """RedisBackend with the synchronous (polling) waiting of Celery's key-value backends."""

    supports_native_join = False

    @property
    def is_async(self) -> bool:
        return False

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None  # the sender does not wait on what it sends

    add_pending_result = SyncBackendMixin.add_pending_result
    remove_pending_result = SyncBackendMixin.remove_pending_result
    wait_for_pending = SyncBackendMixin.wait_for_pending
