"""The live stream of a run page: server-sent events carrying only what changed.

One stream per open page. The server reads the run at most every POLL_SECONDS (slower once
the run has ended) in a worker thread, compares the snapshot with the one it sent last,
and sends an event only when something differs; a comment line every KEEPALIVE_SECONDS
keeps proxies from closing a quiet stream. The browser never polls: EventSource reconnects
by itself, and a new stream begins with the whole snapshot.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import anyio
from starlette.requests import Request

POLL_SECONDS: Final = 0.5
ENDED_POLL_SECONDS: Final = 2.0
"""An ended run changes only when someone retries or reruns it."""
KEEPALIVE_SECONDS: Final = 15.0
_OPEN: Final = frozenset({"RUNNING", "PAUSED"})

Reader = Callable[[], dict[str, Any] | None]
Differ = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def run_events(request: Request, read: Reader, differ: Differ,
                     poll: float = POLL_SECONDS) -> AsyncIterator[str]:
    """`snapshot` first, then `changes` events, `gone` if the run leaves the store."""
    last: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    while not await request.is_disconnected():
        current = await anyio.to_thread.run_sync(read)
        if current is None:
            yield event("gone", {})
            return
        if last is None:
            yield event("snapshot", current)
            quiet_since = time.monotonic()
        else:
            found = differ(last, current)
            if found:
                yield event("changes", found)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
        last = current
        status = (current.get("run") or {}).get("status")
        await anyio.sleep(poll if status in _OPEN else max(poll, ENDED_POLL_SECONDS))
