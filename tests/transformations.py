"""Transformations used only by the tests, loaded through BATON_TRANSFORMATIONS."""

from __future__ import annotations

import time
from typing import Any

from app import StepPolicy, TerminalError, transformation


class Refused(Exception):
    """A transformation's own error, to see it carried to the run."""


@transformation(queue="echo")
def echo(**values: Any) -> dict[str, Any]:
    """Return the input as the output."""
    return dict(values)


@transformation(queue="echo")
def add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b}


@transformation(queue="faulty")
def refuse(reason: str = "no") -> dict[str, Any]:
    raise Refused(reason)


@transformation(queue="faulty")
def unserialisable() -> Any:
    return {"when": object()}


@transformation(queue="echo")
def scalar(value: Any = 1) -> Any:
    return value


def _count(key: str) -> int:
    """How often this key was tried, kept in Redis so every worker process sees it."""
    from app.runtime.state import get_store

    return int(get_store().client.incr(f"test:attempts:{key}"))


@transformation(queue="faulty", policy=StepPolicy(retry_count=2, retry_delay_seconds=0.05))
def flaky(key: str, failures: int) -> dict[str, Any]:
    """Fail the first `failures` attempts for `key`, then succeed."""
    attempt = _count(key)
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed")
    return {"attempt": attempt}


@transformation(queue="faulty", retry_count=3)
def doomed(key: str) -> dict[str, Any]:
    _count(key)
    raise TerminalError("the file is corrupt")


@transformation(queue="echo")
def gate(key: str, seconds: float = 30, **values: Any) -> dict[str, Any]:
    """Block until the test opens the gate `key` (a Redis list), then echo the input; fail
    with TimeoutError once `seconds` have passed."""
    from app.runtime.state import get_store

    _count(f"gate:{key}")
    # short waits, each well inside any socket timeout, up to a deadline
    deadline = time.monotonic() + seconds
    while get_store().client.blpop([f"test:gate:{key}"], timeout=1) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {key} was never opened")
    return dict(values)


@transformation(queue="echo")
def gate_then_refuse(key: str, seconds: float = 30) -> dict[str, Any]:
    """Block until the test opens the gate `key`, then fail."""
    gate(key, seconds)
    raise Refused(f"refused after gate {key}")


@transformation(queue="faulty")
def fails_until_fixed(key: str) -> dict[str, Any]:
    """Fail until the test sets `test:fixed:<key>`; count every attempt."""
    from app.runtime.state import get_store

    attempt = _count(key)
    if not get_store().client.get(f"test:fixed:{key}"):
        raise RuntimeError(f"broken (attempt {attempt})")
    return {"attempt": attempt}


@transformation(queue="faulty")
def hold(key: str, tag: str) -> dict[str, Any]:
    """Log this execution (tag and pid), then block until the test opens gate `key:tag`."""
    import os
    import time

    import redis

    from app.runtime.state import get_store

    client = get_store().client
    client.rpush(f"test:exec:{key}", f"{tag}:{os.getpid()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.blpop([f"test:gate:{key}:{tag}"], timeout=1) is not None:
                return {"tag": tag}
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.1)  # the tests restart Redis under it: the gate is not the fault
    raise TimeoutError(f"gate {key}:{tag} was never opened")


@transformation(queue="faulty")
def crash(key: str) -> dict[str, Any]:
    """Kill the worker process running it, every time (as an out-of-memory kill would)."""
    import os

    _count(key)
    os._exit(1)


@transformation(queue="faulty")
def logged(run: str, ref: str, ms: int = 0, fail: bool = False) -> dict[str, Any]:
    """Log this execution (run, ref, route root, pid, start), work `ms`, then maybe fail.

    With `fail`, it fails until the test sets `test:sm:fixed:<run>`.
    """
    import json
    import os
    import time

    from app.runtime.state import get_store
    from app.store import ROUTE_ROOT

    client = get_store().client
    client.rpush("test:sm:exec", json.dumps({"run": run, "ref": ref, "root": ROUTE_ROOT.get(),
                                             "pid": os.getpid(), "start": time.time()}))
    time.sleep(ms / 1000)
    if fail and not client.get(f"test:sm:fixed:{run}"):
        raise Refused(f"{ref} is broken until fixed")
    return {"ref": ref}


@transformation(queue="faulty")
def nap(key: str, seconds: float) -> dict[str, Any]:
    """Log that it started, then sleep without touching Redis."""
    import time

    _count(key)
    time.sleep(seconds)
    return {"slept": seconds}


@transformation(queue="faulty")
def slow_flaky(key: str, failures: int, seconds: float) -> dict[str, Any]:
    """Count the attempt, take `seconds`, and fail the first `failures` attempts."""
    import time

    attempt = _count(key)
    time.sleep(seconds)
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed")
    return {"attempt": attempt}


@transformation(queue="faulty", policy=StepPolicy(timeout_seconds=1))
def stubborn(seconds: float) -> dict[str, Any]:
    """Ignore the soft time limit (a transformation that will not stop): only a kill ends it."""
    import time

    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            pass
    return {"slept": seconds}


@transformation(queue="echo")
def counted(counter: str, value: Any = None) -> dict[str, Any]:
    """Count this execution under `counter` (test:attempts:<counter>) and return the count."""
    return {"value": value, "calls": _count(counter)}


@transformation(queue="late")
def late(**values: Any) -> dict[str, Any]:
    """Echo, on a queue of its own that only a worker started late consumes."""
    return dict(values)
