"""The Python client: submit a workflow, find a run, wait for it, read its steps.

Clients wait on the run store, never on Celery results, so any process can follow any
run by its id.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app import registry
from app.definitions import get_workflow
from app.dsl.load import DefinitionSource, Loaded, read_definition
from app.dsl.model import WorkflowDef
from app.errors import (
    BatonError,
    Problem,
    RunNotFound,
    StoreUnavailable,
    WaitTimeout,
    WorkflowFailed,
)
from app.gc_pause import without_gc
from app.loader import ensure_loaded
from app.runtime import lifecycle, rerun
from app.runtime.masking import masked_run_fields, run_mask
from app.runtime.run_limits import RunLimitReached
from app.runtime.runs import check_label, create_run, send_run
from app.runtime.scope import record_document
from app.runtime.state import get_store
from app.runtime.waiting import complete_waiting_step
from app.store import RunStatus, RunStore, StepStatus

_log = logging.getLogger(__name__)


class BrokerUnavailable(BatonError):
    """Raised when a run's first message cannot be sent; the run is removed again."""


@dataclass(frozen=True)
class Step:
    """One step of a run as recorded in the store."""

    ref: str
    status: StepStatus
    type: str | None
    name: str | None
    input: Any
    output: Any
    attempts: int
    error: dict[str, Any] | None
    worker: str | None
    task_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    failed_attempts: tuple[dict[str, Any], ...] = ()
    """Each earlier attempt that failed: attempt, startTime, endTime (epoch ms), error."""
    cached: bool = False
    """Its output was taken from the output cache (its cacheConfig): it did not run."""
    waiting_on: str | None = None
    """The flow limit a SCHEDULED step waits on (`limit <id> (<what it allows>)`)."""

    @classmethod
    def from_record(
        cls, ref: str, record: Mapping[str, str], failed: tuple[dict[str, Any], ...] = ()
    ) -> Step:
        doc = record_document(record)
        return cls(
            ref=ref,
            status=StepStatus(doc.get("status", StepStatus.SCHEDULED)),
            type=doc.get("taskType"),
            name=doc.get("taskDefName"),
            input=doc.get("input"),
            output=doc.get("output"),
            attempts=int(doc.get("attempts") or 0),
            error=doc.get("error"),
            worker=doc.get("workerId"),
            task_id=doc.get("taskId"),
            started_at=_time(doc.get("startTime")),
            ended_at=_time(doc.get("endTime")),
            failed_attempts=failed,
            cached=doc.get("cached") == "true",
            waiting_on=doc.get("waitingOn") if doc.get("status") == StepStatus.SCHEDULED
            else None,
        )


