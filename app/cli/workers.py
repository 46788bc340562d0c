"""`baton worker`: start a Celery worker for some queues, named the way the Procfile names them.

A thin wrapper: it checks the queue names against the registry, then replaces itself
with `celery -A app worker`, so signals and exit codes are Celery's own.
"""

from __future__ import annotations

import difflib
import os
import re
import sys

import click

from app.celery_app import all_queues
from app.cli.common import EXIT_INVALID, fail, guard, option, redis_option
from app.loader import ensure_loaded
from app.routing import base_queue

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.command()
@click.argument("queues", nargs=-1, required=True)
@option("--concurrency", "-c", type=click.IntRange(min=1), default=2, show_default=True,
        envvar="BATON_CONCURRENCY", help="Worker processes (Celery's prefork pool).")
@option("--loglevel", "-l", type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="INFO", show_default=True, envvar="BATON_LOG_LEVEL", help="Celery's log level.")
@redis_option
def worker(
    queues: tuple[str, ...], concurrency: int, loglevel: str, redis_url: str | None
) -> None:
    """Start a Celery worker for QUEUES (names, or comma-separated lists of names).

    \b
    Runs, in this process:
      celery -A app worker -Q <queues> -n <first queue>.<unique>@%h -c N -l LEVEL
    where <unique> is $PORT when set (process managers such as honcho set one per
    copy), else the process id, so that several copies have distinct node names.
    Queues are the control queue, the I/O queue (HTTP, EVENT) and those of the
    registered transformations, or their variants (`encode:gpu`, see README).

    \b
    Example:
      baton worker encode deploy --concurrency 4
    """
    guard(ensure_loaded)
    wanted = list(dict.fromkeys(q.strip() for arg in queues for q in arg.split(",") if q.strip()))
    known = all_queues()
    for queue in wanted:
        if queue not in known and base_queue(queue) not in known:  # a variant is welcome
            close = difflib.get_close_matches(queue, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
            fail(f"unknown queue '{queue}' ({hint})", EXIT_INVALID)
    if not wanted:
        fail("no queue given", EXIT_INVALID)
    if redis_url:
        os.environ["REDIS_URL"] = redis_url  # the worker reads its settings from the environment
    unique = os.environ.get("PORT") or str(os.getpid())
    command = worker_command(wanted, concurrency, loglevel.upper(), unique)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def worker_command(queues: list[str], concurrency: int, loglevel: str, unique: str) -> list[str]:
    """The `celery worker` command line, run by this environment's Python."""
    return [
        sys.executable, "-m", "celery", "-A", "app", "worker",
        "-Q", ",".join(queues),
        "-n", f"{re.sub(r'[^A-Za-z0-9_.-]', '-', queues[0])}.{unique}@%h",
        "-c", str(concurrency),
        "-l", loglevel,
    ]
