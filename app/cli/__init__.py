"""The `baton` command: run, submit, watch, draw and serve workflows from a shell.

One module per group of commands: `runs` (run, submit), `monitoring` (status, list),
`definitions` (validate, graph, schema), `lifecycle` (register, complete), `workers`
(worker), `doctor` (doctor), `limits` (limits); `common` holds what they
share. Every failure a user can cause ends in one line on stderr and a non-zero exit
code; every option can also be set through the environment variable its help names.
"""

from __future__ import annotations

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
from app.cli.monitoring import list_command, status
from app.cli.runs import run, submit
from app.cli.workers import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run Conductor-style JSON workflows on Celery workers.

    Commands that start or read runs use the Redis in REDIS_URL (or --redis-url), the
    one the workers use; only `run` starts a private Redis and worker when none is set.
    """


for _command in (run, submit, status, list_command, complete, pause, resume, cancel, retry,
                 rerun, restart, graph, validate, register, schema, worker, doctor, limits):
    main.add_command(_command)

__all__ = ["main"]
