"""The Redis broker transport of Baton's workers: kombu's, with Redis refusing writes taken
as a lost connection.

A Redis out of memory (`maxmemory` with `noeviction`), a replica answering READONLY or a
primary that is down answers commands with errors that kombu counts as unrecoverable: the
worker's main process logs "Unrecoverable error" when it cannot acknowledge a message and
stops consuming while it stays alive. Counted as connection errors instead, a refused
acknowledgement is logged (the message comes back after the visibility timeout, and the
step's claim keeps a completed step from running again) and the consumer reconnects with
backoff until Redis takes writes again.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from app.store.connection import REFUSALS


class Transport(kombu_redis.Transport):
    connection_errors = kombu_redis.Transport.connection_errors + REFUSALS


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport (before any connection)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
