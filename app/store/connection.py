"""The Redis client of the run store, made from a URL (connections open lazily)."""

from __future__ import annotations

import re
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
REFUSED_IN_SCRIPT: Final = re.compile(r"@user_script:\s*\d+: -(OOM|READONLY|MASTERDOWN|TRYAGAIN) ")
"""The same answers to a write inside a script, which the client raises as a plain
ResponseError naming the script's line (Redis checks a script with no flags at its first
write, not before it runs)."""


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                health_check_interval=30)
