"""Output caching at run time: a step or run whose cache key was seen completes with the
output kept then, without running (app.dsl.cache says which cacheConfig acts).

A step's key is resolved after its input, against the run's scope with the step's input
parameters as roots of their own (`${uri}` is the input's `uri`); it is kept per task type
and name, so two tasks whose keys read the same never share an output. A run's key is
resolved against the run's input, correlationId, name and version, the same when the run
starts and when it completes, and kept per workflow name and version. A key that resolves
to null or "" caches nothing. Outputs are written only once their step or run completed.

Reading the cache with Redis down raises CacheUnreachable, so the step runner sends the
message back to its queue as it does when it cannot claim a step; a write that fails only
leaves the output uncached.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from app.compiler.plan import StepSpec
from app.config import get_settings
from app.dsl.cache import cache_key
from app.dsl.expressions import WORKFLOW_ROOT, Scope
from app.dsl.model import WorkflowDef
from app.errors import BatonError, StoreUnavailable
from app.runtime.scope import record_document
from app.runtime.state import get_store, plans
from app.store.records import dumps

log = logging.getLogger(__name__)

WORKFLOW_KIND: Final = "workflow"
_RUN_KEY_FIELDS: Final = ("input", "correlationId", "workflowType", "version")
"""The fields of a run's record its cache key reads: known when it starts, unchanged after."""


class CacheUnreachable(StoreUnavailable):
    """Raised when the output cache cannot be read (Redis down): nothing was decided."""


@dataclass(frozen=True)
class Lookup:
    """What a step found in the output cache, and where its output is to be kept."""

    kind: str = ""
    name: str = ""
    digest: str | None = None
    """SHA-256 of the resolved key; None when the step caches nothing."""
    ttl: int = 0
    output: dict[str, Any] | None = None
    """The cached output when the key was found."""

    @property
    def found(self) -> bool:
        return self.output is not None


NOT_CACHED: Final = Lookup()


def look_up(spec: StepSpec, step_input: Any, scope: Scope) -> Lookup:
    """Resolve a step's cache key and read what is kept under it (NOT_CACHED without one)."""
    config = spec.task.cache_config
    key = cache_key(config)
    if key is None or config is None:
        return NOT_CACHED
    if isinstance(step_input, Mapping):
        scope = {**scope, **step_input}  # Orkes builds keys from the task's input: `${uri}`
    digest = key_digest(key.resolve(scope))
    if digest is None:
        return NOT_CACHED
    kind = f"task:{spec.type}"
    try:
        text = get_store().cached_output(kind, spec.name, digest)
    except StoreUnavailable as exc:
        raise CacheUnreachable(str(exc)) from exc
    output = _document(text)
    return Lookup(kind, spec.name, digest, config.ttl_in_second,
                  output if isinstance(output, dict) else None)


def keep(lookup: Lookup, output: dict[str, Any]) -> None:
    """Keep the output of a step that completed by running (a found one is not kept again:
    its TTL runs from when it was computed)."""
    if lookup.digest is None or lookup.found:
        return
    _write(lookup.kind, lookup.name, lookup.digest, dumps(output), lookup.ttl)


def cached_run_output(workflow: WorkflowDef, fields: Mapping[str, str]) -> str | None:
    """The output (JSON text) a new run completes with at once, from `fields` (its record
    as it is about to be written); None to run it."""
    config = workflow.cache_config
    key = cache_key(config)
    if key is None:
        return None
    digest = key_digest(key.resolve(_run_scope(fields)))
    if digest is None:
        return None
    text = get_store().cached_output(WORKFLOW_KIND, _workflow_name(workflow), digest)
    limit = get_settings().max_run_bytes
    if text is None or _document(text) is None or (limit and len(text.encode()) > limit):
        return None  # an output over the run's limit now: the run computes it anew
    return text


def keep_run_output(run_id: str, digest: str | None = None) -> None:
    """Keep the output of a run that has just completed, if its workflow caches it
    (`digest`: its plan's, read by the caller already).

    Called where the run ended, after the fact: what fails here leaves the output
    uncached and must not reach the caller, whose own write has succeeded.
    """
    try:
        _keep_run_output(run_id, digest)
    except BatonError as exc:
        log.warning("output of run %s not cached: %s", run_id, exc)


def _keep_run_output(run_id: str, digest: str | None) -> None:
    store = get_store()
    if digest is None:
        digest = store.get_run_fields(run_id, "plan").get("plan")
    if not digest:
        return
    workflow = plans.get(digest).definition
    config = workflow.cache_config
    key = cache_key(config)
    if key is None or config is None:
        return
    fields = store.get_run_fields(run_id, "output", *_RUN_KEY_FIELDS)
    resolved = key_digest(key.resolve(_run_scope(fields)))
    if resolved is not None and "output" in fields:
        _write(WORKFLOW_KIND, _workflow_name(workflow), resolved, fields["output"],
               config.ttl_in_second)


def key_digest(value: Any) -> str | None:
    """The digest a resolved key is kept under; None for a key that resolved to nothing."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _run_scope(fields: Mapping[str, str]) -> dict[str, Any]:
    document = record_document({k: fields[k] for k in _RUN_KEY_FIELDS if k in fields})
    return {WORKFLOW_ROOT: document}


def _workflow_name(workflow: WorkflowDef) -> str:
    return f"{workflow.name}:{workflow.version}"


def _document(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # not written by Baton: a miss, the output is computed anew


def _write(kind: str, name: str, digest: str, output_json: str, ttl: int) -> None:
    try:
        get_store().cache_output(kind, name, digest, output_json, ttl)
    except StoreUnavailable as exc:  # unreachable, or refusing writes (StoreRefused)
        log.warning("output of %s %s not cached: %s", kind, name, exc)
