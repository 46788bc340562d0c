"""Benchmark: the workflow view's runs list over 100,000 runs in Redis.

Writes RUNS runs through the run store's own scripts (create_run, end_run: so the run index
is built exactly as real runs build it), spread over 10 workflows, 4 end statuses and 10,000
correlation ids, then serves the view with uvicorn on loopback and times each listing
(`GET /api/runs` with its filters, a page deep down a cursor chain, and the HTML `/runs`)
over REPEATS requests from one client. Reports the median and 95th percentile per query;
the target is a median under 200 ms.

    python -m bench.ui_runs_list              # 100,000 runs, about a minute on 2 cores
    python -m bench.ui_runs_list --runs 20000 --repeats 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from typing import Any

from bench.harness import start_redis

STATUSES = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "TERMINATED", "RUNNING")
WORKFLOWS = 10
CORRELATIONS = 10_000
BATCH = 1_000
TARGET_MS = 200.0


def seed(count: int) -> float:
    """Write `count` runs through the store's scripts, pipelined; returns seconds taken."""
    from app.runtime.state import get_store
    from app.store.keys import RUNS_INDEX, definition_key, run_key, vars_key

    store = get_store()
    create, end = store.scripts["create_run"], store.scripts["end_run"]
    started = time.perf_counter()
    base = int(time.time() * 1000) - count
    for first in range(0, count, BATCH):
        pipe = store.client.pipeline(transaction=False)
        ending = []
        for i in range(first, min(first + BATCH, count)):
            run_id = str(uuid.uuid4())
            created = str(base + i)
            fields = ["workflowId", run_id, "workflowType", f"bench_wf_{i % WORKFLOWS}",
                      "version", "1", "status", "RUNNING", "input", "{}",
                      "correlationId", f"order-{i % CORRELATIONS}", "plan", "bench",
                      "createTime", created, "startTime", created]
            keys = [run_key(run_id), run_key(run_id), definition_key("bench"), RUNS_INDEX,
                    vars_key(run_id)]
            create(keys=keys, args=[run_id, store.retention, "{}", "", created,
                                    len(fields), *fields], client=pipe)
            status = STATUSES[i % len(STATUSES)]
            if status != "RUNNING":
                ending.append((run_id, status, int(created) + 50))
        for run_id, status, ended in ending:
            reason = "" if status == "COMPLETED" else f"{status.lower()} in the benchmark"
            end(keys=[run_key(run_id)], args=[ended, store.retention, status, "{}", reason,
                                             "", ""], client=pipe)
        pipe.execute()
    return time.perf_counter() - started


def timed(client: Any, path: str, params: dict[str, str], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = client.get(path, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path} {params}: HTTP {answer.status_code}: {answer.text[:200]}")
    return samples


def deep_cursor(client: Any, pages: int) -> str:
    """The cursor `pages` pages of 50 down the unfiltered list."""
    after = ""
    for _ in range(pages):
        after = client.get("/api/runs", params={"after": after} if after else {}).json()["next"]
    return after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args(argv)

    server = start_redis()
    os.environ["REDIS_URL"] = server.url  # before app is imported: it reads it once
    try:
        import httpx

        from app.runtime.state import get_store
        from app.ui import UiConfig
        from app.ui.server import serving
        from tests.support import free_port

        seconds = seed(options.runs)
        store = get_store()
        print(f"seeded {options.runs:,} runs in {seconds:.1f}s "
              f"({store.client.zcard('baton:runs'):,} in the index, "
              f"{store.client.dbsize():,} keys)")
        config = UiConfig(store=get_store, credentials=None)
        with serving(config, port=free_port()) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            queries: list[tuple[str, str, dict[str, str]]] = [
                ("newest 50", "/api/runs", {}),
                ("status=FAILED", "/api/runs", {"status": "FAILED"}),
                ("workflow", "/api/runs", {"workflow": "bench_wf_3"}),
                ("workflow+status", "/api/runs",
                 {"workflow": "bench_wf_3", "status": "COMPLETED"}),
                ("correlation id", "/api/runs", {"correlation": "order-42"}),
                ("correlation+status", "/api/runs",
                 {"correlation": "order-42", "status": "FAILED"}),
                ("time window", "/api/runs",
                 {"since": str(int(time.time() * 1000) - options.runs // 2),
                  "until": str(int(time.time() * 1000) - options.runs // 4)}),
                ("page 200 (cursor)", "/api/runs", {"after": deep_cursor(client, 200)}),
                ("HTML /runs", "/runs", {}),
                ("HTML /runs status", "/runs", {"status": "TERMINATED", "limit": "100"}),
            ]
            print(f"{'query':<22}{'median ms':>10}{'p95 ms':>9}")
            worst = 0.0
            for label, path, params in queries:
                samples = timed(client, path, params, options.repeats)
                median = statistics.median(samples)
                p95 = sorted(samples)[int(len(samples) * 0.95) - 1]
                worst = max(worst, median)
                print(f"{label:<22}{median:>10.1f}{p95:>9.1f}")
        verdict = "within" if worst < TARGET_MS else "OVER"
        print(f"slowest median {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")
        return 0 if worst < TARGET_MS else 1
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
