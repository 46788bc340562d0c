"""`baton doctor`: find runs that nothing will carry on, and send them on with --repair."""

from __future__ import annotations

import click

from app.cli.common import (
    EXIT_FAILED,
    emit_json,
    guard,
    json_option,
    option,
    redis_option,
    use_redis,
)
from app.loader import ensure_loaded
from app.runtime import doctor as checks


@click.command()
@option("--idle", "idle_seconds", type=click.FloatRange(min=0), default=60.0,
        show_default=True, envvar="BATON_DOCTOR_IDLE",
        help="Only runs with nothing recorded for at least this many seconds.")
@option("--repair", is_flag=True, envvar="BATON_DOCTOR_REPAIR",
        help="Send each run found on from its recorded state.")
@json_option("an array of objects with runId, workflow, status, lastStep, idleSeconds "
             "(and repairedFrom with --repair).")
@redis_option
def doctor(idle_seconds: float, repair: bool, as_json: bool, redis_url: str | None) -> None:
    """List runs that break the invariant: every run is ended, paused, waiting (a timer
    or an outside completion), or has a message queued or in flight.

    Exits 1 when it finds any (and does not repair them).

    \b
    Example:
      baton doctor --idle 300 --repair
    """
    use_redis(redis_url, "doctor")
    guard(ensure_loaded)
    stuck = guard(lambda: checks.find_stuck(idle_seconds))
    documents = checks.describe(stuck)
    if repair:
        for document in documents:
            run_id = str(document["runId"])
            document["repairedFrom"] = guard(lambda: checks.repair(run_id))  # noqa: B023
    if as_json:
        emit_json(documents)
    elif not documents:
        click.echo("no stuck runs", err=True)
    for document in documents if not as_json else ():
        repaired = f", sent on from '{document['repairedFrom']}'" if repair else ""
        click.echo(f"{document['runId']}  {document['workflow']}  {document['status']}  "
                   f"last step {document['lastStep'] or '-'}, idle "
                   f"{document['idleSeconds']}s{repaired}")
    if documents and not repair:
        raise SystemExit(EXIT_FAILED)
