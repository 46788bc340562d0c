"""Baton's Prometheus metrics, read from Redis at scrape time.

The counters and histograms are kept in Redis by the run store's scripts, in the call that
makes each transition (app.store.metric_fields), so any number of exporters, on any
machine, started at any time, show the same figures; the gauges (steps waiting, queue
depth) are read when scraped. Nothing here writes a run or a step. Labels are bounded:
workflow and transformation names (at most LABEL_CAP each, then `other`), statuses, queue
and limit names; never a run id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.queue_variants import queue_lists
from app.store.limits import LimitState, LimitStore
from app.store.metric_fields import BOUNDS_MS, Histogram, Labels
from app.store.metrics import MetricsStore, Snapshot

NAMES = (
    "baton_runs_started_total", "baton_runs_ended_total", "baton_run_duration_seconds",
    "baton_step_duration_seconds", "baton_step_queue_wait_seconds", "baton_step_retries_total",
    "baton_steps_waiting", "baton_steps_waiting_on_limit", "baton_queue_messages",
)
"""Every metric the collector exports, as its samples are named (counters with `_total`)."""

_LE = [f"{bound / 1000:g}" for bound in BOUNDS_MS] + ["+Inf"]


class BatonCollector(Collector):
    """A prometheus_client collector of Baton's metrics: register it on a registry, or call
    `app.metrics.render()`.

    `client` is the run store's Redis (decoded responses); `queues` gives the queues whose
    depth is shown (called at each scrape, as transformations may register late).
    """

    def __init__(self, client: redis.Redis, queues: Callable[[], list[str]]) -> None:
        self.metrics = MetricsStore(client)
        self.limits = LimitStore(client)
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        snapshot = self.metrics.snapshot({q: queue_lists(q) for q in self.queues()})
        yield from run_metrics(snapshot)
        yield from step_metrics(snapshot)
        yield from gauges(snapshot, self.limits.states())


def run_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    found = snapshot.aggregates
    started = CounterMetricFamily("baton_runs_started", "Runs started, by workflow name.",
                                  labels=["workflow"])
    for name, count in sorted(found.runs_started.items()):
        started.add_metric([name], count)
    yield started
    ended = CounterMetricFamily("baton_runs_ended", "Runs ended, by workflow name and status.",
                                labels=["workflow", "status"])
    for (name, status), histogram in sorted(found.run_duration.items()):
        ended.add_metric([name, status], histogram.count)
    yield ended
    yield histogram_family(
        "baton_run_duration_seconds",
        "Run duration from its start (or restart) to its end, by workflow and status.",
        "workflow", found.run_duration)


def step_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    found = snapshot.aggregates
    yield histogram_family(
        "baton_step_duration_seconds",
        "Duration of a step's attempt, from its claim to its end, by transformation (task "
        "name) and status (a retried attempt is FAILED).", "transformation", found.step_duration)
    yield histogram_family(
        "baton_step_queue_wait_seconds",
        "Time a step's message waited from its send (or due time) to the step's start, by "
        "transformation and the status its attempt ended with.", "transformation",
        found.step_wait)
    retries = CounterMetricFamily("baton_step_retries", "Step attempts retried, by "
                                  "transformation.", labels=["transformation"])
    for name, count in sorted(found.step_retries.items()):
        retries.add_metric([name], count)
    yield retries


def gauges(snapshot: Snapshot, limits: list[LimitState]) -> Iterator[Metric]:
    waiting = GaugeMetricFamily("baton_steps_waiting", "Steps waiting now to be completed from "
                                "outside, by type (WAIT, HUMAN).", labels=["type"])
    for kind, count in sorted(snapshot.waiting.items()):
        waiting.add_metric([kind], count)
    yield waiting
    on_limit = GaugeMetricFamily("baton_steps_waiting_on_limit", "Steps parked now until a "
                                 "flow limit frees a slot or a start, by limit name.",
                                 labels=["limit"])
    by_name: dict[str, int] = defaultdict(int)
    for state in limits:
        by_name[state.name] += state.waiting  # each key of a limit has its own line
    for name, count in sorted(by_name.items()):
        on_limit.add_metric([name], count)
    yield on_limit
    depth = GaugeMetricFamily("baton_queue_messages", "Messages waiting in a Celery queue "
                              "(every priority), by queue.", labels=["queue"])
    for queue, count in sorted(snapshot.queue_depth.items()):
        depth.add_metric([queue], count)
    yield depth


def histogram_family(name: str, documentation: str, label: str,
                     found: Mapping[Labels, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label, "status"])
    for (value, status), histogram in sorted(found.items()):
        cumulative, buckets = 0, []
        for le, count in zip(_LE, histogram.buckets, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        family.add_metric([value, status], buckets, histogram.sum_ms / 1000)
    return family
