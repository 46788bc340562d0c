"""The largest broker message each measurement sends, client and worker alike.

Every process that publishes (the benchmark's client, the worker's pool processes) runs
this hook: it wraps the `dumps` kombu's Redis transport turns a message into the string
it LPUSHes, so the size recorded is the size the message has in Redis, without
serialising anything a second time (a Celery publish signal hands over the body before
serialisation; sizing it there would cost more the larger the message, so more on one
side than the other). Only task messages count (their headers name a task), not events.

Which measurement is running is a Redis key the client sets; a process re-reads it at
most every PHASE_TTL_S and writes its own maximum only when it grows, so the cost is a
comparison per message and a few Redis commands a second, the same on both sides.
No timing and no process management here.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Final

import redis

PHASE_KEY: Final = "bench:message_phase"
"""The label of the measurement running now; absent: nothing is recorded."""
SIZES_PREFIX: Final = "bench:largest_message:"
"""Hash per label: pid -> the largest message that process sent under that label."""
PHASE_TTL_S: Final = 0.05
"""How stale a process's idea of the label may be; the client waits longer than this."""


class _Tracker:
    """One process's view: the label it last read, and its largest message under it."""

    def __init__(self) -> None:
        self.pid = 0
        self.client: redis.Redis | None = None
        self.phase: str | None = None
        self.read_at = float("-inf")
        self.largest = 0

    def record(self, size: int) -> None:
        now = time.monotonic()
        if now - self.read_at > PHASE_TTL_S or self.pid != os.getpid():
            self._refresh(now)
        if self.phase is not None and size > self.largest and self.client is not None:
            self.largest = size
            self.client.hset(SIZES_PREFIX + self.phase, str(self.pid), size)

    def _refresh(self, now: float) -> None:
        if self.pid != os.getpid():  # a forked pool process: its own connection
            url = os.environ.get("REDIS_URL")
            self.client = redis.Redis.from_url(url) if url else None
            self.pid, self.phase = os.getpid(), None
        self.read_at = now
        raw = self.client.get(PHASE_KEY) if self.client is not None else None
        phase = raw.decode() if raw is not None else None
        if phase != self.phase:
            self.phase, self.largest = phase, 0


_TRACKER = _Tracker()
_MEASUREMENTS = itertools.count(1)


def install() -> None:
    """Wrap the transport's `dumps` in this process, once."""
    from kombu.transport import redis as transport

    original = transport.dumps
    if getattr(original, "bench_sizing", False):
        return

    def dumps(value: Any, *args: Any, **kwargs: Any) -> Any:
        text = original(value, *args, **kwargs)
        if isinstance(value, dict) and "task" in (value.get("headers") or ()):
            _TRACKER.record(len(text))
        return text

    dumps.bench_sizing = True  # type: ignore[attr-defined]
    transport.dumps = dumps


def begin(client: redis.Redis, name: str) -> str:
    """Start recording under a new label for `name`, returned once every process will see it.

    The label is new each time: a process resets its maximum only when the label changes,
    and the same shape and side may be measured twice in a row.
    """
    label = f"{name}#{next(_MEASUREMENTS)}"
    client.set(PHASE_KEY, label)
    time.sleep(PHASE_TTL_S * 1.5)  # outside any timed span: measure() calls it first
    return label


def largest(client: redis.Redis, label: str) -> int | None:
    """The largest task message any process sent under `label`, None if none was seen."""
    key = SIZES_PREFIX + label
    sizes = [int(value) for value in client.hvals(key)]
    client.delete(key)
    return max(sizes) if sizes else None
