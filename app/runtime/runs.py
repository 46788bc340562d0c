"""Creating runs: the record a run starts with, written atomically before any message.

Used by the client (`submit_workflow`) and by operators that start runs of their own
(SUB_WORKFLOW, START_WORKFLOW), so a child run is recorded exactly like a submitted one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app import registry
from app.compiler.canvas import compile_route
from app.compiler.plan import Plan, build_plan, document_digest
from app.config import get_settings
from app.dsl.model import WorkflowDef
from app.dsl.state_changes import status_sink
from app.dsl.validate import check_definition
from app.errors import Problem
from app.gc_pause import without_gc
from app.payloads import InvalidPayload, check_payload
from app.routing import routing_fields
from app.runtime.cache import cached_run_output
from app.runtime.masking import masked_fields_record
from app.runtime.run_limits import RunLimit, RunLimitReached, run_limit, take
from app.runtime.state import get_store, plan_weight, plans
from app.store import RunStatus, now_ms


class InvalidInput(InvalidPayload):
    """A run's input that is not a JSON object of JSON data, or nests too deeply.

    Too large an input raises PayloadTooLarge (its sibling under InvalidPayload).
    """


@dataclass(frozen=True)
class Parent:
    """The step of another run that a run was started by (SUB_WORKFLOW)."""

    run_id: str
    ref: str
    digest: str
    root: str | None = None
    """Root id of the parent's route, which the child's steps are sent on."""
    depth: int = 1
    """How many runs deep the child is (a child of a top-level run is 1)."""


@dataclass(frozen=True)
class NewRun:
    run_id: str
    plan: Plan | None
    """None when an idempotency key named a run that already exists."""
    cached: bool = False
    """The run was recorded COMPLETED with a cached output (its workflow's cacheConfig):
    it has no route to send."""
    limit: RunLimit | None = None
    """The slot of its workflow's rateLimitConfig the run takes before it starts."""
    idempotency_key: str | None = None


@without_gc
def create_run(
    workflow: WorkflowDef,
    given: Mapping[str, Any] | None,
    *,
    correlation_id: str | None = None,
    idempotency_key: str | None = None,
    parent: Parent | None = None,
    strict: bool | None = None,
    warnings: Sequence[Problem] = (),
    task_to_domain: Mapping[str, str] | None = None,
    priority: int | None = None,
) -> NewRun:
    """Validate and record a run (status RUNNING); sending its route is the caller's part.

    The run keeps the definition's warnings (with `warnings` found when it was read) under
    `warnings`; in strict mode (`strict`, or BATON_STRICT when None) they are errors.
    `task_to_domain` and `priority` route every message of the run (app.routing).
    """
    transformations = registry.transformations()
    found = check_definition(workflow, transformations, strict=strict, warnings=warnings)
    document = workflow.to_json_dict()
    plan = build_plan(workflow, transformations, validated=True, digest=document_digest(document))
    run_input = input_text(given, workflow.input_template)
    from app.runtime.schemas import check_run_input  # it builds on InvalidInput, defined here

    check_run_input(plan, run_input)
    correlation_id = check_label(correlation_id, "correlationId")
    idempotency_key = check_label(idempotency_key, "idempotencyKey")
    routing = routing_fields(task_to_domain, priority)
    run_id = str(uuid.uuid4())
    created = str(now_ms())
    fields = {
        "workflowId": run_id,
        "workflowType": workflow.name,
        "version": str(workflow.version),
        "status": RunStatus.RUNNING.value,
        "input": run_input,
        "correlationId": correlation_id or "",
        "plan": plan.digest,
        "createTime": created,
        "startTime": created,
        **routing,
        **masked_fields_record(workflow),
    }
    limit = run_limit(workflow, json.loads(run_input), correlation_id)
    if limit is not None:
        fields["runLimit"] = limit.id  # its end gives the slot back (app.runtime.endings)
    if sink := status_sink(workflow):
        fields["statusSink"] = sink  # the run's end is published there (lua/lib.lua)
    cached = cached_run_output(workflow, fields)
    if cached is not None:
        fields.update(status=RunStatus.COMPLETED.value, output=cached, endTime=created,
                      cached="true")
    if found:
        fields["warnings"] = json.dumps([{"path": w.path, "message": w.message} for w in found])
    if parent is None:
        fields["root"] = run_id  # send_run sends the first route with this root id
    else:
        fields.update(parentWorkflowId=parent.run_id, parentWorkflowTaskRef=parent.ref,
                      parentPlan=parent.digest, depth=str(parent.depth))
        if parent.root:
            fields["root"] = parent.root
    definition_json = json.dumps(document, separators=(",", ":"))
    standing = get_store().create_run(
        run_id,
        digest=plan.digest,
        definition_json=definition_json,
        fields=fields,
        variables=workflow.variables or {},
        idempotency=idempotency_key,
    )
    if standing != run_id:
        return NewRun(standing, None)
    plans.put(plan, plan_weight(plan, len(definition_json.encode())), document=document)
    return NewRun(run_id, plan, cached is not None, None if cached is not None else limit,
                  idempotency_key)


def first_route(new: NewRun) -> Any:
    """The route a new run starts with."""
    assert new.plan is not None
    route = compile_route(new.plan, new.run_id, get_settings().segment_size)
    assert route is not None  # a workflow has at least one task
    return route


def check_input(
    value: Mapping[str, Any] | None, template: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A run's input: `template` (the definition's inputTemplate) overlaid with `value`.

    InvalidInput (naming the path) unless it is a JSON object of JSON data nested at most
    max_json_depth deep; PayloadTooLarge over max_input_bytes.
    """
    return dict(json.loads(input_text(value, template)))


def input_text(value: Mapping[str, Any] | None, template: Mapping[str, Any] | None) -> str:
    """check_input's result as the compact JSON text the run record keeps."""
    if value is not None and not isinstance(value, Mapping):
        raise InvalidInput(f"input: must be a JSON object, not {type(value).__name__}")
    return _object_text({**(template or {}), **(value or {})}, "input",
                        get_settings().max_input_bytes)


def check_output(value: Any) -> dict[str, Any]:
    """Output given to a step from outside (complete_step): None or a JSON object.

    InvalidInput (naming the path) unless it is JSON data nested at most max_json_depth
    deep; PayloadTooLarge over max_output_bytes.
    """
    return dict(json.loads(_object_text({} if value is None else value, "output",
                                         get_settings().max_output_bytes)))


MAX_LABEL_CHARS = 4096
"""Longest correlation id, idempotency key or cancel reason a run may be given."""


def check_label(value: object, where: str) -> str | None:
    """A text given to label a run (None passes): a string of at most MAX_LABEL_CHARS."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: must be a string, not {type(value).__name__}")
    if len(value) > MAX_LABEL_CHARS:
        raise InvalidInput(f"{where}: {len(value)} characters, over the limit of "
                           f"{MAX_LABEL_CHARS}")
    return value


def _object_text(value: Any, where: str, max_bytes: int) -> str:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: must be a JSON object, not {type(value).__name__}")
    # checked iteratively before anything serialises it: json.dumps would recurse (and
    # raise RecursionError) on deep data, loop on a cycle and accept NaN
    return check_payload(value, where, max_depth=get_settings().max_json_depth,
                         max_bytes=max_bytes, error=InvalidInput)


def send_run(new: NewRun, workflow: WorkflowDef) -> None:
    """Send a new run's first route, and the timer of its timeoutSeconds if it has one."""
    if new.cached:
        return  # completed from the output cache when it was recorded
    if not may_start(new, root=new.run_id):
        return  # it waits on its workflow's limit
    first_route(new).apply_async(root_id=new.run_id)
    send_deadline(new.run_id, workflow, new.run_id)


def may_start(new: NewRun, *, then: Any = None, root: str,
              carry: Mapping[str, Any] | None = None) -> bool:
    """Whether a new run starts now: True unless it waits on its workflow's rateLimitConfig
    (its start is sent once a slot frees: see run_limits.take). A run the limit refuses is
    removed, and RunLimitReached raised."""
    if new.limit is None:
        return True
    try:
        return take(new.limit, new.run_id, then=then, root=root, carry=carry)
    except RunLimitReached:
        assert new.plan is not None
        get_store().delete_run(new.run_id, new.plan.digest, new.idempotency_key)
        raise


def send_deadline(run_id: str, workflow: WorkflowDef, root: str | None) -> None:
    """Start the timer of a run's timeoutSeconds; it holds for the route sent as `root`."""
    from app.runtime.lifecycle import deadline_signature, times_out

    if times_out(workflow):
        due = now_ms() + workflow.timeout_seconds * 1000
        # sent at once: a worker waits in hops of its own visibility timeout, which the
        # sending process may not share
        deadline_signature(run_id, due, workflow.timeout_seconds, root).apply_async(
            countdown=0)
