"""Transformations under flow limits, for tests/test_flow_limits.py (loaded by its workers
through BATON_TRANSFORMATIONS). Each step notes itself in Redis, so the tests see what ran
at once across every worker process."""

from __future__ import annotations

import os
import time
from typing import Any

from app import transformation
from app.limits import Limit

# How many steps of one key run now, and the most that ever did, in one atomic call.
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


def _noted(key: str, seconds: float) -> dict[str, Any]:
    from app.runtime.state import get_store

    client = get_store().client
    client.rpush(f"test:limits:{key}:starts", f"{time.time():.6f}:{os.getpid()}")
    client.eval(_ENTER, 2, f"test:limits:{key}:running", f"test:limits:{key}:max")
    try:
        time.sleep(seconds)
    finally:
        client.decr(f"test:limits:{key}:running")
    return {"pid": os.getpid()}


@transformation(queue="faulty", limit=Limit(concurrency=2))
def two_at_once(key: str, seconds: float = 0.1) -> dict[str, Any]:
    """At most two of these run at once, across every worker."""
    return _noted(key, seconds)


@transformation(queue="faulty", limit=Limit(rate=5, per_seconds=1))
def five_a_second(key: str) -> dict[str, Any]:
    """At most five of these start in any second."""
    return _noted(key, 0)


@transformation(queue="faulty", limit=Limit(concurrency=1, key="${workflow.input.customer}"))
def one_per_customer(key: str, seconds: float = 0.1) -> dict[str, Any]:
    """One at a time for each customer; customers do not wait on one another."""
    return _noted(key, seconds)


@transformation(queue="faulty")
def noted(key: str, seconds: float = 0.1) -> dict[str, Any]:
    """No limit of its own: a workflow task sets one through its taskDefinition."""
    return _noted(key, seconds)


@transformation(queue="faulty", limit=Limit(rate=10, per_seconds=1, key="${workflow.input.tenant}"))
def ten_a_second(key: str) -> dict[str, Any]:
    """At most ten of these start in any second, for each tenant."""
    return _noted(key, 0)
