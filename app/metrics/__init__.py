"""Baton's Prometheus metrics: a collector that reads Redis at scrape time, and the text a
`/metrics` endpoint serves.

`baton metrics --port N` serves them on their own; a web application mounts `render()`:

    from app.metrics import CONTENT_TYPE, render
    async def metrics(request): return Response(render(), media_type=CONTENT_TYPE)

Or register `BatonCollector` on a prometheus_client registry of its own.
"""

from __future__ import annotations

from functools import cache

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.metrics.collector import NAMES, BatonCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of `render()`'s text (Prometheus' text exposition format)."""


@cache
def metrics_registry() -> CollectorRegistry:
    """A registry holding Baton's collector, on the run store's Redis (REDIS_URL)."""
    from app.celery_app import all_queues
    from app.runtime.state import get_store

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatonCollector(get_store().client, all_queues))
    return registry


def render() -> bytes:
    """Baton's metrics now, as a `/metrics` endpoint answers (content type CONTENT_TYPE)."""
    return generate_latest(metrics_registry())


__all__ = [
    # Exposition
    "render", "CONTENT_TYPE", "metrics_registry",
    # Collector
    "BatonCollector", "NAMES",
]