class WorkflowRun:
    """A handle on one run; every property reads the run store afresh."""

    def __init__(self, run_id: str, store: RunStore | None = None) -> None:
        self.id = run_id
        self._store = store or get_store()

    def __repr__(self) -> str:
        return f"WorkflowRun({self.id!r})"

    def record(self) -> dict[str, Any]:
        """The run's record as a JSON document (input, output, status, times, ...).

        The definition's maskedFields are shown masked ("***"), here and in `steps`.
        """
        fields = self._store.get_run(self.id)
        if fields is None:
            raise RunNotFound(f"no run {self.id} (never submitted, or expired)")
        return record_document(masked_run_fields(self._store, fields))

    @property
    def status(self) -> RunStatus:
        value = self._store.get_status(self.id)
        if value is None:
            raise RunNotFound(f"no run {self.id} (never submitted, or expired)")
        return RunStatus(value)

    @property
    def steps(self) -> dict[str, Step]:
        """Every step recorded so far, in the order they started."""
        records = self._store.get_steps(self.id)
        failed = self._store.get_attempts(self.id, list(records))
        mask = run_mask(self._store, self.id)
        found = [Step.from_record(ref, mask.step_fields(rec), tuple(map(mask.attempt, failed[ref])))
                 for ref, rec in records.items()]
        found.sort(key=lambda s: (s.started_at or s.ended_at or _EPOCH, s.ref))
        return {s.ref: s for s in found}

    @property
    def output(self) -> Any:
        return self.record().get("output")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """What validation found in the run's definition that Conductor accepts (a `${ref...}`
        naming an unknown task, read as null), as `path: message` problems."""
        text = self.record().get("warnings")
        found = json.loads(text) if isinstance(text, str) and text else []
        return tuple(Problem(item["path"], item["message"]) for item in found)

    def pause(self) -> None:
        """Start no new step until `resume()`; steps already running finish."""
        lifecycle.pause(self.id)

    def resume(self) -> None:
        """Go on from where a paused run stopped."""
        lifecycle.resume(self.id)

    def cancel(self, reason: str = "cancelled") -> None:
        """End the run as TERMINATED; its open steps are cancelled and their tasks revoked.

        `reason` is a string of at most MAX_LABEL_CHARS (InvalidInput otherwise).
        """
        lifecycle.terminate(self.id, check_label(reason, "reason") or "")

    terminate = cancel

    def retry(self) -> None:
        """Run the failed step again and go on; completed steps do not run again."""
        lifecycle.retry(self.id)

    def restart(self) -> None:
        """Run an ended run again from the beginning with the same input."""
        rerun.restart(self.id)

    def rerun(self, from_step: str, input: Mapping[str, Any] | None = None) -> None:
        """Run an ended run again from one of its top-level steps, `from_step`.

        The steps before it keep their records and outputs and do not run again; the
        step and all after it run anew. `input`, if given, replaces the run's input.
        """
        rerun.rerun(self.id, from_step, input)

    def complete_step(self, ref: str, output: Mapping[str, Any] | None = None) -> None:
        """Complete a WAIT or HUMAN step from outside; the run goes on from there.

        `ref` is the step's ref as `steps` lists it (`<ref>__<n>` inside a loop).
        `output` is a JSON object (InvalidInput or PayloadTooLarge otherwise, as for a
        submitted input; nothing is written). NotWaiting if the step is not waiting to be
        completed.
        """
        complete_waiting_step(self.id, ref, output)

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the run reaches a terminal status; WaitTimeout past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            status = self.status
            if status.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"run {self.id} still {status.value} after {timeout}s")
            time.sleep(pause)  # polling the store, with a growing pause, is the wait itself
            pause = min(pause * 1.5, 0.1)

    def result(self, timeout: float | None = None) -> Any:
        """The workflow's output once COMPLETED; WorkflowFailed for any other ending."""
        status = self.wait(timeout)
        record = self.record()
        if status is RunStatus.COMPLETED:
            return record.get("output")
        failed_ref = record.get("failedReferenceTaskName")
        error = None
        if failed_ref:
            step = self._store.get_step_records(self.id, [failed_ref]).get(failed_ref)
            shown = run_mask(self._store, self.id).step_fields(step) if step else None
            error = record_document(shown).get("error") if shown else None
        raise WorkflowFailed(
            self.id, status.value, failed_ref, error, record.get("reasonForIncompletion")
        )


# paused as a whole, not only in reading and in create_run: between them, a collection walked
# every object of a big definition again (0.2-0.35 s of a 100,000-task submit's 3 s)
@without_gc
def submit_workflow(
    definition: DefinitionSource,
    input: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    correlation_id: str | None = None,
    idempotency_key: str | None = None,
    strict: bool | None = None,
    task_to_domain: Mapping[str, str] | None = None,
    priority: int | None = None,
) -> WorkflowRun:
    """Validate, record and start a run; returns at once with a handle on it.

    `definition` is a definition (model, dict, JSON/YAML text or file) or the name of a
    registered workflow (its highest version, or `version`). Raises DefinitionError
    (nothing is written), InvalidInput, RunLimitReached (its workflow's rateLimitConfig
    refused it; nothing is kept), StoreUnavailable or BrokerUnavailable (the run is
    removed again). With an `idempotency_key` seen before, the earlier run is returned and
    nothing new starts. What Conductor accepts but is likely a mistake is kept as the run's
    `warnings`; `strict=True` (default: BATON_STRICT) refuses it as a DefinitionError.
    Conductor's `task_to_domain` ({"encode": "gpu"} sends step `encode` to queue
    `encode:gpu`) and `priority` (0-99, higher first) route every message of the run.
    A name the definition declares in its `inputParameters` that the input lacks is
    logged and kept as a warning too (`input.<name>`), an error in strict mode.
    """
    ensure_loaded()
    loaded = read_workflow(definition, version, strict=strict)
    workflow = loaded.definition
    missing = missing_inputs(workflow, input)
    for problem in missing:
        _log.warning("workflow %s: %s", workflow.name, problem)
    new = create_run(workflow, input, correlation_id=correlation_id,
                     idempotency_key=idempotency_key, strict=strict,
                     warnings=[*loaded.warnings, *missing], task_to_domain=task_to_domain,
                     priority=priority)
    store = get_store()
    if new.plan is None:
        return WorkflowRun(new.run_id, store)
    try:
        send_run(new, workflow)
    except RunLimitReached:
        raise  # removed already: its workflow's rateLimitConfig (REJECT) refused it
    except Exception as exc:
        try:
            store.delete_run(new.run_id, new.plan.digest, idempotency_key)
        except StoreUnavailable:
            pass  # the store is gone too; its retention removes the record
        raise BrokerUnavailable(f"cannot send run {new.run_id} to the broker: {exc}") from exc
    return WorkflowRun(new.run_id, store)


