"""The Redis broker transport of Baton's workers: kombu's, with Redis refusing writes taken
as a lost connection.

A Redis out of memory (`maxmemory` with `noeviction`), a replica answering READONLY or a
primary that is down answers commands with errors that kombu counts as unrecoverable: the
worker's main process logs "Unrecoverable error" when it cannot acknowledge a message and
stops consuming while it stays alive. Counted as connection errors instead, a refused
acknowledgement is logged (the message comes back after the visibility timeout, and the
step's claim keeps a completed step from running again) and the consumer reconnects with
backoff until Redis takes writes again.

A message the worker rejects back to its queue while Redis refuses writes stays in the
transport's unacknowledged set, to come back after the visibility timeout; its local
prefetch slot is freed all the same, or a worker whose prefetch is full (one message per
pool process) would never take another message.

A channel whose connection was lost and closed keeps the messages it held (one waiting for
its countdown, one still running): giving them back, or acknowledging one later, is a lost
connection too, not an unrecoverable error.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

from app.store.connection import REFUSALS

_LOST = kombu_redis.Transport.connection_errors + REFUSALS


class QoS(kombu_redis.QoS):
    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except _LOST:
            # Redis kept the message as unacknowledged: it is restored after the
            # visibility timeout; here only the local slot is given back
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            # A channel of a connection the consumer closed when it was lost: giving back
            # the messages it held at close, or acknowledging one that ends afterwards,
            # is a lost connection (kombu fails on the released client otherwise, and
            # Celery stops consuming). Those messages stay unacknowledged in Redis and
            # come back after the visibility timeout.
            raise redis.ConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel
    connection_errors = _LOST


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport (before any connection)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
