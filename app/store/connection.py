"""The Redis client of the run store, made from a URL (connections open lazily)."""

from __future__ import annotations

from typing import Final

import redis

REFUSALS: Final = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
"""Answers of a Redis that is up but refuses writes for now (out of memory with
`noeviction`, a read-only replica, a primary that is down)."""


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                health_check_interval=30)
