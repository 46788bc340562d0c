"""Commands that change runs and definitions: register, complete, pause, resume, cancel,
retry, rerun and restart.

`register` keeps a definition under its name and version for SUB_WORKFLOW,
START_WORKFLOW and `baton submit NAME`; `complete` finishes a WAIT or HUMAN step; the
others are the run lifecycle (`WorkflowRun.pause()` and its kin).
"""

from __future__ import annotations

from functools import partial

import click

from app.cli.common import (
    guard,
    input_options,
    option,
    parse_input,
    parse_json_object,
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
    output = parse_json_object(output_json, "--output")
    handle = guard(lambda: get_run(run_id))
    guard(lambda: handle.complete_step(ref, output))
    click.echo(f"{ref}: completed")



def _lifecycle(name: str, summary: str, done: str) -> click.Command:
    @click.command(name=name, help=f"{summary}\n\n\b\nExample:\n  baton {name} RUN_ID")
    @click.argument("run_id")
    @redis_option
    def command(run_id: str, redis_url: str | None) -> None:
        use_redis(redis_url, name)
        handle = guard(lambda: get_run(run_id))
        guard(lambda: getattr(handle, name)())
        click.echo(f"{run_id}: {done}")

    return command


pause = _lifecycle("pause", "Start no new step of a run until it is resumed.", "paused")
resume = _lifecycle("resume", "Let a paused run go on from where it stopped.", "resumed")
retry = _lifecycle("retry", "Run a failed run's failed step again and go on.", "retrying")
restart = _lifecycle("restart", "Run an ended run again from the beginning.", "restarted")


@click.command()
@click.argument("run_id")
@option("--reason", envvar="BATON_REASON", default="cancelled", show_default=True,
        help="Why the run ends; kept as its reasonForIncompletion.")
@redis_option
def cancel(run_id: str, reason: str, redis_url: str | None) -> None:
    """End a run as TERMINATED; its open steps are cancelled and their tasks revoked.

    \b
    Example:
      baton cancel 0b7f0a52-2f8e-4a0e-9d0c-8c1e8a7e5b6f --reason "duplicate order"
    """
    use_redis(redis_url, "cancel")
    handle = guard(lambda: get_run(run_id))
    guard(lambda: handle.cancel(reason))
    click.echo(f"{run_id}: cancelled")


@click.command()
@click.argument("run_id")
@option("--from", "from_step", envvar="BATON_FROM_STEP", required=True, metavar="REF",
        help="The top-level step to run again from; the steps before it keep their outputs.")
@input_options
@redis_option
def rerun(run_id: str, from_step: str, input_json: str | None, items: tuple[str, ...],
          redis_url: str | None) -> None:
    """Run an ended run again from one of its steps; the run keeps its id.

    Without --input or -i the run keeps its input; with them, the given input replaces it.

    \b
    Example:
      baton rerun 0b7f0a52-2f8e-4a0e-9d0c-8c1e8a7e5b6f --from deploy -i target=staging
    """
    use_redis(redis_url, "rerun")
    given = parse_input(input_json, items) if input_json or items else None
    handle = guard(lambda: get_run(run_id))
    guard(lambda: handle.rerun(from_step, given))
    click.echo(f"{run_id}: rerunning from {from_step}")
