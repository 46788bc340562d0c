"""`baton run` and `baton submit`: start a run, and follow it to its end when asked.

Following a run polls the run store (as any client does) and reports each step as it
ends: plain lines on stderr, fit for logs, or a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    human_duration,
    input_options,
    json_option,
    load_checked,
    option,
    parse_input,
    redis_option,
    span_ms,
    stderr_is_tty,
    strict_option,
    timeout_option,
    use_redis,
    warning_line,
)
from app.cli.consumers import ConsumerCheck, quiet_for
from app.cli.routing import local_queues, parse_routing, routing_options
from app.client import Step, WorkflowRun, missing_inputs, submit_workflow
from app.compiler.plan import Plan
from app.dsl.validate import is_strict
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
@option("--ui", "with_ui", is_flag=True, envvar="BATON_RUN_UI",
        help="Serve the workflow view (`baton ui`) on 127.0.0.1 meanwhile.")
@redis_option
def run(
    file: str, input_json: str | None, items: tuple[str, ...], timeout: float | None,
    domains: tuple[str, ...], priority: int | None, state_dir: str, strict: bool,
    with_ui: bool, redis_url: str | None,
) -> None:
    """Run a workflow and print its output as JSON.

    With a Redis URL (REDIS_URL), the run goes to that Redis and its workers. Without
    one, Baton starts a private Redis and an in-process worker for every queue, and
    stops both after.

    \b
    Example:
      baton run workflows/encode_and_deploy.json -i fileLocation=s3://in/movie.mov
    """
    from app.ui.server import beside_run  # the web stack is loaded only when asked for

    workflow_input = parse_input(input_json, items)
    routing = parse_routing(domains, priority)
    plan = _checked(file, None, strict)
    source = _Source(file, None, strict or None, routing)
    if redis_url:
        use_redis(redis_url, "run")
        with beside_run(with_ui):
            _finish(_start(plan, source, workflow_input), len(plan.steps), time.monotonic(),
                    timeout)
        return
    try:
        with embedded_redis(Path(state_dir) / "redis") as url:
            os.environ["REDIS_URL"] = url
            reload_settings()
            get_store.cache_clear()
            queues = all_queues() + local_queues(plan, routing["task_to_domain"])
            with local_worker(queues), beside_run(with_ui):
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
    with _client_log_shown_here():
        handle = guard(lambda: submit_workflow(
            source.file, workflow_input, version=source.version, strict=source.strict,
            correlation_id=correlation_id, idempotency_key=idempotency_key, **source.routing,
        ))
    if announce:
        definition = plan.definition
        click.echo(f"run {handle.id} of {definition.name} v{definition.version}", err=True)
    # once the run is in (a refused input is its one line); strict: submit refused these
    if not is_strict(source.strict):
        for problem in missing_inputs(plan.definition, workflow_input):
            click.echo(warning_line(problem), err=True)
    return handle


@contextmanager
def _client_log_shown_here() -> Iterator[None]:
    """submit_workflow logs what it warns of; the command prints it as a `warning:` line
    already, and with logging unconfigured Python would print the record again, bare."""
    client_log = logging.getLogger("app.client")
    quiet = logging.NullHandler()
    client_log.addHandler(quiet)
    try:
        yield
    finally:
        client_log.removeHandler(quiet)


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
    """Report each step as it ends until the run ends; fail past `timeout` seconds. A run
    that waits on a queue no worker consumes is told once per queue (app.cli.consumers)."""
    reporter = _Bar(handle.id, known) if stderr_is_tty() else _Lines(known)
    seen: dict[str, tuple[StepStatus, int]] = {}
    deadline = None if timeout is None else started + timeout
    waiting = _Waiting(handle.id)
    try:
        while True:
            status = guard(lambda: handle.status)
            steps = guard(lambda: handle.steps)
            for ref, step in steps.items():
                # a step being tried again keeps the end time of its failed attempt
                if step.ended_at is None or step.status is StepStatus.IN_PROGRESS:
                    continue
                state = (step.status, step.attempts)
                if seen.get(ref) != state:
                    seen[ref] = state
                    reporter.step(step)
            if status.terminal:
                return status
            for line in waiting.news(steps):
                reporter.note(line)
            if deadline is not None and time.monotonic() > deadline:
                reporter.close()
                fail(f"run {handle.id} still {status.value} after {timeout:g}s", EXIT_FAILED)
            time.sleep(_POLL_SECONDS)  # polling the run store is how a client follows a run
    finally:
        reporter.close()


class _Waiting:
    """What a followed run waits on that no worker serves, each queue told once."""

    LOOK_EVERY_SECONDS = 1.0
    """Queue lengths are read at most this often once the run is quiet."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.check = ConsumerCheck()
        self.progress: tuple[tuple[str, StepStatus, int], ...] = ()
        self.progress_at = self.looked_at = time.monotonic()
        self.told: set[str] = set()

    def news(self, steps: dict[str, Step]) -> list[str]:
        now = time.monotonic()
        progress = tuple((ref, step.status, step.attempts) for ref, step in steps.items())
        if progress != self.progress:
            self.progress, self.progress_at = progress, now
        if not quiet_for(steps.values(), self.progress_at, now) \
                or now - self.looked_at < self.LOOK_EVERY_SECONDS:
            return []
        self.looked_at = now
        found = [u for u in guard(lambda: self.check.unconsumed(self.run_id, steps))
                 if u.queue not in self.told]
        self.told.update(u.queue for u in found)
        return [f"waiting: {u}" for u in found]


class _Lines:
    """One line per step as it ends, with the step's own duration from its record (its
    start to its end in the run store, not when this client noticed it):
    `[  0.012s] encode COMPLETED (1/2)`."""

    def __init__(self, known: int) -> None:
        self.known = known
        self.ended = 0

    def step(self, step: Step) -> None:
        took = f"[{step_duration(step):>8}]"
        if step.status is StepStatus.SCHEDULED:
            error = step.error or {}
            reason = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            click.echo(
                f"{took} {step.ref} attempt {step.attempts} failed, retrying ({reason})",
                err=True,
            )
            return
        self.ended += 1
        click.echo(f"{took} {step.ref} {step.status.value} ({self.ended}/{self.known})",
                   err=True)

    def note(self, line: str) -> None:
        click.echo(line, err=True)

    def close(self) -> None:
        pass


def step_duration(step: Step) -> str:
    """How long a step (or its last attempt) ran, to the millisecond under a minute."""
    ms = span_ms(step.started_at, step.ended_at)
    if ms is None or ms < 0:
        return "-"
    return f"{ms / 1000:.3f}s" if ms < 60_000 else human_duration(ms)


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

    def note(self, line: str) -> None:
        click.echo(f"\n{line}", err=True)  # below the bar, which is drawn again after

    def close(self) -> None:
        if self._open:
            self._open = False
            self._bar.__exit__(None, None, None)


def _shown(item: Any) -> str | None:
    """What the bar shows beside it: the last step that ended."""
    return None if item is None else str(item)
