"""Delays in hops shorter than the broker's visibility timeout.

With Redis as broker, a worker holds a message with a countdown unacknowledged until it is
due; held past the visibility timeout it is delivered again, and the step would run twice.
So every delay (a WAIT, a workflow deadline, startDelay, a retry backoff) is sent as hops of
at most half the visibility timeout, each message carrying what is left of its delay.
"""

from __future__ import annotations

import time

from app.config import get_settings


def longest_hop() -> float:
    return get_settings().visibility_timeout / 2


def split_delay(seconds: float) -> tuple[float, float]:
    """(countdown of the next hop, seconds left after it) for a delay of `seconds`."""
    hop = min(max(seconds, 0.0), longest_hop())
    return hop, max(seconds - hop, 0.0)


def hop_until(due_ms: int) -> float:
    """Seconds to wait towards the epoch-millisecond time `due_ms`, at most one hop."""
    return max(0.0, min((due_ms - time.time() * 1000) / 1000, longest_hop()))
