"""Redis key names of the run store, in one place.

The keys of one run share a hash tag (`{run_id}`), so every script that touches a run
stays within one cluster slot. The scripts name a run's other keys from its run key in the
same way (lua/lib.lua): change both together.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "baton"
RUNS_INDEX: Final = f"{PREFIX}:runs"
"""Sorted set of run ids by creation time (for listing); the other run indexes below."""


def run_key(run_id: str) -> str:
    return f"{PREFIX}:run:{{{run_id}}}"


def refs_key(run_id: str) -> str:
    """Set of the step refs a run has recorded."""
    return f"{PREFIX}:run:{{{run_id}}}:refs"


def vars_key(run_id: str) -> str:
    """Hash of the run's variables (`workflow.variables`), one JSON value per name."""
    return f"{PREFIX}:run:{{{run_id}}}:vars"


def dynamic_key(run_id: str) -> str:
    """Hash of the steps a run defined at run time (dynamic fork branches): ref -> JSON."""
    return f"{PREFIX}:run:{{{run_id}}}:dynamic"


def blobs_key(run_id: str) -> str:
    """Set of the digests of a run's payloads kept once by content (lua/lib.lua `stash`)."""
    return f"{PREFIX}:run:{{{run_id}}}:blobs"


def blob_key(run_id: str, digest: str) -> str:
    """A payload (JSON text) of the run that records hold as `@<digest>`."""
    return f"{PREFIX}:run:{{{run_id}}}:blob:{digest}"


def step_key(run_id: str, ref: str) -> str:
    return f"{PREFIX}:step:{{{run_id}}}:{ref}"


def attempts_key(run_id: str, ref: str) -> str:
    """List of a step's failed attempts (JSON: attempt, startTime, endTime, worker, error)."""
    return f"{PREFIX}:step:{{{run_id}}}:{ref}:attempts"


def definition_key(digest: str) -> str:
    """A definition's JSON by digest; kept while an open run uses it (`<key>:runs`)."""
    return f"{PREFIX}:definition:{digest}"


def plan_key(digest: str) -> str:
    """The outline of a big definition's plan (app.compiler.pieces); `<key>:tasks` its pieces."""
    return f"{PREFIX}:plan:{digest}"


def idempotency_key(key: str) -> str:
    return f"{PREFIX}:idempotency:{key}"


def workflow_key(name: str) -> str:
    """Hash of a registered workflow's definitions: version -> JSON (kept without expiry)."""
    return f"{PREFIX}:workflow:{name}"


WORKFLOWS_INDEX: Final = f"{PREFIX}:workflows"
"""Set of the names of registered workflows."""


def cancel_events_key(run_id: str) -> str:
    """Set of the refs of steps the run's end cancelled whose onCancelled is still to be
    published (drained by state_events.cancelled)."""
    return f"{PREFIX}:run:{{{run_id}}}:cancel_events"


def parked_key(run_id: str) -> str:
    """List of the messages a paused run held back (JSON), sent again on resume."""
    return f"{PREFIX}:run:{{{run_id}}}:parked"


def aliases_key(run_id: str) -> str:
    """Set of the unsuffixed refs of loop steps, each a copy of its latest iteration."""
    return f"{PREFIX}:run:{{{run_id}}}:aliases"


def event_stream(sink: str) -> str:
    """The Redis stream a sink publishes to (`conductor`, `kafka:orders` -> baton:events:...)."""
    return f"{PREFIX}:events:{sink}"


EVENT_STREAM_LENGTH: Final = 100_000
"""Event streams are trimmed to about this many events (lua/lib.lua names them too)."""


def output_cache_key(kind: str, name: str, digest: str) -> str:
    """A cached output (JSON text, with the TTL of its cacheConfig): `kind` is `task:<type>`
    or `workflow`, `name` the task's name or the workflow's `name:version`, `digest` the
    SHA-256 of the resolved key. Shared by every run, so it has no run's hash tag."""
    return f"{PREFIX}:cache:{kind}:{name}:{digest}"


# -- the run index (lua/run_index.lua keeps it: change both together) -------------------------

RUNS_EXPIRING: Final = f"{RUNS_INDEX}:expiring"
"""Sorted set of ended runs (their index entries, JSON) by when their keys expire (ms)."""


def runs_by_status(status: str) -> str:
    """Sorted set of the ids of runs now in `status`, by creation time."""
    return f"{RUNS_INDEX}:by-status:{status}"


def runs_by_workflow(name: str) -> str:
    """Sorted set of the ids of a workflow's runs, by creation time."""
    return f"{RUNS_INDEX}:by-workflow:{name}"


def runs_by_workflow_status(name: str, status: str) -> str:
    """Sorted set of the ids of a workflow's runs now in `status`, by creation time."""
    return f"{RUNS_INDEX}:by-workflow-status:{status}:{name}"


def runs_by_correlation(correlation_id: str) -> str:
    """Sorted set of the ids of the runs of a correlation id, by creation time."""
    return f"{RUNS_INDEX}:by-correlation:{correlation_id}"
