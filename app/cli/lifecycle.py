"""`baton register` and `baton complete`: commands that change what the store holds.

`register` keeps a definition under its name and version for SUB_WORKFLOW,
START_WORKFLOW and `baton submit NAME`; `complete` finishes a WAIT or HUMAN step.
"""

from __future__ import annotations

import json
from functools import partial

import click

from app.cli.common import (
    EXIT_INVALID,
    fail,
    guard,
    option,
    redis_option,
    use_redis,
)
from app.client import get_run
from app.definitions import register_workflow
from app.loader import ensure_loaded


@click.command()
@click.argument("files", nargs=-1, required=True)
@redis_option
def register(files: tuple[str, ...], redis_url: str | None) -> None:
    """Validate definitions and keep them by name and version in Redis.

    \b
    Example:
      baton register workflows/encode_and_deploy.json
    """
    use_redis(redis_url, "register")
    guard(ensure_loaded)
    for file in files:
        workflow = guard(partial(register_workflow, file))
        click.echo(f"{file}: registered {workflow.name} v{workflow.version}")


@click.command()
@click.argument("run_id")
@click.argument("ref")
@option("--output", "output_json", envvar="BATON_OUTPUT", default="{}",
        help="The step's output, a JSON object.")
@redis_option
def complete(run_id: str, ref: str, output_json: str, redis_url: str | None) -> None:
    """Complete a WAIT or HUMAN step of a run; the run goes on from there.

    \b
    Example:
      baton complete 0b7f0a52-2f8e-4a0e-9d0c-8c1e8a7e5b6f approve --output '{"ok": true}'
    """
    use_redis(redis_url, "complete")
    try:
        output = json.loads(output_json)
    except json.JSONDecodeError as exc:
        fail(f"--output: malformed JSON: {exc.msg} at column {exc.colno}", EXIT_INVALID)
    if not isinstance(output, dict):
        fail("--output: must be a JSON object", EXIT_INVALID)
    handle = guard(lambda: get_run(run_id))
    guard(lambda: handle.complete_step(ref, output))
    click.echo(f"{ref}: completed")

