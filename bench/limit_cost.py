"""What a flow limit that is not reached adds to a step, measured on the store calls alone.

`python -m bench.limit_cost [--steps N] [--rounds N]`. A step of an unkeyed limit takes
its slot inside its claim and gives it back inside the call that records its output
(app.runtime.limits.slot_ask / slot_free); nothing else talks to Redis for it. This
claims and records N steps of one run against a private Redis, with and without a slot
asked for, the two sides taking turns, and prints the medians per step: the wall time
of the two calls, the client's CPU and Redis's CPU. No worker and no broker: the
whole-workflow figure is `python -m bench.run --limited`, where this difference is
smaller than what two runs of the same side differ by on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

from bench.harness import start_redis

NAME = "bench_limit_cost"
LEASE_MS = 30_000
CONCURRENCY = 1_000_000
DEFINITION = {"name": "limit_cost", "version": 1, "schemaVersion": 2,
              "tasks": [{"name": NAME, "taskReferenceName": "s"}]}


def steps(store: Any, limited: bool, count: int) -> dict[str, float]:
    """Claim and record `count` steps of a new run; per step: µs of wall, client, Redis."""
    from app.runtime.limits import slot_ask
    from app.store.records import SlotFree

    run_id = str(uuid.uuid4())
    fields = {"workflowId": run_id, "workflowType": "limit_cost", "version": "1",
              "status": "RUNNING", "input": "{}", "plan": "limit-cost"}
    store.create_run(run_id, digest="limit-cost", definition_json=json.dumps(DEFINITION),
                     fields=fields, variables={}, idempotency=None)
    limit = _limit() if limited else None
    request = _Request()
    started, client, server = time.perf_counter(), time.process_time(), _redis_cpu(store)
    for n in range(count):
        ref = f"s{n}"
        ask = slot_ask(f"tasks.{NAME}", request, limit)
        claim = store.claim_step(run_id, ref, dependencies=[], worker="bench", task_id=ref,
                                 task_type="SIMPLE", name=NAME, max_deliveries=5,
                                 reads_run=False, slot=ask)
        if claim.slot_taken is not limited:
            raise SystemExit(f"step {ref}: slot taken {claim.slot_taken}, expected {limited}")
        freed = SlotFree(ask.key, f"{run_id}|{ref}|{claim.attempts}") if ask else None
        store.complete_step(run_id, ref, input={}, output={"n": n}, slot=freed)
        if freed is not None and freed.others_wait:
            raise SystemExit("others wait on a limit that is never reached")
    return {"wall": (time.perf_counter() - started) / count * 1e6,
            "client": (time.process_time() - client) / count * 1e6,
            "redis": (_redis_cpu(store) - server) / count * 1e6}


def _limit() -> Any:
    from app.limits import Limit

    return Limit(concurrency=CONCURRENCY)


class _Request:
    """What slot_ask reads of a Celery request: a message handed no slot."""

    kwargs: dict[str, Any] = {}


def _redis_cpu(store: Any) -> float:
    cpu = store.client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limit_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per side")
    args = parser.parse_args(argv)
    server = start_redis()
    try:
        os.environ["REDIS_URL"] = server.url
        from app.runtime.limits import limit_store
        from app.runtime.state import get_store

        store = get_store()
        # the limit exists once its first step asked the long way (its meta and index)
        limit_store().acquire(NAME, "first", "", lease_ms=LEASE_MS, concurrency=CONCURRENCY,
                              interval_ms=0, name=NAME, key="", ticket=False)
        limit_store().release(NAME, "first", lease_ms=LEASE_MS)
        steps(store, True, args.steps // 4)  # warm-up: scripts loaded, connections open
        figures: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for number in range(args.rounds):
            for limited in (False, True) if number % 2 == 0 else (True, False):
                figures[limited].append(steps(store, limited, args.steps))
        print(f"claim + record of one step, medians of {args.rounds} x {args.steps} steps (µs):")
        print(f"{'':<12}{'wall':>8}{'client CPU':>12}{'Redis CPU':>11}")
        medians = {}
        for limited, rows in figures.items():
            medians[limited] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            label = "limit" if limited else "no limit"
            m = medians[limited]
            print(f"{label:<12}{m['wall']:>8.1f}{m['client']:>12.1f}{m['redis']:>11.1f}")
        added = {k: medians[True][k] - medians[False][k] for k in medians[True]}
        print(f"{'added':<12}{added['wall']:>8.1f}{added['client']:>12.1f}{added['redis']:>11.1f}")
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
