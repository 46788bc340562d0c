"""`baton limits`: the flow limits across every worker, their use and their lines.

Only reads: nothing here changes a limit. The JSON document is the command's stable
`--json` output; the table is printed from it.
"""

from __future__ import annotations

from typing import Any

import click

from app.cli.common import emit_json, guard, json_option, redis_option, table, use_redis
from app.runtime.limits import limit_store
from app.store.limits import LimitState

LIMITS_KEYS = """a JSON array, one object per limit (sorted by id), with id, name, key
(the key's value, '' when the limit has none), inUse, capacity (0: no concurrency limit),
ratePerSecond (0: no rate limit) and waiting (steps parked until a slot or start frees)."""


@click.command()
@json_option(LIMITS_KEYS)
@redis_option
def limits(as_json: bool, redis_url: str | None) -> None:
    """Show each flow limit: its key, slots in use out of its capacity, steps waiting.

    A limit is listed once a step asked it (a transformation's `limit=`, or a task's
    concurrentExecLimit or rateLimitPerFrequency).

    \b
    Example:
      baton limits --json
    """
    use_redis(redis_url, "limits")
    documents = [limit_document(state) for state in guard(lambda: limit_store().states())]
    if as_json:
        emit_json(documents)
        return
    if not documents:
        click.echo("no limits", err=True)
        return
    rows = [[doc["name"], doc["key"] or "-",
             f"{doc['inUse']}/{doc['capacity']}" if doc["capacity"] else str(doc["inUse"]),
             f"{doc['ratePerSecond']:g}/s" if doc["ratePerSecond"] else "-",
             str(doc["waiting"])] for doc in documents]
    for line in table(["LIMIT", "KEY", "IN USE", "RATE", "WAITING"], rows):
        click.echo(line)


def limit_document(state: LimitState) -> dict[str, Any]:
    return {
        "id": state.id,
        "name": state.name,
        "key": state.key,
        "inUse": state.in_use if state.concurrency else 0,
        "capacity": state.concurrency,
        "ratePerSecond": round(1000 / state.interval_ms, 3) if state.interval_ms else 0,
        "waiting": state.waiting,
    }
