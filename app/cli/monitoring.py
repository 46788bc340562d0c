"""`baton status` and `baton list`: what the run store says about runs, for people and scripts.

The JSON documents built here are the commands' stable `--json` output; the human
output is printed from the same documents. Only reads: nothing here changes a run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import click

from app.cli.common import (
    EXIT_FAILED,
    emit_json,
    fail,
    guard,
    human_duration,
    human_time,
    json_option,
    millis,
    now,
    one_line,
    option,
    redis_option,
    span_ms,
    table,
    use_redis,
)
from app.cli.consumers import ConsumerCheck, quiet_for
from app.client import RunSummary, Step, WorkflowRun, list_runs
from app.errors import Problem
from app.runtime.masking import masked_run_fields
from app.runtime.scope import record_document
from app.runtime.state import get_store
from app.store import RunStatus, StepStatus

LIST_KEYS = """a JSON array, newest run first, of objects with id, name, version,
status, correlationId, createTime, startTime, endTime, durationMs, reason and
failedStep (as `baton status --json` gives them)."""


@click.command()
@click.argument("run_id")
@json_option("one object with the keys listed above.")
@redis_option
def status(run_id: str, as_json: bool, redis_url: str | None) -> None:
    """Show a run and each of its steps.

    \b
    Example:
      baton status 0b7f0a52-2f8e-4a0e-9d0c-8c1e8a7e5b6f --json

    \b
    With --json, one object with these keys:
      id, name, version, status, correlationId, createTime, startTime, endTime,
      durationMs, reason, failedStep: the run; times are epoch milliseconds, null
      when not known yet; reason and failedStep are null unless the run ended
      without completing;
      input, output: the workflow's input and output;
      warnings: what validation found that Conductor accepts (a ${ref...} naming an
      unknown task, read as null), each an object with path and message;
      steps: an array, in the order the steps started, of objects with ref, type,
      name, status, attempts, worker, taskId, startTime, endTime, durationMs,
      input, output and error (null, or an object with type, message, traceback);
      failedAttempts: each failed attempt (attempt, startTime, endTime, error);
      cached: true when the step's output came from the output cache (cacheConfig);
      waitingOn: the flow limit a SCHEDULED step waits on (see `baton limits`), or null;
      cached: true when the run completed at once with a cached output;
      waitingOn: the limit (its workflow's rateLimitConfig) a RUNNING run waits on
      before its first step, or null.
    """
    use_redis(redis_url, "status")
    fields = guard(lambda: get_store().get_run(run_id))
    if fields is None:
        fail(f"no run {run_id} (never submitted, or expired)", EXIT_FAILED)
    shown = guard(lambda: masked_run_fields(get_store(), fields))
    steps = guard(lambda: WorkflowRun(run_id).steps)
    document = run_document(shown, steps.values())
    if as_json:
        emit_json(document)
        return
    for line in run_lines(document, now(), guard(lambda: _waiting(document, steps))):
        click.echo(line)


def _waiting(document: Mapping[str, Any], steps: Mapping[str, Step]) -> list[str]:
    """For a running run quiet for a while: the queues its waiting steps lie on that no
    worker consumes (app.cli.consumers)."""
    if document["status"] != RunStatus.RUNNING.value:
        return []
    moments = [m for step in steps.values() for m in (step.started_at, step.ended_at) if m]
    last = max([*moments, _moment(document["startTime"]) or now()])
    quiet = (now() - last).total_seconds()
    if not quiet_for(steps.values(), time.monotonic() - quiet, time.monotonic()):
        return []
    return [str(found) for found in ConsumerCheck().unconsumed(document["id"], steps)]


@click.command(name="list")
@option("--status", "status_filter", envvar="BATON_LIST_STATUS",
        type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
        help="Only runs in this status.")
@option("--name", envvar="BATON_LIST_NAME", help="Only runs of this workflow.")
@option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
        envvar="BATON_LIST_LIMIT", help="At most this many runs.")
@json_option(LIST_KEYS)
@redis_option
def list_command(
    status_filter: str | None, name: str | None, limit: int, as_json: bool,
    redis_url: str | None,
) -> None:
    """List recent runs, newest first.

    Runs stay listed for BATON_RETENTION_SECONDS after they were created; filters look
    through the 10,000 newest.

    \b
    Example:
      baton list --status FAILED --limit 10
    """
    use_redis(redis_url, "list")
    wanted = status_filter.upper() if status_filter else None
    runs = guard(lambda: list_runs(status=wanted, name=name, limit=limit))
    documents = [summary_document(run) for run in runs]
    if as_json:
        emit_json(documents)
        return
    if not documents:
        click.echo("no runs" + (" match" if wanted or name else ""), err=True)
        return
    rows = [
        [doc["id"], _workflow(doc), doc["status"], human_time(_moment(doc["startTime"])),
         human_duration(doc["durationMs"]), doc["correlationId"] or ""]
        for doc in documents
    ]
    for line in table(["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION", "CORRELATION"], rows):
        click.echo(line)


# -- documents --------------------------------------------------------------------------------


def summary_document(run: RunSummary) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "version": run.version,
        "status": run.status.value,
        "correlationId": run.correlation_id,
        "createTime": millis(run.created_at),
        "startTime": millis(run.started_at),
        "endTime": millis(run.ended_at),
        "durationMs": span_ms(run.started_at, run.ended_at),
        "reason": run.reason,
        "failedStep": run.failed_step,
    }


def run_document(fields: Mapping[str, str], steps: Iterable[Step]) -> dict[str, Any]:
    """A run's record and its steps as the stable JSON document of `baton status --json`."""
    record = record_document(fields)
    warnings = json.loads(fields.get("warnings") or "[]")
    return {
        **summary_document(RunSummary.from_record(fields)),
        "input": record.get("input"),
        "output": record.get("output"),
        "warnings": warnings,
        "steps": [step_document(step) for step in steps],
        "cached": fields.get("cached") == "true",
        # its workflow's rateLimitConfig holds it back before its first step
        "waitingOn": fields.get("waitingOn") if fields.get("status") == "RUNNING" else None,
    }


def step_document(step: Step) -> dict[str, Any]:
    # a step being tried again keeps its failed attempt's end time until it ends anew
    running = step.status is StepStatus.IN_PROGRESS
    ended = None if running else step.ended_at
    duration = span_ms(step.started_at, ended)
    error = step.error
    return {
        "ref": step.ref,
        "type": step.type,
        "name": step.name,
        "status": step.status.value,
        "attempts": step.attempts,
        "worker": step.worker,
        "taskId": step.task_id,
        "startTime": millis(step.started_at),
        "endTime": millis(ended),
        "durationMs": duration if duration is None or duration >= 0 else None,
        "input": step.input,
        "output": step.output,
        "error": None if not error else {
            "type": error.get("type"),
            "message": error.get("message"),
            "traceback": error.get("traceback"),
        },
        "failedAttempts": list(step.failed_attempts),
        "cached": step.cached,
        "waitingOn": step.waiting_on,
    }


def run_lines(
    document: Mapping[str, Any], at: datetime, waiting: Iterable[str] = ()
) -> list[str]:
    """The human form of a run document: the run's fields (and what it waits on that
    nothing serves, `waiting`), a blank line, the step table."""
    started = _moment(document["startTime"])
    fields = [
        ("run", document["id"]),
        ("workflow", _workflow(document)),
        ("status", _status(document)),
        ("correlation", document["correlationId"]),
        ("started", human_time(started)),
    ]
    if document["endTime"] is not None:
        ended = human_time(_moment(document["endTime"]))
        fields.append(("ended", f"{ended} ({human_duration(document['durationMs'])})"))
    elif started is not None:
        fields.append(("running for", human_duration(span_ms(started, at))))
    fields += [("reason", document["reason"]), ("failed step", document["failedStep"])]
    lines = [f"{name:<12} {one_line(str(value))}" for name, value in fields if value is not None]
    lines += [f"{'warning':<12} {one_line(str(Problem(w['path'], w['message'])))}"
              for w in document.get("warnings") or []]
    lines += [f"{'waiting':<12} {one_line(line)}" for line in waiting]
    lines.append("")
    if not document["steps"]:
        return [*lines, "no step has started yet"]
    rows = [
        [step["ref"], step["type"] or "-", _status(step), str(step["attempts"]),
         step["worker"] or "-", human_duration(step["durationMs"]), _error(step["error"])]
        for step in document["steps"]
    ]
    headers = ["REF", "TYPE", "STATUS", "ATTEMPTS", "WORKER", "DURATION", "ERROR"]
    history = [
        f"{step['ref']} attempt {failed.get('attempt')} failed: {_error(failed.get('error'))}"
        for step in document["steps"] for failed in step.get("failedAttempts") or []
    ]
    return [*lines, *table(headers, rows), *(["", *history] if history else []),
            *failure_lines(document)]


TRACEBACK_LINES = 8
"""Lines of a failed step's traceback `baton status` shows: its end, where the error is."""
INPUT_WIDTH = 400
"""Characters of a failed step's input shown on its line (`--json` gives it whole)."""


def failure_lines(document: Mapping[str, Any]) -> list[str]:
    """For a run a step ended: that step's input, its error and its traceback's last lines,
    so that why it failed shows without `--json`."""
    failed = next((step for step in document["steps"]
                   if step["ref"] == document.get("failedStep")), None)
    if failed is None or not failed["error"]:
        return []
    error = failed["error"]
    shown_input = json.dumps(failed["input"], ensure_ascii=False, separators=(", ", ": "))
    lines = ["", f"step {failed['ref']} failed", f"  input  {one_line(shown_input, INPUT_WIDTH)}",
             f"  error  {one_line(str(error.get('type') or 'Error'))}: "
             f"{one_line(str(error.get('message') or ''))}"]
    trace = [line for line in str(error.get("traceback") or "").splitlines() if line.strip()]
    if trace:
        lines.append("  traceback (last lines)")
        lines += [f"    {line}" for line in trace[-TRACEBACK_LINES:]]
    return lines


def _status(document: Mapping[str, Any]) -> str:
    """A run's or step's status, marked when its output came from the output cache."""
    status = str(document["status"])
    if document.get("waitingOn"):
        return f"{status} (waiting on {document['waitingOn']})"
    return f"{status} (cached)" if document.get("cached") else status


def _workflow(document: Mapping[str, Any]) -> str:
    version = document["version"]
    return f"{document['name']} v{version}" if version is not None else str(document["name"])


def _error(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    return one_line(f"{error.get('type') or 'Error'}: {error.get('message') or ''}", 100)


def _moment(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
