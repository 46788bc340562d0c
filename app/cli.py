"""The `baton` command: run and validate workflows from a shell.

Every failure a user can cause (a missing file, a malformed definition or input, an
unreachable Redis, a failed run) ends in one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from app import registry
from app.celery_app import reload_settings
from app.client import WorkflowRun, submit_workflow
from app.compiler.plan import Plan, build_plan
from app.config import get_settings
from app.dsl.load import load_definition
from app.embedded import embedded_redis, local_worker
from app.errors import BatonError, DefinitionError, WorkflowFailed
from app.loader import ensure_loaded
from app.runtime.state import get_store

EXIT_FAILED = 1
EXIT_INVALID = 2


@click.group()
def main() -> None:
    """Run Conductor-style JSON workflows on Celery workers."""


@main.command()
@click.argument("files", nargs=-1, required=True)
def validate(files: tuple[str, ...]) -> None:
    """Check definitions; print each problem as `path: message` (exit 2 on any)."""
    bad = False
    _guard(ensure_loaded)
    for file in files:
        try:
            _plan(file)
        except DefinitionError as exc:
            bad = True
            for problem in exc.problems:
                click.echo(f"{file}: {problem}" if len(files) > 1 else str(problem), err=True)
        else:
            click.echo(f"{file}: ok")
    if bad:
        sys.exit(EXIT_INVALID)


@main.command()
@click.argument("file")
@click.option("--input", "input_json", envvar="BATON_INPUT", help="The input as a JSON object.")
@click.option("-i", "items", multiple=True, metavar="KEY=VALUE",
              help="One input field (the value is JSON if it parses, else a string).")
@click.option("--timeout", type=float, default=None, envvar="BATON_TIMEOUT",
              help="Seconds to wait for the run to end.")
@click.option("--state-dir", default=".baton", envvar="BATON_STATE_DIR", show_default=True,
              help="Where the embedded Redis keeps its data (when REDIS_URL is not set).")
def run(
    file: str, input_json: str | None, items: tuple[str, ...], timeout: float | None,
    state_dir: str,
) -> None:
    """Run a workflow and print its output as JSON.

    With REDIS_URL set, the run goes to that Redis and its workers. Without it, Baton
    starts a private Redis and an in-process worker for every queue, and stops both after.
    """
    workflow_input = _parse_input(input_json, items)
    plan = _guard(lambda: _plan(file))
    if os.environ.get("REDIS_URL"):
        _run(plan, workflow_input, timeout)
        return
    try:
        with embedded_redis(Path(state_dir) / "redis") as url:
            os.environ["REDIS_URL"] = url
            reload_settings()
            get_store.cache_clear()
            with local_worker([get_settings().control_queue, *registry.queues()]):
                _run(plan, workflow_input, timeout)
    except BatonError as exc:
        _fail(str(exc), EXIT_FAILED)


def _run(plan: Plan, workflow_input: dict[str, Any], timeout: float | None) -> None:
    started = time.monotonic()
    handle = _guard(lambda: submit_workflow(plan.definition, workflow_input))
    click.echo(f"run {handle.id} of {plan.definition.name} v{plan.definition.version}", err=True)
    _follow(handle, len(plan.steps), started, timeout)
    try:
        output = handle.result(timeout=1)
    except WorkflowFailed as exc:
        _fail(str(exc), EXIT_FAILED)
    click.echo(json.dumps(output, indent=2, ensure_ascii=False))


def _follow(handle: WorkflowRun, known: int, started: float, timeout: float | None) -> None:
    """Print each step as it ends, until the run ends (plain lines: fit for logs and TTYs)."""
    reported: set[str] = set()
    deadline = None if timeout is None else started + timeout
    while True:
        status = _guard(lambda: handle.status)
        for ref, step in _guard(lambda: handle.steps).items():
            if ref not in reported and step.ended_at is not None:
                reported.add(ref)
                elapsed = time.monotonic() - started
                click.echo(
                    f"[{elapsed:6.2f}s] {ref} {step.status.value} ({len(reported)}/{known})",
                    err=True,
                )
        if status.terminal:
            return
        if deadline is not None and time.monotonic() > deadline:
            _fail(f"run {handle.id} still {status.value} after {timeout}s", EXIT_FAILED)
        time.sleep(0.05)  # polling the run store is how a client follows a run


def _plan(file: str) -> Plan:
    ensure_loaded()
    return build_plan(load_definition(file), registry.transformations())


def _parse_input(input_json: str | None, items: tuple[str, ...]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if input_json:
        try:
            parsed = json.loads(input_json)
        except json.JSONDecodeError as exc:
            _fail(f"--input: malformed JSON: {exc.msg} at column {exc.colno}", EXIT_INVALID)
        if not isinstance(parsed, dict):
            _fail("--input: must be a JSON object", EXIT_INVALID)
        data.update(parsed)
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"-i {item}: expected KEY=VALUE", EXIT_INVALID)
        try:
            data[key] = json.loads(raw)
        except json.JSONDecodeError:
            data[key] = raw
    return data


def _guard(action: Any) -> Any:
    """Run an action, turning Baton's errors into one line on stderr."""
    try:
        return action()
    except DefinitionError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_INVALID)
    except BatonError as exc:
        _fail(str(exc), EXIT_FAILED)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"baton: {message}", err=True)
    sys.exit(code)
