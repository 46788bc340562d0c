"""`baton run` and `baton submit`: start a run, and follow it to its end when asked.

Following a run polls the run store (as any client does) and reports each step as it
ends: plain lines on stderr, fit for logs, or a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from app.celery_app import all_queues, reload_settings
from app.cli.common import (
    EXIT_FAILED,
    emit_json,
    fail,
    guard,
    input_options,
    json_option,
    load_checked,
    option,
    parse_input,
    redis_option,
    stderr_is_tty,
    strict_option,
    timeout_option,
    use_redis,
    warning_line,
)
from app.cli.routing import local_queues, parse_routing, routing_options
from app.client import Step, WorkflowRun, submit_workflow
from app.compiler.plan import Plan
from app.embedded import embedded_redis, local_worker
from app.errors import BatonError, WorkflowFailed
from app.runtime.state import get_store
from app.store import RunStatus, StepStatus

_POLL_SECONDS = 0.05


@click.command()
@click.argument("file")
@input_options
@timeout_option
@routing_options
@option("--state-dir", default=".baton", metavar="DIR", envvar="BATON_STATE_DIR",
        show_default=True, help="Where the embedded Redis keeps its data (when no Redis URL "
        "is set).")
@strict_option
@redis_option
def run(
    file: str, input_json: str | None, items: tuple[str, ...], timeout: float | None,
    domains: tuple[str, ...], priority: int | None, state_dir: str, strict: bool,
    redis_url: str | None,
) -> None:
    """Run a workflow and print its output as JSON.

    With a Redis URL (REDIS_URL), the run goes to that Redis and its workers. Without
    one, Baton starts a private Redis and an in-process worker for every queue, and
    stops both after.

    \b
    Example:
      baton run workflows/encode_and_deploy.json -i fileLocation=s3://in/movie.mov
    """
    workflow_input = parse_input(input_json, items)
    routing = parse_routing(domains, priority)
    plan = _checked(file, None, strict)
    source = _Source(file, None, strict or None, routing)
    if redis_url:
        use_redis(redis_url, "run")
        _finish(_start(plan, source, workflow_input), len(plan.steps), time.monotonic(),
                timeout)
        return
    try:
        with embedded_redis(Path(state_dir) / "redis") as url:
            os.environ["REDIS_URL"] = url
            reload_settings()
            get_store.cache_clear()
            queues = all_queues() + local_queues(plan, routing["task_to_domain"])
            with local_worker(queues):
                started = time.monotonic()
                _finish(_start(plan, source, workflow_input), len(plan.steps), started,
                        timeout)
    except BatonError as exc:
        fail(str(exc), EXIT_FAILED)


SUBMIT_KEYS = """{"id": run id, "status": RUNNING or the status it ended in}; with --wait
also "output" (the workflow's output, null unless COMPLETED)."""


@click.command()
@click.argument("file")
@input_options
@option("--correlation-id", envvar="BATON_CORRELATION_ID", metavar="ID",
        help="Your own id for the run (`${workflow.correlationId}`).")
@option("--idempotency-key", envvar="BATON_IDEMPOTENCY_KEY", metavar="KEY",
        help="A key seen before gives back that earlier run instead of a new one.")
@option("--version", "version", type=int, envvar="BATON_VERSION",
        help="With a registered workflow's name: the version to run (default: the highest).")
@option("--wait", is_flag=True, envvar="BATON_WAIT",
        help="Follow the run to its end and print its output.")
@timeout_option
@routing_options
@strict_option
@json_option(SUBMIT_KEYS)
@redis_option
def submit(
    file: str, input_json: str | None, items: tuple[str, ...], correlation_id: str | None,
    idempotency_key: str | None, version: int | None, wait: bool, timeout: float | None,
    domains: tuple[str, ...], priority: int | None, strict: bool, as_json: bool,
    redis_url: str | None,
) -> None:
    """Start a run on the workers of a Redis and print its id.

    FILE is a definition file or the name of a registered workflow (`baton register`).

    With --wait, report each step as it ends (on stderr) and print the workflow's
    output as JSON; exit 1 if the run does not complete (or is still running after
    --timeout).

    \b
    Example:
      baton submit workflows/encode_and_deploy.json -i fileLocation=s3://in/movie.mov
    """
    workflow_input = parse_input(input_json, items)
    routing = parse_routing(domains, priority)
    use_redis(redis_url, "submit")
    plan = _checked(file, version, strict)
    started = time.monotonic()
    handle = _start(plan, _Source(file, version, strict or None, routing), workflow_input,
                    correlation_id, idempotency_key, announce=wait)
    if not wait:
        if as_json:
            emit_json({"id": handle.id, "status": guard(lambda: handle.status).value})
        else:
            click.echo(handle.id)
        return
    _finish(handle, len(plan.steps), started, timeout, as_json)


@dataclass(frozen=True)
class _Source:
    """The definition as given on the command line, read again when the run is submitted
    (so the run keeps the warnings of reading it too)."""

    file: str
    version: int | None
    strict: bool | None
    routing: dict[str, Any] = field(default_factory=dict)
    """submit_workflow's task_to_domain and priority (app.cli.routing)."""


def _checked(file: str, version: int | None, strict: bool) -> Plan:
    """The validated plan; each warning on stderr (errors, and exit 2, when `strict`)."""
    plan, warnings = guard(lambda: load_checked(file, version, strict or None))
    for warning in warnings:
        click.echo(warning_line(warning), err=True)
    return plan


def _start(
    plan: Plan,
    source: _Source,
    workflow_input: dict[str, Any],
    correlation_id: str | None = None,
    idempotency_key: str | None = None,
    announce: bool = True,
) -> WorkflowRun:
    handle = guard(lambda: submit_workflow(
        source.file, workflow_input, version=source.version, strict=source.strict,
        correlation_id=correlation_id, idempotency_key=idempotency_key, **source.routing,
    ))
    if announce:
        definition = plan.definition
        click.echo(f"run {handle.id} of {definition.name} v{definition.version}", err=True)
    return handle


def _finish(
    handle: WorkflowRun, known: int, started: float, timeout: float | None,
    as_json: bool = False,
) -> None:
    """Follow the run to its end; print its output, or fail in one line."""
    status = follow(handle, known, started, timeout)
    output: Any = None
    failure: WorkflowFailed | None = None
    try:
        output = handle.result(timeout=1)
    except WorkflowFailed as exc:
        failure = exc
    except BatonError as exc:
        fail(str(exc), EXIT_FAILED)
    if as_json:
        emit_json({"id": handle.id, "status": status.value, "output": output})
    elif failure is None:
        click.echo(json.dumps(output, indent=2, ensure_ascii=False))
    if failure is not None:
        fail(str(failure), EXIT_FAILED)


def follow(
    handle: WorkflowRun, known: int, started: float, timeout: float | None
) -> RunStatus:
    """Report each step as it ends until the run ends; fail past `timeout` seconds."""
    reporter = _Bar(handle.id, known) if stderr_is_tty() else _Lines(known, started)
    seen: dict[str, tuple[StepStatus, int]] = {}
    deadline = None if timeout is None else started + timeout
    try:
        while True:
            status = guard(lambda: handle.status)
            for ref, step in guard(lambda: handle.steps).items():
                # a step being tried again keeps the end time of its failed attempt
                if step.ended_at is None or step.status is StepStatus.IN_PROGRESS:
                    continue
                state = (step.status, step.attempts)
                if seen.get(ref) != state:
                    seen[ref] = state
                    reporter.step(step)
            if status.terminal:
                return status
            if deadline is not None and time.monotonic() > deadline:
                reporter.close()
                fail(f"run {handle.id} still {status.value} after {timeout:g}s", EXIT_FAILED)
            time.sleep(_POLL_SECONDS)  # polling the run store is how a client follows a run
    finally:
        reporter.close()


class _Lines:
    """One line per step as it ends: `[  0.12s] encode COMPLETED (1/2)`."""

    def __init__(self, known: int, started: float) -> None:
        self.known = known
        self.started = started
        self.ended = 0

    def step(self, step: Step) -> None:
        elapsed = time.monotonic() - self.started
        if step.status is StepStatus.SCHEDULED:
            error = step.error or {}
            reason = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            click.echo(
                f"[{elapsed:6.2f}s] {step.ref} attempt {step.attempts} failed, "
                f"retrying ({reason})",
                err=True,
            )
            return
        self.ended += 1
        click.echo(
            f"[{elapsed:6.2f}s] {step.ref} {step.status.value} ({self.ended}/{self.known})",
            err=True,
        )

    def close(self) -> None:
        pass


class _Bar:
    """A progress bar over the run's steps, redrawn in place on a terminal."""

    def __init__(self, run_id: str, known: int) -> None:
        self._bar: Any = click.progressbar(
            None, length=known, label=f"run {run_id[:8]}", file=sys.stderr,
            show_eta=False, show_pos=True, item_show_func=_shown,
        )
        self._bar.__enter__()
        self._open = True

    def step(self, step: Step) -> None:
        if step.status is StepStatus.SCHEDULED:
            self._bar.update(0, f"{step.ref} retrying after attempt {step.attempts}")
        else:
            self._bar.update(1, f"{step.ref} {step.status.value}")

    def close(self) -> None:
        if self._open:
            self._open = False
            self._bar.__exit__(None, None, None)


def _shown(item: Any) -> str | None:
    """What the bar shows beside it: the last step that ended."""
    return None if item is None else str(item)
