"""The `baton` command: run, submit, watch, draw and serve workflows from a shell.

One module per group of commands: `runs` (run, submit), `monitoring` (status, list),
`definitions` (validate, graph, schema), `lifecycle` (register, complete), `workers`
(worker), `doctor` (doctor), `limits` (limits); `common` holds what they share,
`consumers` what a followed run waits on that no worker serves. Every failure a user can
cause ends in one line on stderr starting `baton: ` and a non-zero exit code; every
option can also be set through the environment variable its help names.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from app.cli.definitions import graph, schema, validate
from app.cli.doctor import doctor
from app.cli.lifecycle import (
    cancel,
    complete,
    pause,
    register,
    rerun,
    restart,
    resume,
    retry,
)
from app.cli.limits import limits
from app.cli.metrics import metrics
from app.cli.monitoring import list_command, status
from app.cli.runs import run, submit
from app.cli.ui import ui
from app.cli.workers import worker


class _Baton(click.Group):
    """The command group, whose own errors (a missing argument, an unknown option) are one
    `baton: ` line each, as the commands' are, rather than click's usage block."""

    def main(  # one signature for both of click's overloads
        self, args: Sequence[str] | None = None, prog_name: str | None = None,
        complete_var: str | None = None, standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        if not standalone_mode:  # a caller that handles click's exceptions itself
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            returned = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `baton` alone: its help, as click prints it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"baton: {exc.format_message()}", err=True)
            if exc.ctx is not None:
                click.echo(f"baton: see '{exc.ctx.command_path} -h'", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"baton: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("baton: aborted", err=True)
            sys.exit(1)
        # --help and the like end in click's Exit, given back here as its code
        sys.exit(returned if isinstance(returned, int) else 0)


@click.group(cls=_Baton, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run Conductor-style JSON workflows on Celery workers.

    Commands that start or read runs use the Redis in REDIS_URL (or --redis-url), the
    one the workers use; only `run` starts a private Redis and worker when none is set.
    """


for _command in (run, submit, status, list_command, complete, pause, resume, cancel, retry,
                 rerun, restart, graph, validate, register, schema, worker, doctor, limits):
    main.add_command(_command)
main.add_command(ui)  # the workflow view (app.ui)
main.add_command(metrics)

__all__ = ["main"]
