"""The metric aggregates' Redis keys and fields, and their parsing: no Redis calls here.

The run store's scripts that make a transition (claim, complete, fail and retry a step;
create and end a run) add to these in the same call (lua/lib.lua, its "Metrics" block, which
this module gives its bucket bounds and label cap), so the figures are right across every
worker process and machine, survive an exporter's restart, and cost no round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from app.store.keys import PREFIX

METRICS_PREFIX: Final = f"{PREFIX}:metrics"
RUN_METRICS: Final = f"{METRICS_PREFIX}:runs"
"""Hash: `started|<workflow>`, and the run-duration histogram (see `Histogram` fields)."""
STEP_METRICS: Final = f"{METRICS_PREFIX}:steps"
"""Hash: the step duration and queue-wait histograms, and `retries|<transformation>`."""
WAITING_STEPS: Final = f"{METRICS_PREFIX}:waiting"
"""Set of the keys of steps left waiting (WAIT, HUMAN) when recorded; checked when read."""


def label_set_key(kind: str) -> str:
    """Set of the label values a kind of label (`workflow`, `transformation`) has taken."""
    return f"{METRICS_PREFIX}:labels:{kind}"


BOUNDS_MS: Final = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
                    60_000, 120_000, 300_000)
"""Upper bounds of the duration histograms' buckets in ms (0.005 s .. 300 s; +Inf after).
Integers, so a script and this module put an observation in the same bucket exactly."""
LABEL_CAP: Final = 200
"""Distinct values a kind of label may take; further ones are counted under OTHER."""
OTHER: Final = "other"
WAIT_TYPES: Final = ("WAIT", "HUMAN")
"""The step types counted as waiting on the outside world."""


def lua_constants() -> dict[str, str]:
    """What the scripts' metrics code (lua/lib.lua, lua/metrics_prune.lua) is given, by
    placeholder: the names and numbers are written here only."""
    return {
        "__METRIC_RUNS__": RUN_METRICS,
        "__METRIC_STEPS__": STEP_METRICS,
        "__METRIC_WAITING__": WAITING_STEPS,
        "__METRIC_LABELS__": label_set_key(""),
        "__METRIC_BOUNDS__": ", ".join(str(b) for b in BOUNDS_MS),
        "__METRIC_LABEL_CAP__": str(LABEL_CAP),
        "__METRIC_OTHER__": OTHER,
        "__METRIC_WAIT_TYPES__": ", ".join(f"{kind} = true" for kind in WAIT_TYPES),
    }


def with_lua_constants(source: str) -> str:
    """A script's text with the metrics' placeholders replaced."""
    for placeholder, value in lua_constants().items():
        source = source.replace(placeholder, value)
    return source


@dataclass
class Histogram:
    """One label set's observations: `buckets[i]` counts those in bucket i alone (not
    cumulative; the last is +Inf), `sum_ms` their total in ms."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))
    sum_ms: int = 0

    @property
    def count(self) -> int:
        return sum(self.buckets)


Labels = tuple[str, str]
"""(name, status): a workflow or transformation name and a run or step status."""


@dataclass
class Aggregates:
    """Everything the scripts have counted, by metric and labels."""

    runs_started: dict[str, int] = field(default_factory=dict)
    run_duration: dict[Labels, Histogram] = field(default_factory=dict)
    step_duration: dict[Labels, Histogram] = field(default_factory=dict)
    step_wait: dict[Labels, Histogram] = field(default_factory=dict)
    step_retries: dict[str, int] = field(default_factory=dict)


_HISTOGRAMS: Final = {"run": "run_duration", "duration": "step_duration", "wait": "step_wait"}
"""A hash field's metric part -> the Aggregates attribute it fills."""


def parse_fields(fields: dict[str, str], into: Aggregates) -> None:
    """Fill `into` from a metrics hash. Fields: `<metric>|<status>|<bucket>|<name>` (a bucket
    count, bucket 1-based), `<metric>_ms|<status>|<name>` (a sum), `started|<name>`,
    `retries|<name>`; the name comes last, so it may hold any character."""
    for key, raw in fields.items():
        value = int(raw)
        metric, _, rest = key.partition("|")
        if metric == "started":
            into.runs_started[rest] = value
        elif metric == "retries":
            into.step_retries[rest] = value
        elif metric.endswith("_ms") and metric[:-3] in _HISTOGRAMS:
            status, _, name = rest.partition("|")
            _histogram(into, metric[:-3], name, status).sum_ms = value
        elif metric in _HISTOGRAMS:
            status, bucket, name = rest.split("|", 2)
            _histogram(into, metric, name, status).buckets[int(bucket) - 1] = value


def _histogram(into: Aggregates, metric: str, name: str, status: str) -> Histogram:
    found: dict[Labels, Histogram] = getattr(into, _HISTOGRAMS[metric])
    return found.setdefault((name, status), Histogram())


