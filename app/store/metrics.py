"""Reads the metric aggregates (app.store.metric_fields) and the states counted when read:
steps waiting on the outside world, the broker's queue lengths. Knows nothing of
Prometheus (app.metrics shows what this reads).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import redis

from app.store.base import StoreBase
from app.store.metric_fields import (
    RUN_METRICS,
    STEP_METRICS,
    WAIT_TYPES,
    WAITING_STEPS,
    Aggregates,
    parse_fields,
    with_lua_constants,
)


@dataclass(frozen=True)
class Snapshot:
    """The aggregates and what is read now: steps waiting, broker queue lengths."""

    aggregates: Aggregates
    waiting: dict[str, int]
    """Steps waiting now by type (WAIT, HUMAN)."""
    queue_depth: dict[str, int]
    """Messages ready in each queue's broker lists (every priority), by queue."""


class MetricsStore:
    """Reads the aggregates, and the states that are counted at read time, in few trips."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        text = (resources.files("app.store") / "lua" / "metrics_prune.lua").read_text()
        self._prune = client.register_script(with_lua_constants(text))

    def snapshot(self, queue_lists: dict[str, list[str]]) -> Snapshot:
        """Read everything; `queue_lists` names each queue's broker lists (one a priority)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(RUN_METRICS)
        pipe.hgetall(STEP_METRICS)
        pipe.smembers(WAITING_STEPS)
        for lists in queue_lists.values():
            for name in lists:
                pipe.llen(name)
        replies = StoreBase.guard(pipe.execute)
        aggregates = Aggregates()
        parse_fields(replies[0], aggregates)
        parse_fields(replies[1], aggregates)
        lengths = iter(replies[3:])
        depth = {queue: sum(next(lengths) for _ in lists) for queue, lists in queue_lists.items()}
        return Snapshot(aggregates, self._waiting(sorted(replies[2])), depth)

    def _waiting(self, keys: Iterable[str]) -> dict[str, int]:
        """Steps that still wait, by type; the keys of those that no longer do are dropped
        from the set (a step's end takes its key off when it can; a cancelled run's, an
        expired run's or a timed-out step's go here)."""
        keys = list(keys)
        counts = dict.fromkeys(WAIT_TYPES, 0)
        if not keys:
            return counts
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "status", "taskType")
        gone = []
        for key, (status, kind) in zip(keys, StoreBase.guard(pipe.execute), strict=True):
            if status == "IN_PROGRESS" and kind in WAIT_TYPES:
                counts[kind] += 1
            else:
                gone.append(key)
        if gone:
            # in one script that looks again: a key waiting again meanwhile stays
            StoreBase.guard(lambda: self._prune(keys=[WAITING_STEPS, *gone]))
        return counts
