"""What a route weighs in a broker message, so that routes are cut by bytes, not by stages.

A Celery message carries its task and the rest of its route: a chain's next tasks (the
body's `chain` embed) and, for a chord member, the chord's body (`chord` option). So the
message that starts a segment carries the whole segment, and a fork member's carries its
branch plus everything after the fork. Keeping each segment within a byte budget bounds
every message; a task that compiles a sub-route when it runs (continue, a wide fork, a
switch, a loop) gives it what the budget leaves beside the route the task's own message
still carries. Weights are estimated per signature from its own JSON (the sum of a
composite's parts), never by serialising a whole route again.
"""

from __future__ import annotations

import json
from typing import Any, Final

from celery import current_task
from celery.canvas import Signature

from app.config import get_settings

SIGNATURE_OVERHEAD: Final = 160
"""Bytes Celery adds to a signature when it sends it (task id, root and parent ids,
reply_to, group fields): its JSON before sending does not hold them yet."""
CHAIN_OVERHEAD: Final = 160
"""Bytes of a chain's own wrapping (task, subtask_type, options, its id once sent)."""
CHORD_OVERHEAD: Final = 320
"""Bytes of a chord's own wrapping (its header group and body, their options and ids)."""
FLOOR: Final = 1024
"""The least budget a sub-route is given however much its context carries: one step and
a continue fit, so a route always moves on."""


def weigh(signature: Signature) -> int:
    """The bytes one task's signature adds to a message (not for chains or chords)."""
    return len(json.dumps(signature, separators=(",", ":"))) + SIGNATURE_OVERHEAD


def route_budget() -> int:
    """Bytes a route compiled now may weigh: the setting, less what the message of the task
    compiling it carries beside it (its chain's rest and chord body ride along when the
    task replaces itself with the route), and at least FLOOR."""
    return max(get_settings().route_bytes - context_weight(), FLOOR)


def context_weight() -> int:
    """Bytes of route the running task's message carries besides the task (0 outside a task)."""
    if not current_task:  # a proxy: false outside a task
        return 0
    request: Any = current_task.request
    carried = [part for part in (request.chain, request.chord) if part]
    if not carried:
        return 0
    # they were sent once already: their JSON holds the ids Celery adds
    return len(json.dumps(carried, separators=(",", ":")))