def missing_inputs(workflow: WorkflowDef, given: Any) -> list[Problem]:
    """The names a definition declares in its `inputParameters` that an input lacks (its
    `inputTemplate` counts as given): Conductor reads them as null, which a step would then
    receive (a misspelled `-i fileLoc=...`)."""
    if given is not None and not isinstance(given, Mapping):
        return []  # not an object at all: create_run refuses it with its own error
    present = {*(given or {}), *workflow.input_template}
    return [Problem(f"input.{name}", "declared in the workflow's inputParameters but not given")
            for name in workflow.input_parameters if name not in present]


_REGISTERED_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def resolve_definition(definition: DefinitionSource, version: int | None = None) -> WorkflowDef:
    """A registered workflow's name, or a definition as load_definition takes it."""
    return read_workflow(definition, version).definition


def read_workflow(
    definition: DefinitionSource, version: int | None = None, *, strict: bool | None = None
) -> Loaded:
    """resolve_definition's definition, with the warnings of reading it (read_definition)."""
    if (
        isinstance(definition, str)
        and _REGISTERED_NAME.fullmatch(definition)
        and not definition.endswith((".json", ".yaml", ".yml"))
        and not Path(definition).exists()
    ):
        return Loaded(get_workflow(definition, version))
    return read_definition(definition, registry.transformations(), strict=strict)


def get_run(run_id: str) -> WorkflowRun:
    """A handle on an existing run; RunNotFound if the store has no such run."""
    store = get_store()
    if store.get_status(run_id) is None:
        raise RunNotFound(f"no run {run_id} (never submitted, or expired)")
    return WorkflowRun(run_id, store)


_EPOCH = datetime.fromtimestamp(0, UTC)


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int) else None


@dataclass(frozen=True)
class RunSummary:
    """One run as a listing shows it: its record without input, output or steps."""

    id: str
    name: str
    version: int | None
    status: RunStatus
    correlation_id: str | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    reason: str | None
    """Why the run did not complete (`reasonForIncompletion`)."""
    failed_step: str | None
    """The ref of the step that ended the run, when one did."""

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> RunSummary:
        doc = record_document(record)
        version = doc.get("version")
        return cls(
            id=str(doc.get("workflowId", "")),
            name=str(doc.get("workflowType", "")),
            version=version if isinstance(version, int) else None,
            status=RunStatus(doc.get("status", RunStatus.RUNNING.value)),
            correlation_id=doc.get("correlationId") or None,
            created_at=_time(doc.get("createTime")),
            started_at=_time(doc.get("startTime")),
            ended_at=_time(doc.get("endTime")),
            reason=doc.get("reasonForIncompletion") or None,
            failed_step=doc.get("failedReferenceTaskName") or None,
        )


LIST_SCAN_LIMIT = 10_000
"""How many of the newest runs a filtered listing looks through at most."""


def list_runs(
    *, status: RunStatus | str | None = None, name: str | None = None, limit: int = 50
) -> list[RunSummary]:
    """The newest runs first, at most `limit`, optionally only those of a status or workflow.

    Filters look through the LIST_SCAN_LIMIT newest runs; runs whose records expired are
    left out. ValueError for a limit below 1 or an unknown status.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    wanted = RunStatus(status) if status is not None else None
    store = get_store()
    window = limit
    while True:
        records = store.list_runs(window)
        found = [
            summary
            for summary in (RunSummary.from_record(masked_run_fields(store, record))
                            for record in records)
            if (wanted is None or summary.status is wanted)
            and (name is None or summary.name == name)
        ]
        # the index is newest first and expired runs are its oldest: a short page is the end
        if len(found) >= limit or len(records) < window or window >= LIST_SCAN_LIMIT:
            return found[:limit]
        window = min(window * 4, LIST_SCAN_LIMIT)
